"""Where chunk state lives between layers.

The layer-synchronous loop touches every chunk once per layer, so each chunk's tokens (and the head
features collected so far) must be kept somewhere in between:

- `MemoryStore` keeps them as they are (RAM or device memory): fastest, memory grows with the
  number of chunks.
- `DiskStore` writes them to files in a run directory and memory-maps them back, so resident memory
  is about one chunk's state whatever the sequence length (the release's host-RAM limit at ~2,000
  frames came from keeping everything resident).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor


class MemoryStore:
    """Chunk state kept in memory: {(chunk, name): tensor}.

    With `device` set (a GPU), tensors are parked in host RAM and brought back to `device` on
    `get`, so GPU memory holds about one chunk's state (the release does the same with `.cpu()`).
    """

    def __init__(self, device: Optional[torch.device] = None) -> None:
        self._data: Dict[Tuple[int, str], Tensor] = {}
        self.device = torch.device(device) if device is not None else None

    def _parks(self) -> bool:
        return self.device is not None and self.device.type != "cpu"

    def put(self, chunk: int, name: str, value: Tensor) -> None:
        self._data[(chunk, name)] = value.to("cpu") if self._parks() else value

    def get(self, chunk: int, name: str) -> Tensor:
        value = self._data[(chunk, name)]
        return value.to(self.device, non_blocking=True) if self._parks() else value

    def has(self, chunk: int, name: str) -> bool:
        return (chunk, name) in self._data

    def pop(self, chunk: int, name: str) -> Tensor:
        value = self._data.pop((chunk, name))
        return value.to(self.device) if self._parks() else value

    def names(self, chunk: int) -> List[str]:
        return [n for (c, n) in self._data if c == chunk]

    def close(self, success: bool = True) -> None:
        self._data.clear()


class DiskStore:
    """Chunk state in files under a run directory; tensors come back on `device`.

    `root=None` makes a private temporary directory. `close(success=True)` deletes the directory;
    after a failure it is kept (and its path is in `root`) unless `keep_on_failure=False`.
    """

    def __init__(self, root: Optional[os.PathLike] = None, device: Optional[torch.device] = None,
                 keep_on_failure: bool = True) -> None:
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="scal3r-state-"))
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.keep_on_failure = keep_on_failure
        self._names: Dict[int, set] = {}

    def _path(self, chunk: int, name: str) -> Path:
        return self.root / f"chunk{chunk:05d}.{name}.pt"

    def put(self, chunk: int, name: str, value: Tensor) -> None:
        path = self._path(chunk, name)
        tmp = path.with_suffix(".tmp")
        torch.save(value.detach().cpu().contiguous(), tmp)
        os.replace(tmp, path)
        self._names.setdefault(chunk, set()).add(name)

    def get(self, chunk: int, name: str) -> Tensor:
        # mmap: pages are read on demand and dropped with the tensor, so RSS stays bounded.
        value = torch.load(self._path(chunk, name), map_location="cpu", weights_only=True, mmap=True)
        return value.to(self.device) if self.device is not None and self.device.type != "cpu" else value

    def has(self, chunk: int, name: str) -> bool:
        return name in self._names.get(chunk, ())

    def pop(self, chunk: int, name: str) -> Tensor:
        value = self.get(chunk, name).clone()
        self._path(chunk, name).unlink()
        self._names[chunk].discard(name)
        return value

    def names(self, chunk: int) -> List[str]:
        return sorted(self._names.get(chunk, ()))

    def close(self, success: bool = True) -> None:
        if success or not self.keep_on_failure:
            shutil.rmtree(self.root, ignore_errors=True)
