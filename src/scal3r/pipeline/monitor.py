"""Time and peak memory per pipeline stage, for `summary.json`.

Peak host memory per stage: on Linux, writing "5" to /proc/self/clear_refs resets the process's
peak resident set (VmHWM), so each stage reads its own peak exactly, with no sampling thread. Where
that is not possible, the process-wide peak so far (`ru_maxrss`) is reported and marked as such.
CUDA peaks come from torch's allocator statistics, reset per stage.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class StageStats:
    name: str
    seconds: float
    peak_rss_mib: Optional[float]
    peak_rss_scope: str  # "stage" (reset per stage) or "process" (peak since the process started)
    peak_cuda_mib: Optional[float] = None
    items: Optional[int] = None  # frames, chunks, ... the stage processed (for rates)


def _vm_kib(key: str) -> Optional[int]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def current_rss_mib() -> Optional[float]:
    kib = _vm_kib("VmRSS")
    return None if kib is None else kib / 1024


def process_peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _cuda():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


@dataclass
class StageMonitor:
    """`with monitor.stage("network"): ...` records the stage's wall time and peak memory."""

    stages: List[StageStats] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str, items: Optional[int] = None) -> Iterator[None]:
        scoped = _reset_peak_rss() and _vm_kib("VmHWM") is not None
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            hwm = _vm_kib("VmHWM") if scoped else None
            peak = hwm / 1024 if hwm is not None else process_peak_rss_mib()
            cuda = _cuda()
            self.stages.append(StageStats(
                name=name, seconds=seconds, peak_rss_mib=round(peak, 1),
                peak_rss_scope="stage" if hwm is not None else "process",
                peak_cuda_mib=None if cuda is None else round(cuda.max_memory_allocated() / 2**20, 1),
                items=items))

    def set_items(self, name: str, items: int) -> None:
        for s in self.stages:
            if s.name == name:
                s.items = items

    def to_dict(self) -> Dict[str, dict]:
        return {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self.stages}

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def peak_rss_mib(self) -> Optional[float]:
        peaks = [s.peak_rss_mib for s in self.stages if s.peak_rss_mib is not None]
        return max(peaks) if peaks else None
