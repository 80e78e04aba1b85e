"""Per-chunk network outputs on disk, read back a row at a time.

The network hands over each chunk's outputs as soon as they exist (`run_chunks(on_output=...)`);
`ChunkOutputStore.write` puts the keys the backend needs into `.npy` files with rows in ascending
frame order. `rows` gives them back as `NpyRows`: each row is read from the file when it is asked
for (a positioned read into a fresh array), so nothing stays mapped. That matters because pages of
a memory map that have been touched count in the process's resident set (`VmRSS`, what a batch
scheduler kills on) for as long as the map lives: a backend holding every chunk's maps would hold
every depth map ever read. With `NpyRows` host memory holds what the caller keeps (one chunk pair
in the backend, one frame in fusion and export), however long the video; the page cache does the
rest. `load` still maps a chunk (for tools that want whole arrays).

`NpyRows` and `NpyRowWriter` (the other direction, for the decoded frames of `--offload`) live in
`scal3r.geometry.rowfiles`, which fusion uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from scal3r.chunks import rows_ascending
from scal3r.geometry.rowfiles import NpyRows, NpyRowWriter  # noqa: F401  (re-exported)

# What `scal3r.geometry.assemble` reads with point_source="depth" (the release's backend).
BACKEND_KEYS = ("pose_enc", "depth", "depth_conf")


class ChunkOutputStore:
    """Chunk outputs under `root/chunk{b:05d}.{key}.npy` (float32), plus `frames` (int64)."""

    def __init__(self, root: Path, keys: Sequence[str] = BACKEND_KEYS):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = tuple(keys)
        self.written: List[int] = []

    def _path(self, b: int, key: str) -> Path:
        return self.root / f"chunk{b:05d}.{key}.npy"

    def write(self, b: int, out: Mapping) -> None:
        """out: a chunk's outputs with rows in feed order and "frames" (n,) the global frame of each
        row. Rows are stored sorted by frame; depth (n, H, W, 1) is stored as (n, H, W)."""
        rows = rows_ascending({k: _numpy(out[k]) for k in ("frames",) + self.keys})
        np.save(self._path(b, "frames"), rows["frames"].astype(np.int64))
        for key in self.keys:
            value = rows[key].astype(np.float32, copy=False)
            if key == "depth" and value.ndim == 4 and value.shape[-1] == 1:
                value = value[..., 0]
            np.save(self._path(b, key), np.ascontiguousarray(value))
        self.written.append(b)

    def load(self, b: int) -> Dict[str, np.ndarray]:
        """Chunk b's outputs as read-only memory maps (rows in ascending frame order)."""
        out = {key: np.load(self._path(b, key), mmap_mode="r") for key in self.keys}
        out["frames"] = np.load(self._path(b, "frames"))
        return out

    def rows(self, b: int) -> Dict[str, object]:
        """Chunk b's outputs for `scal3r.geometry.assemble` without mapping anything: "frames" and
        "pose_enc" (small) as arrays, the per-pixel keys as `NpyRows` (read a row at a time)."""
        out: Dict[str, object] = {}
        for key in self.keys:
            out[key] = np.load(self._path(b, key)) if key == "pose_enc" else NpyRows(self._path(b, key))
        out["frames"] = np.load(self._path(b, "frames"))
        return out

    def has(self, b: int) -> bool:
        return self._path(b, "frames").is_file()


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)
