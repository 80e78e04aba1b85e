"""`trajectory.png`: the camera path seen from above, coloured by time, with loop edges.

"Above" is the cameras' mean up direction (−y in OpenCV camera axes), so a drive comes out as a
map whatever frame the reconstruction happens to be expressed in; when the cameras give no clear
up (they all look straight down, say), the plane of the path's two main directions is used.
matplotlib is imported lazily and with the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from scal3r.errors import MissingDependencyError

PathLike = Union[str, os.PathLike]


@dataclass
class LoopEdge:
    frame_a: int
    frame_b: int
    accepted: bool


def top_down_basis(c2w: np.ndarray) -> np.ndarray:
    """(2, 3) orthonormal rows spanning the ground plane of cameras c2w (N, 4, 4)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    up = -c2w[:, :3, 1].mean(axis=0)  # camera y points down
    centres = c2w[:, :3, 3]
    if np.linalg.norm(up) < 0.3:  # cameras disagree on up: use the path's own plane
        _, _, vt = np.linalg.svd(centres - centres.mean(0), full_matrices=True)
        up = vt[2]
    up = up / np.linalg.norm(up)
    forward = c2w[0, :3, 2] - np.dot(c2w[0, :3, 2], up) * up  # first camera's view, flattened
    if np.linalg.norm(forward) < 1e-6:
        forward = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)  # x right, y forward when seen from above
    return np.stack([right, forward])


def plot_trajectory(path: PathLike, c2w: np.ndarray, loops: Sequence[LoopEdge] = (),
                    gt_c2w: Optional[np.ndarray] = None, title: str = "",
                    size: Tuple[float, float] = (7.0, 7.0), dpi: int = 110) -> None:
    """Write a PNG of the path (c2w (N, 4, 4)), coloured by frame index, loop edges (solid:
    accepted, dashed grey: rejected), and an optional ground-truth path already in the same frame."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.collections import LineCollection
    except ImportError:
        raise MissingDependencyError("trajectory.png needs matplotlib: pip install matplotlib") from None

    c2w = np.asarray(c2w, dtype=np.float64)
    basis = top_down_basis(c2w)
    xy = c2w[:, :3, 3] @ basis.T
    n = xy.shape[0]
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        if gt_c2w is not None and len(gt_c2w):
            g = np.asarray(gt_c2w, dtype=np.float64)[:, :3, 3] @ basis.T
            ax.plot(g[:, 0], g[:, 1], color="0.55", lw=1.2, ls="--", label="ground truth", zorder=1)
        segments = np.stack([xy[:-1], xy[1:]], axis=1)
        lc = LineCollection(segments, cmap="viridis", linewidths=2.0, zorder=2)
        lc.set_array(np.arange(n - 1, dtype=np.float64))
        ax.add_collection(lc)
        cbar = fig.colorbar(lc, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label("frame")
        ax.scatter(xy[:1, 0], xy[:1, 1], marker="o", s=40, color="tab:green", zorder=4, label="start")
        ax.scatter(xy[-1:, 0], xy[-1:, 1], marker="s", s=40, color="tab:red", zorder=4, label="end")
        drawn = set()
        for e in loops:
            if not (0 <= e.frame_a < n and 0 <= e.frame_b < n):
                continue
            a, b = xy[e.frame_a], xy[e.frame_b]
            label = ("loop (accepted)" if e.accepted else "loop (rejected)")
            ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:orange" if e.accepted else "0.6",
                    ls="-" if e.accepted else ":", lw=1.5, zorder=3, label=None if label in drawn else label)
            drawn.add(label)
        ax.set_aspect("equal", adjustable="datalim")
        ax.autoscale_view()
        ax.set_xlabel("right (world units)")
        ax.set_ylabel("forward (world units)")
        ax.set_title(title or f"camera path, {n} frames (top-down)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
