"""`.npy` files read and written a row at a time with positioned reads and writes, never mapped.

Pages of a memory map that have been touched count in the process's resident set (`VmRSS`, what
a batch scheduler kills on) for as long as the map lives, so a long run that maps its frames,
chunk outputs or fused points holds every page it ever read. `NpyRows` reads the rows it is asked
for into fresh arrays (the page cache keeps the file warm, outside the process), and
`NpyRowWriter` writes rows without mapping them. Used by the pipeline (frames, chunk outputs) and
by fusion (spilled voxel runs, the fused cloud of a long run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np


def _read_header(f) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return np.lib.format._read_array_header(f, version)  # 3.0 (utf-8 field names): not written here


def _read_exact(fd: int, view: memoryview, offset: int, path) -> None:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"{path}: file ends {len(view) - done} bytes early")
        done += got


class NpyRows:
    """Rows of a C-ordered `.npy` file (shape (N, ...)), read on access: `rows[i]` → a fresh array
    of shape `shape[1:]`; `rows[a:b]`, `rows[[i, j, …]]` → stacked. Behaves like a read-only array
    for `len`, `shape`, `dtype`, `ndim` and indexing; `np.asarray(rows)` reads the whole file.

    length: use only the first `length` rows (the file may have room for more)."""

    def __init__(self, path, length: Optional[int] = None):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            shape, fortran, dtype = _read_header(f)
            self._offset = f.tell()
        if fortran or len(shape) < 1 or dtype.hasobject:
            raise ValueError(f"{self.path}: NpyRows reads C-ordered numeric arrays of ≥ 1 dimension")
        n = int(shape[0]) if length is None else int(length)
        if not 0 <= n <= shape[0]:
            raise ValueError(f"{self.path}: {n} rows asked, the file has {shape[0]}")
        self.shape: Tuple[int, ...] = (n,) + tuple(int(d) for d in shape[1:])
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"NpyRows({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def head(self, n: int) -> "NpyRows":
        """The first n rows."""
        return NpyRows(self.path, n)

    def _rows(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices),) + self.shape[1:], dtype=self.dtype)
        if out.size == 0:
            return out
        flat = memoryview(out.reshape(-1).view(np.uint8))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            k = 0
            while k < len(indices):  # runs of consecutive rows in one read each
                j = k + 1
                while j < len(indices) and indices[j] == indices[j - 1] + 1:
                    j += 1
                _read_exact(fd, flat[k * self._row_bytes:j * self._row_bytes],
                            self._offset + int(indices[k]) * self._row_bytes, self.path)
                k = j
        finally:
            os.close(fd)
        return out

    def _index(self, i) -> int:
        i = int(i)
        n = self.shape[0]
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows")
        return i + n if i < 0 else i

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key:
                return self[:]
            first = self[key[0]]
            rest = key[1:]
            if isinstance(key[0], (int, np.integer)):
                return first[rest]
            return first[(slice(None),) + rest]
        if isinstance(key, (int, np.integer)):
            return self._rows(np.array([self._index(key)]))[0]
        if isinstance(key, slice):
            return self._rows(np.arange(*key.indices(self.shape[0])))
        if key is Ellipsis:
            return self[:]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != self.shape[:idx.ndim]:
                raise IndexError(f"boolean index of shape {idx.shape} for rows of shape {self.shape}")
            if idx.ndim > 1:
                return self[:][idx]
            idx = np.nonzero(idx)[0]
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            return self[:][key]
        return self._rows(np.array([self._index(i) for i in idx], dtype=np.int64))

    def __iter__(self):
        for i in range(self.shape[0]):
            yield self[i]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


class NpyRowWriter:
    """A `.npy` file of shape (N, ...) written a row at a time with positioned writes (no memory
    map, so the written rows never count in this process's resident memory)."""

    def __init__(self, path, shape: Sequence[int], dtype=np.uint8):
        self.path = Path(path)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header) if _fits_1_0(header) else \
                np.lib.format.write_array_header_2_0(f, header)
            self._offset = f.tell()
            self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
            f.truncate(self._offset + self.shape[0] * self._row_bytes)
        self._fd = os.open(self.path, os.O_WRONLY)

    def write(self, i: int, row: np.ndarray) -> None:
        row = np.asarray(row)
        if row.shape != self.shape[1:]:
            raise ValueError(f"row of shape {row.shape}, expected {self.shape[1:]}")
        self.write_rows(i, row[None])

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Rows start … start + len(rows) − 1 at once."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape[1:]}, expected {self.shape[1:]}")
        if not 0 <= start <= start + rows.shape[0] <= self.shape[0]:
            raise IndexError(f"rows {start}…{start + rows.shape[0] - 1} out of range for {self.shape[0]} rows")
        data = memoryview(rows.reshape(-1).view(np.uint8))
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], self._offset + start * self._row_bytes + done)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "NpyRowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fits_1_0(header: dict) -> bool:
    try:
        import io

        np.lib.format.write_array_header_1_0(io.BytesIO(), header)
        return True
    except ValueError:
        return False
