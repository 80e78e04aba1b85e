"""Where chunk state lives between layers.

The layer-synchronous loop touches every chunk once per layer, so each chunk's tokens (and the head
features collected so far) must be kept somewhere in between:

- `MemoryStore` keeps them as they are (RAM or device memory): fastest, memory grows with the
  number of chunks.
- `DiskStore` writes them to files in a run directory and memory-maps them back, so resident memory
  is about one chunk's state whatever the sequence length (the release's host-RAM limit at ~2,000
  frames came from keeping everything resident).

Both keep a journal (`progress`): per chunk, the last phase of the chunk loop it finished, and the
memory layers whose fast weights are stored. A `DiskStore` writes it to `progress.json` after
every phase (atomically), so a run that dies can be resumed from the last finished phase of every
chunk (`DiskStore(root, resume=True)`; see `scal3r.engine.runner.run_chunks`).
"""

from __future__ import annotations

import json
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

    resumed = False

    def __init__(self, device: Optional[torch.device] = None) -> None:
        self._data: Dict[Tuple[int, str], Tensor] = {}
        self.device = torch.device(device) if device is not None else None
        self.progress = Progress()

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

    def delete(self, chunk: int, name: str) -> None:
        self._data.pop((chunk, name), None)

    def names(self, chunk: int) -> List[str]:
        return [n for (c, n) in self._data if c == chunk]

    def close(self, success: bool = True) -> None:
        self._data.clear()

    def commit(self) -> None:
        """Nothing to persist in memory."""


class Progress:
    """The chunk loop's journal: `done[chunk]` = index of the last finished phase (−1: none) and
    `fast` = the memory layers whose fast weights are stored (all of them: shared, or every chunk's own)."""

    def __init__(self, done: Optional[Dict[int, int]] = None, fast: Optional[List[int]] = None, signature: str = ""):
        self.done: Dict[int, int] = dict(done or {})
        self.fast: List[int] = list(fast or [])
        self.signature = signature  # what the phases were computed for (chunks, model): resume refuses others

    def phase(self, chunk: int) -> int:
        return self.done.get(chunk, -1)

    def to_json(self) -> str:
        return json.dumps({"done": {str(k): v for k, v in sorted(self.done.items())}, "fast": self.fast,
                           "signature": self.signature})

    @classmethod
    def from_json(cls, text: str) -> "Progress":
        d = json.loads(text)
        return cls({int(k): int(v) for k, v in d.get("done", {}).items()}, d.get("fast", []), d.get("signature", ""))


class DiskStore:
    """Chunk state in files under a run directory; tensors come back on `device`.

    `root=None` makes a private temporary directory. `close(success=True)` deletes the directory;
    after a failure it is kept (and its path is in `root`) unless `keep_on_failure=False`.
    `resume=True` reopens the state a failed run left in `root` (its files and `progress.json`);
    `remove_on_success=False` leaves the directory to its owner (a resumable pipeline removes it
    only once the whole reconstruction is written).
    """

    def __init__(self, root: Optional[os.PathLike] = None, device: Optional[torch.device] = None,
                 keep_on_failure: bool = True, resume: bool = False, remove_on_success: bool = True) -> None:
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="scal3r-state-"))
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.keep_on_failure = keep_on_failure
        self.remove_on_success = remove_on_success
        self._names: Dict[int, set] = {}
        self.progress = Progress()
        self.resumed = False
        journal = self.root / "progress.json"
        if resume and journal.is_file():
            self.progress = Progress.from_json(journal.read_text())
            for path in self.root.glob("chunk*.pt"):
                chunk, name = path.name[len("chunk"):-len(".pt")].split(".", 1)
                self._names.setdefault(-1 if chunk == "-shared" else int(chunk), set()).add(name)
            for leftover in self.root.glob("*.tmp"):  # a write the failure interrupted
                leftover.unlink()
            self.resumed = True

    def _path(self, chunk: int, name: str) -> Path:
        # Chunk −1 holds what all chunks share (the synchronised fast weights).
        return self.root / (f"chunk{chunk:05d}.{name}.pt" if chunk >= 0 else f"chunk-shared.{name}.pt")

    def commit(self) -> None:
        """Write the journal (atomically): the state on disk is consistent up to it."""
        path = self.root / "progress.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.progress.to_json())
        os.replace(tmp, path)

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

    def delete(self, chunk: int, name: str) -> None:
        self._path(chunk, name).unlink(missing_ok=True)
        self._names.get(chunk, set()).discard(name)

    def names(self, chunk: int) -> List[str]:
        return sorted(self._names.get(chunk, ()))

    def close(self, success: bool = True) -> None:
        if (success and self.remove_on_success) or (not success and not self.keep_on_failure):
            shutil.rmtree(self.root, ignore_errors=True)
