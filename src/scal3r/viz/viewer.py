"""`scal3r view DIR`: a viser web viewer of a reconstruction folder.

Shows the fused cloud (randomly subsampled for the browser), one camera frustum per shown frame,
the camera path, loop edges, the ground-truth path when the folder has one (`--gt` runs), and a
time slider: frames up to the slider's value are drawn, the current one highlighted.
`load_scene` reads the folder (no viser needed); `start_viewer` serves it and returns the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from scal3r.errors import InputError, MissingDependencyError
from scal3r.io.ply import read_ply
from scal3r.io.trajectory import matrix_to_quaternion, read_kitti

PathLike = Union[str, os.PathLike]


@dataclass
class Scene:
    """What the viewer draws. c2w (N, 4, 4); fov_y (N,) radians; points (P, 3) float32, colors (P, 3) uint8."""

    c2w: np.ndarray
    fov_y: np.ndarray
    aspect: float
    points: np.ndarray
    colors: np.ndarray
    gt_c2w: Optional[np.ndarray] = None
    loops: List[Tuple[int, int, bool]] = field(default_factory=list)
    title: str = ""

    @property
    def extent(self) -> float:
        """A length for sizing frustums and lines: the path's extent, or the cloud's."""
        centres = self.c2w[:, :3, 3]
        ext = float(np.linalg.norm(centres.max(0) - centres.min(0))) if len(centres) > 1 else 0.0
        if ext <= 0 and len(self.points):
            ext = float(np.linalg.norm(np.percentile(self.points, 95, 0) - np.percentile(self.points, 5, 0)))
        return ext if np.isfinite(ext) and ext > 0 else 1.0


def load_scene(folder: PathLike, max_points: int = 300_000, seed: int = 0) -> Scene:
    """Read a `scal3r reconstruct` output folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"no such reconstruction folder: {folder}")
    traj = folder / "trajectory_kitti.txt"
    if not traj.is_file():
        raise InputError(f"{folder} is not a scal3r reconstruction (no trajectory_kitti.txt)")
    c2w = read_kitti(traj)
    n = len(c2w)
    fov_y = np.full(n, np.radians(60.0))
    aspect = 16 / 9
    intr = folder / "intrinsics.json"
    if intr.is_file():
        try:
            doc = json.loads(intr.read_text(encoding="utf-8"))
            K = np.asarray(doc["K"], dtype=np.float64).reshape(-1, 3, 3)
            w, h = float(doc["width"]), float(doc["height"])
            aspect = w / h
            fy = K[:, 1, 1] if len(K) == n else np.full(n, K[0, 1, 1])
            fy = np.where(np.isfinite(fy) & (fy > 0), fy, h)
            fov_y = 2 * np.arctan(h / (2 * fy))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged intrinsics file only costs the frustum shapes
    points = np.zeros((0, 3), np.float32)
    colors = np.zeros((0, 3), np.uint8)
    if (folder / "points.ply").is_file():
        cloud = read_ply(folder / "points.ply")
        ok = np.all(np.isfinite(cloud.points), axis=1)
        points = cloud.points[ok].astype(np.float32)
        colors = (cloud.colors[ok] if cloud.colors is not None else np.full((len(points), 3), 200)).astype(np.uint8)
        if len(points) > max_points:
            keep = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
            points, colors = points[keep], colors[keep]
    gt = read_kitti(folder / "gt_trajectory_kitti.txt") if (folder / "gt_trajectory_kitti.txt").is_file() else None
    loops: List[Tuple[int, int, bool]] = []
    title = folder.name
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            loops = [(int(e["frame_a"]), int(e["frame_b"]), bool(e["accepted"]))
                     for e in summary.get("loops", {}).get("edges", [])]
            title = f"{folder.name}: {summary.get('frames', n)} frames, {summary.get('chunks', '?')} chunks"
        except (ValueError, KeyError, TypeError):
            pass
    return Scene(c2w=c2w, fov_y=fov_y, aspect=aspect, points=points, colors=colors, gt_c2w=gt, loops=loops,
                 title=title)


def _wxyz(c2w: np.ndarray) -> np.ndarray:
    q = matrix_to_quaternion(c2w[None, :3, :3])[0]  # (x, y, z, w)
    return np.array([q[3], q[0], q[1], q[2]])


def _path_segments(centres: np.ndarray) -> np.ndarray:
    return np.stack([centres[:-1], centres[1:]], axis=1).astype(np.float32)


