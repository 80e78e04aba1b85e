"""Resumable reconstructions: what a kept `<out>.partial/` must match to be continued.

A resumable run (`--resumable`) writes `manifest.json` into its work folder: the settings that
determine the result (every reconstruction setting except where and how it is written, plus the
weights file's size and modification time) and, once the frames are decoded, a fingerprint of the
decoded frames. `--resume` compares both before it reuses anything and refuses with one line
naming what differs. The stages it can skip are recorded in `stages`: the network pass ("network",
whose per-phase progress lives in the chunk-state journal, `scal3r.engine.state`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from scal3r.errors import InputError
from scal3r.files import atomic_write

MANIFEST = "manifest.json"
# Settings that change where or how the result is written, not what it is.
_NOT_RESULT = ("out", "overwrite", "resumable", "resume", "offload")


def settings_fingerprint(config, resolved) -> Dict[str, Any]:
    """config: ReconstructConfig; resolved: ResolvedModel → the settings a resumed run must share."""
    d = {k: v for k, v in config.to_dict().items() if k not in _NOT_RESULT}
    d["input"] = os.path.abspath(str(config.input))
    d["model"] = {"source": resolved.source, "block_size": resolved.block_size, "overlap": resolved.overlap,
                  "resolution": resolved.resolution}
    if resolved.weights is not None:
        st = os.stat(resolved.weights)
        d["model"]["weights"] = {"path": os.path.abspath(str(resolved.weights)), "bytes": st.st_size,
                                 "mtime_ns": st.st_mtime_ns}
    return json.loads(json.dumps(d, default=str))


def input_fingerprint(rgb8: np.ndarray, names: List[str]) -> str:
    """sha1 of the decoded frames (N, 3, H, W) uint8 and their names, a block of frames at a time."""
    h = hashlib.sha1(json.dumps([str(n) for n in names]).encode())
    h.update(str(tuple(rgb8.shape)).encode())
    for start in range(0, len(rgb8), 64):
        h.update(np.ascontiguousarray(rgb8[start:start + 64]).tobytes())
    return h.hexdigest()


class Manifest:
    """`work/manifest.json`: {"settings": …, "input": sha1 or None, "stages": [finished stages]}."""

    def __init__(self, work: Path, partial: Path):
        self.path = Path(work) / MANIFEST
        self.partial = partial
        self.data: Dict[str, Any] = {"settings": None, "input": None, "stages": []}

    def start(self, settings: Dict[str, Any], resume: bool) -> None:
        """Fresh: record the settings. Resume: refuse a run whose settings differ."""
        if resume:
            if not self.path.is_file():
                raise InputError(f"--resume: {self.partial} has no manifest (not left by a resumable run); delete it")
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                raise InputError(f"--resume: {self.path} is unreadable; delete {self.partial}") from None
            stored = self.data.get("settings") or {}
            differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            if differ:
                raise InputError(f"--resume: the settings differ from the interrupted run's ({', '.join(differ)}); "
                                 f"repeat its arguments, or delete {self.partial}")
        else:
            self.data = {"settings": settings, "input": None, "stages": []}
            self._save()

    def check_input(self, fingerprint: str) -> None:
        stored: Optional[str] = self.data.get("input")
        if stored is not None and stored != fingerprint:
            raise InputError(f"--resume: the input frames differ from the interrupted run's; delete {self.partial} "
                             "to start over")
        if stored is None:
            self.data["input"] = fingerprint
            self._save()

    def done(self, stage: str) -> bool:
        return stage in self.data.get("stages", [])

    def finish(self, stage: str) -> None:
        if stage not in self.data["stages"]:
            self.data["stages"].append(stage)
            self._save()

    def _save(self) -> None:
        text = json.dumps(self.data, indent=1)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
