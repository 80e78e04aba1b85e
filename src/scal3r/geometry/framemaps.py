"""Per-frame maps of a reconstruction computed on access, and per-row sources of chunk outputs.

A long video's depth and confidence maps do not fit in memory as (N, H, W) arrays (10,000 frames
at 252×140 are 1.4 GB each), and they need not: every frame's depth is its owning chunk's depth
row times one scale. `FrameMaps` keeps only that recipe (which chunk, which row, which scale) and
reads the row when frame i is asked for, from whatever the chunk outputs were: numpy arrays, or
row sources such as `scal3r.pipeline.chunkstore.NpyRows` that read a row from a file.

A *row source* is anything that is not a numpy array or tensor but has `shape`, `dtype` and
`source[i]` → the i-th row as a numpy array (and `source[[i, j]]` → stacked rows).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np


def is_row_source(x) -> bool:
    """True for lazily read rows (not an ndarray, not a tensor; has shape, dtype and indexing)."""
    return (not isinstance(x, np.ndarray) and not hasattr(x, "detach") and hasattr(x, "shape")
            and hasattr(x, "dtype") and hasattr(x, "__getitem__"))


class SqueezedRows:
    """A row source of (n, H, W, 1) rows seen as (n, H, W)."""

    def __init__(self, source):
        self.source = source
        self.shape = tuple(source.shape[:-1])
        self.dtype = source.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        return np.asarray(self.source[key])[..., 0]


def _as_row_array(row, dtype) -> np.ndarray:
    return np.array(row, dtype=dtype, copy=True)


class FrameMaps:
    """(N, H, W) float32 per-frame maps, frame i = `sources[chunk[i]][row[i]]` (× `scale[i]`).

    Behaves like the (N, H, W) array it stands for: `len`, `shape`, `dtype`, `ndim`, `maps[i]`
    (a fresh (H, W) array), `maps[a:b]` / `maps[[i, j]]` (stacked), iteration, and
    `np.asarray(maps)` (everything at once: only for short sequences). Arithmetic (`maps * s`)
    and other indexing (boolean masks) go through the whole array too.

    With a scale the map is computed as the earlier eager arrays were: the row in float64 times
    the frame's float64 scale, rounded to float32 (bit-identical to them).
    """

    def __init__(self, sources: Sequence, chunk: np.ndarray, row: np.ndarray, hw: Tuple[int, int],
                 scale: Optional[np.ndarray] = None):
        self.sources = list(sources)
        self.chunk = np.asarray(chunk, dtype=np.int64)
        self.row = np.asarray(row, dtype=np.int64)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        self.shape = (int(self.chunk.shape[0]), int(hw[0]), int(hw[1]))
        self.dtype = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameMaps(shape={self.shape}, dtype=float32, {'scaled' if self.scale is not None else 'unscaled'})"

    def _finish(self, rows: np.ndarray, frames: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return _as_row_array(rows, np.float32)
        s = self.scale[frames].reshape((-1,) + (1,) * (rows.ndim - 1)) if rows.ndim == 3 else self.scale[frames]
        return (np.asarray(rows, dtype=np.float64) * s).astype(np.float32)

    def frame(self, i: int) -> np.ndarray:
        n = self.shape[0]
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for {n} frames")
        i = i + n if i < 0 else i
        row = np.asarray(self.sources[self.chunk[i]][int(self.row[i])])
        return self._finish(row, np.int64(i))

    def _frames(self, frames: np.ndarray) -> np.ndarray:
        """Stacked maps of `frames`, each chunk's rows read together."""
        out = np.empty((len(frames),) + self.shape[1:], dtype=np.float32)
        chunks = self.chunk[frames]
        for b in np.unique(chunks):
            at = np.nonzero(chunks == b)[0]
            rows = np.asarray(self.sources[int(b)][self.row[frames[at]]])
            out[at] = self._finish(rows, frames[at])
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.frame(key)
        if isinstance(key, slice):
            return self._frames(np.arange(*key.indices(self.shape[0])))
        if isinstance(key, tuple) and key and isinstance(key[0], (int, np.integer, slice)):
            first = self[key[0]]
            return first[key[1:]] if isinstance(key[0], (int, np.integer)) else first[(slice(None),) + key[1:]]
        idx = np.asarray(key) if not isinstance(key, tuple) else None
        if idx is not None and idx.ndim == 1 and np.issubdtype(idx.dtype, np.integer):
            n = self.shape[0]
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"frame index out of range for {n} frames")
            return self._frames(np.where(idx < 0, idx + n, idx).astype(np.int64))
        if idx is not None and idx.ndim == 1 and idx.dtype == bool and idx.shape[0] == self.shape[0]:
            return self._frames(np.nonzero(idx)[0])
        return np.asarray(self)[key]

    def __iter__(self):
        for i in range(self.shape[0]):
            yield self.frame(i)

    def __array__(self, dtype=None, copy=None):
        out = self._frames(np.arange(self.shape[0]))
        return out if dtype is None else out.astype(dtype, copy=False)

    # Arithmetic on the whole array (callers that want every frame at once).
    def __mul__(self, other):
        return np.asarray(self) * other

    __rmul__ = __mul__

    def __truediv__(self, other):
        return np.asarray(self) / other