def _viridis(t: np.ndarray) -> np.ndarray:
    """A small viridis-like ramp (no matplotlib needed): t (N,) in [0, 1] → (N, 3) uint8."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
    x = np.clip(t, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[:, None]
    return np.rint(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def start_viewer(scene: Scene, host: str = "127.0.0.1", port: int = 8080, max_frustums: int = 300):
    """Serve `scene` with viser; returns the server (call `.stop()` to end it)."""
    try:
        import viser
    except ImportError:
        raise MissingDependencyError("scal3r view needs viser: pip install viser") from None
    try:
        # viser prints a banner on stdout whatever `verbose` says; library code stays silent (the
        # CLI prints the address). A busy port makes viser move to the next free one.
        with contextlib.redirect_stdout(io.StringIO()):
            server = viser.ViserServer(host=host, port=port, verbose=False)
    except OSError as exc:
        raise InputError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (try another --port)") from None
    n = len(scene.c2w)
    ext = scene.extent
    centres = scene.c2w[:, :3, 3].astype(np.float32)
    server.scene.set_up_direction("-y")  # OpenCV cameras: y down
    cloud = None
    if len(scene.points):
        cloud = server.scene.add_point_cloud("/cloud", scene.points, scene.colors, point_size=max(ext * 0.002, 1e-4),
                                     point_shape="rounded")
    colors = _viridis(np.linspace(0, 1, max(n - 1, 1)))
    if n > 1:
        seg_colors = np.repeat(colors[:, None, :], 2, axis=1)
        server.scene.add_line_segments("/path", _path_segments(centres), seg_colors,
                                              thickness=3.0, thickness_units="screen")
    if scene.gt_c2w is not None and len(scene.gt_c2w) > 1:
        server.scene.add_line_segments("/ground_truth", _path_segments(scene.gt_c2w[:, :3, 3]), (150, 150, 150),
                                       thickness=2.0, thickness_units="screen")
    for k, (a, b, ok) in enumerate(scene.loops):
        if 0 <= a < n and 0 <= b < n:
            server.scene.add_line_segments(f"/loops/{k}", np.stack([centres[[a, b]]]),
                                           (255, 140, 0) if ok else (160, 160, 160),
                                           thickness=2.0, thickness_units="screen")
    # Frustums for a subset of frames (a browser handles a few hundred), all of them toggled by the slider.
    shown = np.unique(np.linspace(0, n - 1, min(n, max_frustums)).round().astype(int))
    frustums = {}
    scale = ext * 0.02
    for i in shown:
        frustums[int(i)] = server.scene.add_camera_frustum(
            f"/cameras/{i:06d}", fov=float(scene.fov_y[i]), aspect=scene.aspect, scale=scale,
            thickness=1.5, thickness_units="screen", color=tuple(int(c) for c in _viridis(np.array([i / max(n - 1, 1)]))[0]),
            wxyz=_wxyz(scene.c2w[i]), position=centres[i])
    current = server.scene.add_camera_frustum("/current", fov=float(scene.fov_y[-1]), aspect=scene.aspect,
                                              scale=scale * 2.5, thickness=3.0, thickness_units="screen",
                                              color=(255, 40, 40), wxyz=_wxyz(scene.c2w[-1]), position=centres[-1])
    server.gui.add_markdown(f"**{scene.title}**  \n{n} frames, {len(scene.points)} points shown")
    slider = server.gui.add_slider("frame", min=0, max=max(n - 1, 1), step=1, initial_value=n - 1)
    show_cloud = server.gui.add_checkbox("point cloud", True)

    @slider.on_update
    def _(_event) -> None:
        t = int(slider.value)
        with server.atomic():
            for i, handle in frustums.items():
                handle.visible = i <= t
            current.wxyz = _wxyz(scene.c2w[min(t, n - 1)])
            current.position = centres[min(t, n - 1)]

    @show_cloud.on_update
    def _(_event) -> None:
        if cloud is not None:
            cloud.visible = bool(show_cloud.value)

    # Start looking at the whole path from above and behind.
    centre = centres.mean(0)
    server.initial_camera.look_at = tuple(float(v) for v in centre)
    server.initial_camera.position = tuple(float(v) for v in centre + np.array([0.0, -0.8 * ext, -0.6 * ext]))
    server.initial_camera.up = (0.0, -1.0, 0.0)
    return server
