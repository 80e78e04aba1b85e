"""Keep freed host memory for reuse while the chunk loop runs (glibc only; a no-op elsewhere).

Every op of the network allocates its output afresh: on CPU, tensors of a few MB to tens of MB
(attention and MLP activations, memory-unit hidden states, DPT feature maps). glibc serves
allocations above its mmap threshold with fresh `mmap`s and gives freed heap tops back to the OS
above its trim threshold, so the next op's output is paged in (and zeroed) by the kernel again:
measured on the release-sized benchmark (`benchmarks/official_speed.py`, 1 thread) between a few
thousand and 1.5 M minor page faults and up to 2.4 s of system time per 18 s forward of 60 frames,
varying from run to run with where glibc's adaptive thresholds happen to stand. Inside
`retained_heap()` allocations up to 32 MiB (glibc's largest mmap threshold) come from the heap and
freed memory stays there for the next op: the page faults drop to 20–50 k and the system time to
~0.05 s on every run, and the numbers are bit for bit the same. Measured (1 thread, cold single
runs, same machine): 60 frames 19.5 → 18.3 s, 120 frames 43–45 → 38–42 s, 240 frames 88 → 82 s.
Peak RSS moves with where glibc places the long-lived chunk state among the temporaries, both ways:
948 → 928 MiB at 60 frames, 1134–1141 → 1238–1281 at 120, 1849 → 1701 at 240 (no growth with the
number of chunks).

On exit the trim threshold goes back to 64 MiB, the value glibc's adaptive rule reaches after the
first large allocation anyway, so glibc trims the heap top again as usual (no explicit
`malloc_trim`: measured, trimming at exit costs the next call ~100 k page faults to grow the heap
again); the mmap threshold stays at 32 MiB (glibc's adaptive rule stops once a threshold is set
explicitly). Set `SCAL3R_RETAIN_HEAP=0` to leave the allocator alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from typing import Iterator, Optional

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the largest it accepts
_TRIM_WHILE_RUNNING = 2**31 - 1  # mallopt's largest value (2 GiB): the heap top stays while the loop runs
_TRIM_AFTER = 64 << 20  # 2 × the mmap threshold, as glibc's adaptive rule sets it

_lock = threading.Lock()
_depth = 0
_libc: Optional[ctypes.CDLL] = None
_probed = False


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _probed
    if not _probed:
        _probed = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.gnu_get_libc_version  # only glibc has it (musl, macOS: no-op)
            lib.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            lib.mallopt.restype = ctypes.c_int
            _libc = lib
        except (OSError, AttributeError, TypeError):
            _libc = None
    return _libc


@contextlib.contextmanager
def retained_heap() -> Iterator[None]:
    """Within the block, freed host memory is kept for reuse instead of being returned to the OS."""
    global _depth
    lib = _glibc() if os.environ.get("SCAL3R_RETAIN_HEAP", "1") != "0" else None
    if lib is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            lib.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            lib.mallopt(_M_TRIM_THRESHOLD, _TRIM_WHILE_RUNNING)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
