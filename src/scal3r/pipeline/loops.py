"""Loop detection on the input frames → loop chunks to run with the sequential chunks.

Loops are found before the network runs (from image descriptors, not network outputs) so that
loop chunks join the sequential chunks in one memory-synchronised pass, as in the release: the
memory gradient is summed over loop chunks too.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.geometry import LoopCandidate, LoopConfig, find_loop_candidates, loop_chunk_frames, thumbnail_descriptors
from scal3r.progress import ProgressFn, report


@dataclass
class LoopPlan:
    """candidates: revisit pairs kept (strongest first); frames[k]: loop chunk k's frames (ascending)."""

    candidates: List[LoopCandidate]
    frames: List[np.ndarray]


def loop_config(threshold: Optional[float] = None, min_gap: Optional[int] = None) -> LoopConfig:
    cfg = LoopConfig()
    changes = {}
    if threshold is not None:
        changes["similarity_threshold"] = float(threshold)
    if min_gap is not None:
        changes["min_frame_gap"] = int(min_gap)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def frame_descriptors(rgb8, batch: int = 256, progress: Optional[ProgressFn] = None) -> np.ndarray:
    """uint8 frames (N, 3, H, W) (torch or numpy) → (N, D) descriptors, a batch at a time so the
    float copy never exceeds `batch` frames."""
    n = int(rgb8.shape[0])
    parts = []
    for start in range(0, n, batch):
        x = rgb8[start:start + batch]
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        parts.append(thumbnail_descriptors(x.astype(np.float32) / 255.0))
        report(progress, "loop detection", min(start + batch, n), n)
    return np.concatenate(parts, axis=0)


def plan_loops(rgb8, chunk_ranges: Sequence[Tuple[int, int]], config: Optional[LoopConfig] = None,
               max_loops: int = 50, progress: Optional[ProgressFn] = None) -> LoopPlan:
    """Revisit pairs among the frames and the loop chunk of each (pairs inside one chunk are left
    out: that chunk already sees both ends)."""
    config = config or LoopConfig()
    if len(chunk_ranges) < 2 or max_loops == 0:
        return LoopPlan([], [])
    try:
        descriptors = frame_descriptors(rgb8, progress=progress)
    except InputError as err:  # frames smaller than the descriptor thumbnail
        warnings.warn(f"loop detection skipped: {err}", RuntimeWarning, stacklevel=2)
        return LoopPlan([], [])
    kept: List[LoopCandidate] = []
    frames: List[np.ndarray] = []
    for cand in find_loop_candidates(descriptors, config):
        if any(s <= cand.frame_a and cand.frame_b < e for s, e in chunk_ranges):
            continue  # a chunk already holds both ends (overlapping chunks): nothing to close
        try:
            f = loop_chunk_frames(cand, chunk_ranges, config.window)
        except InputError:
            continue
        kept.append(cand)
        frames.append(f)
        if len(kept) >= max_loops:
            break
    return LoopPlan(kept, frames)
