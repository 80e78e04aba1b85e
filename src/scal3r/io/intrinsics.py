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
