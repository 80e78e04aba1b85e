"""Fusion: every frame's depth into the world frame, confidence filter, voxel downsampling, colours.

Streaming: frames are added one at a time to a voxel grid that keeps, per occupied voxel, the sum
of its points and colours and a count; the output is each voxel's mean point and colour. Memory
grows with the number of occupied voxels, not with the number of frames, so a 5000-frame run fits
in RAM. The release keeps pixels whose confidence exceeds 0.75 × the frame's mean confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.geometry.camera import as_numpy, camera_rays
from scal3r.progress import ProgressFn, report

_BITS = 21  # bits per voxel axis in a packed int64 key: ±2^20 voxels around the origin
_OFFSET = 1 << (_BITS - 1)


@dataclass
class FusionConfig:
    conf_ratio: float = 0.75  # keep pixels with confidence > conf_ratio × the frame's mean confidence
    voxel_size: Optional[float] = None  # world units; None: 1% of the first frame's median depth
    frame_stride: int = 1  # use every k-th frame
    max_depth: Optional[float] = None  # drop points farther than this (world units), e.g. sky
    merge_every: int = 2_000_000  # buffered points before merging into the grid


@dataclass
class PointCloud:
    points: np.ndarray  # (P, 3) float32 voxel means
    colors: Optional[np.ndarray]  # (P, 3) float32 in [0, 1], or None
    counts: np.ndarray  # (P,) int64 points per voxel
    voxel_size: float


class VoxelGrid:
    """Streaming voxel accumulator: `add` points (and colours), then `result()` voxel means."""

    def __init__(self, voxel_size: float, with_colors: bool):
        if not voxel_size > 0:
            raise InputError(f"voxel size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.with_colors = with_colors
        self._keys = np.zeros(0, dtype=np.int64)
        self._sums = np.zeros((0, 6 if with_colors else 3))
        self._counts = np.zeros(0, dtype=np.int64)
        self._buffer: list = []
        self._buffered = 0
        self.merge_every = 2_000_000

    def _pack(self, points: np.ndarray) -> np.ndarray:
        ijk = np.floor(points / self.voxel_size).astype(np.int64) + _OFFSET
        if ijk.size and (ijk.min() < 0 or ijk.max() >= (1 << _BITS)):
            raise InputError(f"points span more than 2^{_BITS} voxels of size {self.voxel_size:g} on an axis; "
                             "use a larger voxel size")
        return (ijk[:, 0] << (2 * _BITS)) | (ijk[:, 1] << _BITS) | ijk[:, 2]

    def add(self, points: np.ndarray, colors: Optional[np.ndarray] = None) -> None:
        """points (P, 3) world; colors (P, 3) when the grid keeps colours."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if points.shape[0] == 0:
            return
        vals = points
        if self.with_colors:
            if colors is None:
                raise InputError("this voxel grid keeps colours; pass colors with the points")
            vals = np.concatenate([points, np.asarray(colors, dtype=np.float64).reshape(-1, 3)], axis=1)
        self._buffer.append((self._pack(points), vals))
        self._buffered += points.shape[0]
        if self._buffered >= self.merge_every:
            self._merge()

    def _merge(self) -> None:
        if not self._buffer:
            return
        keys = np.concatenate([self._keys] + [k for k, _ in self._buffer])
        vals = np.concatenate([self._sums] + [v for _, v in self._buffer])
        counts = np.concatenate([self._counts] + [np.ones(k.shape[0], dtype=np.int64) for k, _ in self._buffer])
        self._buffer, self._buffered = [], 0
        uniq, inverse = np.unique(keys, return_inverse=True)
        sums = np.zeros((uniq.shape[0], vals.shape[1]))
        for c in range(vals.shape[1]):
            sums[:, c] = np.bincount(inverse, weights=vals[:, c], minlength=uniq.shape[0])
        self._keys, self._sums = uniq, sums
        self._counts = np.bincount(inverse, weights=counts, minlength=uniq.shape[0]).astype(np.int64)

    def result(self) -> PointCloud:
        self._merge()
        mean = self._sums / np.maximum(self._counts, 1)[:, None]
        return PointCloud(points=mean[:, :3].astype(np.float32),
                          colors=mean[:, 3:6].astype(np.float32) if self.with_colors else None,
                          counts=self._counts.copy(), voxel_size=self.voxel_size)


def frame_points(depth, conf, c2w, K, conf_ratio: float = 0.75, max_depth: Optional[float] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """One frame → (world points (P, 3), mask (H, W) of the pixels kept).

    depth, conf (H, W); c2w (4, 4) rigid; K (3, 3). Kept: finite positive depth, finite confidence
    above conf_ratio × the frame's mean confidence (over finite values), depth ≤ max_depth.
    """
    depth = as_numpy(depth)
    conf = as_numpy(conf)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    H, W = depth.shape
    ok = np.isfinite(depth) & (depth > 0) & np.isfinite(conf)
    if not ok.any():
        return np.zeros((0, 3)), ok
    mask = ok & (conf > conf_ratio * float(np.mean(conf[ok])))
    if max_depth is not None:
        mask &= depth <= max_depth
    rays = camera_rays(K, H, W)[mask] * depth[mask][:, None]
    c2w = as_numpy(c2w)
    return np.einsum("ij,nj->ni", c2w[:3, :3], rays) + c2w[:3, 3], mask


def fuse_frames(frames: Iterable[Tuple], config: Optional[FusionConfig] = None, with_colors: bool = False,
                progress: Optional[ProgressFn] = None, total: int = 0) -> PointCloud:
    """Stream of (depth (H, W), conf (H, W), c2w (4, 4), K (3, 3)[, colors (H, W, 3)]) → fused cloud."""
    config = config or FusionConfig()
    grid: Optional[VoxelGrid] = None
    for i, item in enumerate(frames):
        if i % max(config.frame_stride, 1):
            continue
        depth, conf, c2w, K = item[:4]
        points, mask = frame_points(depth, conf, c2w, K, config.conf_ratio, config.max_depth)
        if grid is None:
            if points.shape[0] == 0:
                continue
            size = config.voxel_size
            if size is None:
                size = 0.01 * float(np.median(as_numpy(depth)[mask]))
            grid = VoxelGrid(size, with_colors)
            grid.merge_every = config.merge_every
        colors = None
        if with_colors:
            if len(item) < 5 or item[4] is None:
                raise InputError("colours requested but a frame came without colours")
            colors = as_numpy(item[4], dtype=np.float32)
            if colors.shape[0] == 3 and colors.shape[-1] != 3:  # (3, H, W) → (H, W, 3)
                colors = np.moveaxis(colors, 0, -1)
            colors = colors[mask]
        grid.add(points, colors)
        report(progress, "fuse", i + 1, total)
    if grid is None:
        return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32) if with_colors else None,
                          np.zeros(0, np.int64), float(config.voxel_size or 0.0))
    return grid.result()


def fuse_reconstruction(rec, colors=None, config: Optional[FusionConfig] = None,
                        progress: Optional[ProgressFn] = None) -> PointCloud:
    """Fuse an assembled reconstruction. colors: optional (N, H, W, 3) or (N, 3, H, W) in [0, 1]
    (any indexable sequence, e.g. a lazy frame reader, so the images need not all be in RAM)."""
    N = rec.n_frames

    def stream() -> Iterator[Tuple]:
        for i in range(N):
            yield (rec.depth[i], rec.depth_conf[i], rec.c2w[i], rec.K[i], None if colors is None else colors[i])

    return fuse_frames(stream(), config, with_colors=colors is not None, progress=progress, total=N)
