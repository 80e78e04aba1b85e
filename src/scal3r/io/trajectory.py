"""Camera trajectories on disk: TUM and KITTI text formats, read and written.

Poses are camera-to-world (c2w) matrices, array (N, 4, 4) float64, with OpenCV camera axes
(x right, y down, z forward). Both formats describe the same thing differently:

- TUM (`t tx ty tz qx qy qz qw`, one pose per line, `#` comments allowed): a timestamp in seconds,
  the camera centre in world coordinates and the camera-to-world rotation as a unit quaternion,
  scalar last (Hamilton convention, as in the TUM RGB-D benchmark and `evo`).
- KITTI (12 numbers per line): the top 3×4 rows of the c2w matrix, row-major, one line per frame
  (the KITTI odometry ground-truth layout). No timestamps: line i is frame i.

Numbers are written with Python's shortest round-trip repr, so a float64 pose written and read back
is bit-identical (for TUM: the quaternion and position are; the rotation matrix rebuilt from the
quaternion agrees to ~1e-16).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from scal3r.geometry.camera import quat_to_rotation, rotation_to_quat
from scal3r.errors import InputError

PathLike = Union[str, os.PathLike]


def as_c2w(poses: np.ndarray) -> np.ndarray:
    """(N, 3, 4) or (N, 4, 4) pose matrices → (N, 4, 4) float64 with a [0 0 0 1] bottom row."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
        raise InputError(f"expected poses of shape (N, 3, 4) or (N, 4, 4), got {poses.shape}")
    out = np.zeros((poses.shape[0], 4, 4))
    out[:, :3, :] = poses[:, :3, :]
    out[:, 3, 3] = 1.0
    return out


def matrix_to_quaternion(rotations: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) → unit quaternions (N, 4) as (qx, qy, qz, qw), qw ≥ 0
    (the TUM order; `scal3r.geometry.camera` holds the conversion)."""
    return rotation_to_quat(np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3))


def quaternion_to_matrix(quaternions: np.ndarray) -> np.ndarray:
    """Quaternions (N, 4) as (qx, qy, qz, qw), any norm > 0 → rotation matrices (N, 3, 3)."""
    q = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    if np.any(np.linalg.norm(q, axis=1) < 1e-12):
        raise InputError("a quaternion has zero norm")
    return quat_to_rotation(q)


def _load_rows(path: PathLike, columns: int, fmt: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{fmt} trajectory not found: {path}")
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != columns:
                raise InputError(f"{path}:{lineno}: expected {columns} numbers per line for the "
                                 f"{fmt} format, got {len(parts)}")
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                raise InputError(f"{path}:{lineno}: not a number in {line!r}") from None
    if not rows:
        raise InputError(f"{path}: no poses in the file")
    return np.asarray(rows, dtype=np.float64)


def _write_rows(path: PathLike, rows: np.ndarray, header: str = "") -> None:
    # repr() is the shortest string that parses back to the same float64.
    lines = [header] if header else []
    lines += [" ".join(repr(float(v)) for v in row) for row in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_kitti(path: PathLike) -> np.ndarray:
    """KITTI pose file → c2w (N, 4, 4) float64."""
    rows = _load_rows(path, 12, "KITTI")
    return as_c2w(rows.reshape(-1, 3, 4))


def write_kitti(path: PathLike, c2w: np.ndarray) -> None:
    """Write c2w (N, 3|4, 4) as a KITTI pose file (the 3×4 top rows, row-major, one line each)."""
    c2w = as_c2w(c2w)
    _write_rows(path, c2w[:, :3, :].reshape(-1, 12))


def read_tum(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """TUM pose file → (timestamps (N,) float64 seconds, c2w (N, 4, 4) float64)."""
    rows = _load_rows(path, 8, "TUM")
    c2w = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    c2w[:, :3, :3] = quaternion_to_matrix(rows[:, 4:8])
    c2w[:, :3, 3] = rows[:, 1:4]
    return rows[:, 0].copy(), c2w


def tum_rows(timestamps: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """The (N, 8) `t tx ty tz qx qy qz qw` table for c2w poses (N, 3|4, 4)."""
    c2w = as_c2w(c2w)
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if timestamps.shape[0] != c2w.shape[0]:
        raise InputError(f"{timestamps.shape[0]} timestamps for {c2w.shape[0]} poses")
    return np.concatenate([timestamps[:, None], c2w[:, :3, 3], matrix_to_quaternion(c2w[:, :3, :3])], axis=1)


def write_tum(path: PathLike, timestamps: np.ndarray, c2w: np.ndarray) -> None:
    """Write c2w poses (N, 3|4, 4) with timestamps (N,) in seconds as a TUM pose file."""
    _write_rows(path, tum_rows(timestamps, c2w), header="# timestamp tx ty tz qx qy qz qw")


def associate_timestamps(t_a: np.ndarray, t_b: np.ndarray, max_diff: float = 0.01) -> Tuple[np.ndarray, np.ndarray]:
    """Match two timestamp lists one-to-one, nearest first, within `max_diff` seconds.

    Returns index arrays (ia, ib) of equal length M, sorted by ia, with |t_a[ia] - t_b[ib]| ≤ max_diff.
    Greedy on the sorted absolute differences, so each timestamp is used at most once.
    """
    t_a = np.asarray(t_a, dtype=np.float64).reshape(-1)
    t_b = np.asarray(t_b, dtype=np.float64).reshape(-1)
    order_b = np.argsort(t_b, kind="stable")
    sorted_b = t_b[order_b]
    # Candidate pairs: each a with its two nearest b's in time, which is enough for a greedy match.
    pos = np.searchsorted(sorted_b, t_a)
    cand_a, cand_b = [], []
    for off in (-1, 0):
        j = np.clip(pos + off, 0, len(sorted_b) - 1)
        cand_a.append(np.arange(len(t_a)))
        cand_b.append(order_b[j])
    ca, cb = np.concatenate(cand_a), np.concatenate(cand_b)
    diff = np.abs(t_a[ca] - t_b[cb])
    keep = diff <= max_diff
    ca, cb, diff = ca[keep], cb[keep], diff[keep]
    used_a = np.zeros(len(t_a), bool)
    used_b = np.zeros(len(t_b), bool)
    ia, ib = [], []
    for k in np.argsort(diff, kind="stable"):
        a, b = ca[k], cb[k]
        if not used_a[a] and not used_b[b]:
            used_a[a] = used_b[b] = True
            ia.append(a)
            ib.append(b)
    ia, ib = np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
    order = np.argsort(ia)
    return ia[order], ib[order]
