"""Time and peak memory per pipeline stage, for `summary.json`.

Peak host memory per stage: a daemon thread samples the resident set (`VmRSS`) every
`SAMPLE_INTERVAL_S` while a stage runs and keeps its maximum. The kernel's high-water mark is
never reset, so `ru_maxrss` (and `/usr/bin/time`, batch schedulers) still report the process's
true peak; a stage's figure can miss a spike shorter than the interval, so at the end the largest
stage figure is raised to `ru_maxrss` if that is higher. Where `/proc` is unavailable the
process-wide peak so far is reported and marked as such. CUDA peaks come from torch's allocator
statistics, reset per stage.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

_STATUS = Path("/proc/self/status")
# Allocation bursts of the pipeline (a chunk's outputs, a fusion batch) last far longer than this.
SAMPLE_INTERVAL_S = 0.05


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


class _RssSampler:
    """Max of VmRSS sampled from a daemon thread until `stop()`."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S):
        self.peak_kib = _vm_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = None
        if self.peak_kib is not None:
            self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True, name="scal3r-rss")
            self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def _sample(self) -> None:
        kib = _vm_kib("VmRSS")
        if kib is not None and (self.peak_kib is None or kib > self.peak_kib):
            self.peak_kib = kib

    def stop(self) -> Optional[int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return self.peak_kib


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
        sampler = _RssSampler()
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            sampled = sampler.stop()
            peak = sampled / 1024 if sampled is not None else process_peak_rss_mib()
            cuda = _cuda()
            self.stages.append(StageStats(
                name=name, seconds=seconds, peak_rss_mib=round(peak, 1),
                peak_rss_scope="stage" if sampled is not None else "process",
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
        """The process's peak so far: the kernel's high-water mark, at least the sampled figures."""
        peaks = [s.peak_rss_mib for s in self.stages if s.peak_rss_mib is not None]
        return round(max(peaks + [process_peak_rss_mib()]), 1)
