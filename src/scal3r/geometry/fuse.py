"""Fusion: every frame's depth into the world frame, confidence filter, voxel downsampling, colours.

Streaming: frames are added one at a time to a voxel grid that keeps, per occupied voxel, the sum
of its points and colours and a count; the output is each voxel's mean point and colour. Memory
grows with the number of occupied voxels (64 bytes each), not with the number of frames: a merge
adds the buffered points of voxels it already has in place and inserts only the new voxels, one
column at a time, so it never copies the whole grid at once. Every voxel's sums are accumulated
in the order its points came, so the result does not depend on how often merges run.

A long run's cloud can have millions of voxels. With `spill_dir` the grid holds at most about
`max_voxels` in memory: beyond that it writes them to disk as a sorted run and starts afresh, and
`result` merges the runs a key range at a time into the cloud's files, read back as row sources
(`geometry.rowfiles.NpyRows`). Voxels that no run boundary splits come out bit-identical to the
in-memory grid; a voxel whose points fell into several runs sums them run by run (float64
rounding, below float32 resolution of the means but for the rare tie).

The release keeps pixels whose confidence exceeds 0.75 × the frame's mean confidence.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.geometry.camera import as_numpy, camera_rays
from scal3r.geometry.rowfiles import NpyRows, NpyRowWriter
from scal3r.progress import ProgressFn, report

_BITS = 21  # bits per voxel axis in a packed int64 key: ±2^20 voxels around the origin
_OFFSET = 1 << (_BITS - 1)


@dataclass
class FusionConfig:
    conf_ratio: float = 0.75  # keep pixels with confidence > conf_ratio × the frame's mean confidence
    voxel_size: Optional[float] = None  # world units; None: 1% of the first frame's median depth
    frame_stride: int = 1  # use every k-th frame
    max_depth: Optional[float] = None  # drop points farther than this (world units), e.g. sky
    # Buffered points before merging into the grid (the result does not depend on it; a merge
    # holds about 150 bytes per buffered point for a moment).
    merge_every: int = 500_000
    # A folder for voxel runs beyond `max_voxels` in memory (None: the whole grid in memory). With
    # it the cloud's points, colours and counts come back as row sources of files in that folder.
    spill_dir: Optional[str] = None
    max_voxels: int = 1 << 19


@dataclass
class PointCloud:
    """Fused points in voxel-key order. points, colors and counts are arrays, or (a grid that
    spilled to disk) `NpyRows` of files: index them a block at a time."""

    points: np.ndarray  # (P, 3) float32 voxel means
    colors: Optional[np.ndarray]  # (P, 3) float32 in [0, 1], or None
    counts: np.ndarray  # (P,) int64 points per voxel
    voxel_size: float


class VoxelGrid:
    """Streaming voxel accumulator: `add` points (and colours), then `result()` voxel means.

    Per occupied voxel: its packed key (sorted), point count and the sums of its points (and
    colours), each a separate column. Every voxel's sum is accumulated in the order its points
    were added, whatever `merge_every` is, so the result does not depend on how often merges run.
    """

    def __init__(self, voxel_size: float, with_colors: bool, spill_dir=None, max_voxels: int = 1 << 19):
        if not voxel_size > 0:
            raise InputError(f"voxel size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.with_colors = with_colors
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.max_voxels = int(max_voxels)
        self._runs: List[Path] = []
        self.range_entries = 1 << 15  # run entries per run in one key range of the final merge
        self._keys = np.zeros(0, dtype=np.int64)
        self._columns = [np.zeros(0) for _ in range(6 if with_colors else 3)]
        self._counts = np.zeros(0, dtype=np.int64)
        self._buffer: list = []
        self._buffered = 0
        self.merge_every = 500_000

    @property
    def n_voxels(self) -> int:
        return int(self._keys.shape[0])

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
        keys = np.concatenate([k for k, _ in self._buffer])
        vals = np.concatenate([v for _, v in self._buffer])
        self._buffer, self._buffered = [], 0
        uniq, inverse = np.unique(keys, return_inverse=True)
        del keys
        inverse = inverse.reshape(-1)
        # Voxels the grid already has: their sums grow in place, point after point.
        pos = np.searchsorted(self._keys, uniq)
        found = pos < self._keys.shape[0]
        found[found] = self._keys[pos[found]] == uniq[found]
        old_point = found[inverse]
        if old_point.any():
            slot = pos[inverse[old_point]]
            for c, column in enumerate(self._columns):
                np.add.at(column, slot, vals[old_point, c])
            np.add.at(self._counts, slot, 1)
            del slot
        # New voxels: sums from zero in point order, then inserted in key order, a column at a time.
        new = ~found
        if new.any():
            new_index = np.cumsum(new) - 1
            at = new_index[inverse[~old_point]]
            n_new = int(new.sum())
            where = pos[new]
            self._keys = np.insert(self._keys, where, uniq[new])
            self._counts = np.insert(self._counts, where, np.bincount(at, minlength=n_new).astype(np.int64))
            for c in range(len(self._columns)):
                sums = np.bincount(at, weights=vals[~old_point, c], minlength=n_new)
                self._columns[c] = np.insert(self._columns[c], where, sums)
        if self.spill_dir is not None and self.n_voxels > self.max_voxels:
            self._spill()

    def _spill(self) -> None:
        """The grid in memory → a sorted run on disk; the grid starts empty."""
        run = self.spill_dir / f"run{len(self._runs):05d}"
        run.mkdir(parents=True, exist_ok=False)
        np.save(run / "keys.npy", self._keys)
        np.save(run / "counts.npy", self._counts)
        for c, column in enumerate(self._columns):
            np.save(run / f"sum{c}.npy", column)
        self._runs.append(run)
        self._keys, self._counts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        self._columns = [np.zeros(0) for _ in self._columns]

    def _merged_runs(self) -> PointCloud:
        """Merge the runs on disk, one key range at a time, into the cloud's files."""
        runs = [{name: NpyRows(r / f"{name}.npy") for name in ["keys", "counts"] +
                 [f"sum{c}" for c in range(len(self._columns))]} for r in self._runs]
        # Range bounds: every `range_entries`-th key of every run, so that one range holds at most
        # that many entries of each run.
        step = self.range_entries
        bounds = np.unique(np.concatenate([r["keys"][::step] for r in runs]))
        cuts = []
        for r in runs:
            keys = r["keys"][:]
            cuts.append(np.concatenate([[0], np.searchsorted(keys, bounds[1:]), [keys.shape[0]]]))
            del keys
        n_ranges = len(bounds)

        def gather(name, j):
            return np.concatenate([r[name][int(c[j]):int(c[j + 1])] for r, c in zip(runs, cuts)])

        sizes = np.array([np.unique(gather("keys", j)).shape[0] for j in range(n_ranges)], dtype=np.int64)
        total = int(sizes.sum())
        out = self.spill_dir / "cloud"
        out.mkdir(parents=True, exist_ok=True)
        writers = {"points": NpyRowWriter(out / "points.npy", (total, 3), np.float32),
                   "counts": NpyRowWriter(out / "counts.npy", (total,), np.int64)}
        if self.with_colors:
            writers["colors"] = NpyRowWriter(out / "colors.npy", (total, 3), np.float32)
        try:
            start = 0
            for j in range(n_ranges):
                keys = gather("keys", j)
                uniq, inverse = np.unique(keys, return_inverse=True)
                inverse = inverse.reshape(-1)
                counts = np.zeros(uniq.shape[0], dtype=np.int64)
                np.add.at(counts, inverse, gather("counts", j))
                n = np.maximum(counts, 1)
                block = {"points": np.empty((uniq.shape[0], 3), np.float32)}
                if self.with_colors:
                    block["colors"] = np.empty((uniq.shape[0], 3), np.float32)
                for c in range(len(self._columns)):
                    # Run sums in run order: a voxel in one run keeps its sum exactly.
                    sums = np.bincount(inverse, weights=gather(f"sum{c}", j), minlength=uniq.shape[0])
                    block["points" if c < 3 else "colors"][:, c % 3] = sums / n
                for name, rows in block.items():
                    writers[name].write_rows(start, rows)
                writers["counts"].write_rows(start, counts)
                start += uniq.shape[0]
        finally:
            for w in writers.values():
                w.close()
        for r in self._runs:
            shutil.rmtree(r, ignore_errors=True)
        self._runs = []
        return PointCloud(points=NpyRows(out / "points.npy"),
                          colors=NpyRows(out / "colors.npy") if self.with_colors else None,
                          counts=NpyRows(out / "counts.npy"), voxel_size=self.voxel_size)

    def result(self, release: bool = False) -> PointCloud:
        """The voxel means. release=True hands the grid's memory over as it goes (each sum column
        is dropped once converted): the grid is empty afterwards. A grid that spilled runs to
        disk merges them into files and returns the cloud as row sources (and is empty after)."""
        self._merge()
        if self._runs:
            if self.n_voxels:
                self._spill()
            return self._merged_runs()
        n = np.maximum(self._counts, 1)
        points = np.empty((self.n_voxels, 3), dtype=np.float32)
        colors = np.empty((self.n_voxels, 3), dtype=np.float32) if self.with_colors else None
        for c in range(len(self._columns)):
            (points if c < 3 else colors)[:, c % 3] = self._columns[c] / n
            if release:
                self._columns[c] = np.zeros(0)
        del n
        counts = self._counts if release else self._counts.copy()
        if release:
            self._keys, self._counts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return PointCloud(points=points, colors=colors, counts=counts, voxel_size=self.voxel_size)


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
            grid = VoxelGrid(size, with_colors, spill_dir=config.spill_dir, max_voxels=config.max_voxels)
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
    return grid.result(release=True)


def fuse_reconstruction(rec, colors=None, config: Optional[FusionConfig] = None,
                        progress: Optional[ProgressFn] = None) -> PointCloud:
    """Fuse an assembled reconstruction. colors: optional (N, H, W, 3) or (N, 3, H, W) in [0, 1]
    (any indexable sequence, e.g. a lazy frame reader, so the images need not all be in RAM)."""
    N = rec.n_frames

    def stream() -> Iterator[Tuple]:
        for i in range(N):
            yield (rec.depth[i], rec.depth_conf[i], rec.c2w[i], rec.K[i], None if colors is None else colors[i])

    return fuse_frames(stream(), config, with_colors=colors is not None, progress=progress, total=N)
