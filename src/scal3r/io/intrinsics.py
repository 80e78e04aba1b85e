"""Camera intrinsics as JSON: `{"K": 3×3 or N×3×3, "width": W, "height": H}`.

K is the pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels for images of the given
size, with the OpenCV pixel convention (pixel (u, v) has its centre at integer coordinates, so the
image spans [-0.5, W - 0.5] horizontally). One shared K is a 3×3 list of lists; per-frame intrinsics
are a list of N such matrices.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from scal3r.errors import InputError

PathLike = Union[str, os.PathLike]


@dataclass
class Intrinsics:
    """K: (3, 3) shared or (N, 3, 3) per frame, float64; width, height: image size in pixels."""

    K: np.ndarray
    width: int
    height: int


def write_intrinsics(path: PathLike, K: np.ndarray, width: int, height: int) -> None:
    """Write K (3, 3) or (N, 3, 3) with the image size as JSON."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        raise InputError(f"expected K of shape (3, 3) or (N, 3, 3), got {K.shape}")
    doc = {"K": K.tolist(), "width": int(width), "height": int(height)}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def read_intrinsics(path: PathLike) -> Intrinsics:
    """Read an intrinsics JSON file → Intrinsics (K float64 (3, 3) or (N, 3, 3))."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"intrinsics file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        K = np.asarray(doc["K"], dtype=np.float64)
        width, height = int(doc["width"]), int(doc["height"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not an intrinsics JSON with K, width and height ({e})") from None
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        raise InputError(f"{path}: K must be 3×3 or N×3×3, got shape {K.shape}")
    return Intrinsics(K=K, width=width, height=height)


def read_known_intrinsics(path: PathLike, n_frames: int, image_size, camera: int = 2) -> np.ndarray:
    """A known calibration for `reconstruct --intrinsics` → K (n_frames, 3, 3) for the images as
    decoded (image_size (width, height)).

    Accepted: an intrinsics JSON (`read_intrinsics`: one K or one per frame, with the image size
    they are for, rescaled to `image_size` when it differs); a text file of 9 numbers (one K for
    images of `image_size`) or of n_frames × 9 numbers (one per frame); a KITTI `calib.txt`
    (`P0:` … `P3:` lines: the left 3×3 of P`camera`). Refuses, in one line: a wrong number of
    values or shape, a non-positive focal length, a non-finite value, a per-frame count that is
    not the number of frames, and a bottom row other than (0, 0, 1).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--intrinsics: file not found: {path}")
    width, height = int(image_size[0]), int(image_size[1])
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        intr = read_intrinsics(path)
        K = intr.K.copy()
        if (intr.width, intr.height) != (width, height):
            # Pixel-centre-consistent rescale to the decoded size: c' = (c + 0.5)·s − 0.5.
            sx, sy = width / intr.width, height / intr.height
            K[..., 0, 0] *= sx
            K[..., 1, 1] *= sy
            K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
            K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    elif any(line.strip().startswith(("P0:", "P1:", "P2:", "P3:")) for line in text.splitlines()):
        rows = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key.strip() in ("P0", "P1", "P2", "P3"):
                rows[key.strip()] = rest.split()
        name = f"P{camera}" if f"P{camera}" in rows else sorted(rows)[0]
        try:
            P = np.asarray([float(v) for v in rows[name]], dtype=np.float64)
        except ValueError:
            raise InputError(f"--intrinsics {path}: {name} is not 12 numbers") from None
        if P.size != 12:
            raise InputError(f"--intrinsics {path}: {name} has {P.size} numbers, a KITTI projection matrix has 12")
        K = P.reshape(3, 4)[:, :3].copy()
    else:
        try:
            values = np.asarray([float(v) for v in text.replace(",", " ").split()], dtype=np.float64)
        except ValueError:
            raise InputError(f"--intrinsics {path}: expected a JSON file, a KITTI calib.txt, or 3×3 numbers "
                             "per line") from None
        if values.size == 9:
            K = values.reshape(3, 3)
        elif values.size == 9 * n_frames:
            K = values.reshape(n_frames, 3, 3)
        else:
            raise InputError(f"--intrinsics {path}: {values.size} numbers; expected 9 (one 3×3 K) or "
                             f"{9 * n_frames} (one per frame for {n_frames} frames)")
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 3 and K.shape[0] != n_frames:
        raise InputError(f"--intrinsics {path}: {K.shape[0]} matrices for {n_frames} frames")
    if not np.isfinite(K).all():
        raise InputError(f"--intrinsics {path}: contains NaN or infinite values")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise InputError(f"--intrinsics {path}: focal lengths must be positive (fx = K[0][0], fy = K[1][1])")
    if not np.allclose(K[..., 2, :], [0.0, 0.0, 1.0]):
        raise InputError(f"--intrinsics {path}: the last row of K must be 0 0 1")
    return np.broadcast_to(K, (n_frames, 3, 3)).copy() if K.ndim == 2 else K
