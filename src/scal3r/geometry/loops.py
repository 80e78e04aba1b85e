"""Loop closure: frame descriptors → revisit candidates → loop chunks → loop constraints.

The flow (the release's, with VGGT-Long's detector settings as defaults):
1. A global descriptor per frame (any `DescriptorFn`: the default `thumbnail_descriptors` needs no
   weights; a model's pooled patch features or a SALAD network plug in the same way).
2. `find_loop_candidates`: for every frame its top-k most similar frames by cosine similarity,
   kept above a threshold and at least `min_frame_gap` frames apart, then non-maximum
   suppression so one revisit gives one pair.
3. `loop_chunk_frames`: the frames around both ends of a pair (a window of `window` frames at
   each end, kept inside the chunk that holds that end). The pipeline runs the network on them as
   one extra chunk, whose outputs come back as a loop dict.
4. `loop_constraint`: that loop chunk's Sim(3) to the chunk of each end, composed into a Sim(3)
   between the two chunks, with checks that reject implausible ones.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.geometry.camera import as_numpy
from scal3r.geometry.sim3 import sim3_adjoint, sim3_inverse

# A descriptor function maps images (n, 3, H, W) in [0, 1] to descriptors (n, D); rows need not
# be normalised (candidates use cosine similarity).
DescriptorFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class LoopConfig:
    """Loop detection and loop-constraint acceptance settings."""

    similarity_threshold: float = 0.92  # cosine similarity (release fallback detector: 0.92; SALAD: 0.7)
    top_k: int = 5
    min_frame_gap: int = 10  # |i − j| must exceed this
    nms_window: int = 25  # frames suppressed around each accepted pair's ends
    window: int = 10  # frames taken on each side of a loop end (release loop_size 20 → 10)
    # Constraint checks.
    # A side's robust RMS residual / point spread may exceed neither this …
    max_residual_ratio: float = 0.1
    residual_factor: float = 3.0  # … nor this × the median of the sequential alignments (the larger)
    # A side's scale vs the median sequential-pair scale: at most this factor, or 4σ of the
    # pair scales' log-spread when that is larger (chunk units that vary from chunk to chunk).
    max_scale_ratio: float = 3.0
    min_points: int = 256


def thumbnail_descriptors(images, size: Tuple[int, int] = (32, 32)) -> np.ndarray:
    """Images (n, 3, H, W) or (n, H, W, 3) in [0, 1] → (n, size[0]·size[1]) unit descriptors.

    Grayscale thumbnails (area-averaged), mean-removed and L2-normalised: the release's fallback
    detector, which needs no weights. Good for exact revisits at similar viewpoints only.
    """
    x = as_numpy(images, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"images must be (n, 3, H, W) or (n, H, W, 3), got shape {x.shape}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = np.moveaxis(x, -1, 1)
    gray = x.mean(axis=1)  # (n, H, W)
    n, H, W = gray.shape
    th, tw = size
    # Area averaging onto the thumbnail grid (crop the remainder).
    gh, gw = H // th, W // tw
    if gh == 0 or gw == 0:
        raise InputError(f"images ({H}×{W}) are smaller than the descriptor thumbnail {th}×{tw}")
    g = gray[:, : gh * th, : gw * tw].reshape(n, th, gh, tw, gw).mean(axis=(2, 4)).reshape(n, -1)
    g = g - g.mean(axis=1, keepdims=True)
    return g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8)


@dataclass
class LoopCandidate:
    frame_a: int  # the earlier frame
    frame_b: int  # the later frame
    similarity: float


def find_loop_candidates(descriptors, config: Optional[LoopConfig] = None) -> List[LoopCandidate]:
    """(N, D) descriptors → revisit pairs, strongest first, after non-maximum suppression."""
    config = config or LoopConfig()
    d = as_numpy(descriptors, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"descriptors must be (N, D), got shape {d.shape}")
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)
    n = d.shape[0]
    if n < 2:
        return []
    k = min(config.top_k + 1, n)
    pairs = {}
    # Blocked similarity so that 5000 frames do not need an N×N matrix at once.
    for start in range(0, n, 1024):
        sim = d[start:start + 1024] @ d.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for r in range(sim.shape[0]):
            i = start + r
            for j in idx[r]:
                s = float(sim[r, j])
                if j != i and s > config.similarity_threshold and abs(i - int(j)) > config.min_frame_gap:
                    key = (min(i, int(j)), max(i, int(j)))
                    pairs[key] = max(pairs.get(key, -np.inf), s)
    ordered = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    return _loop_nms([LoopCandidate(a, b, s) for (a, b), s in ordered], config.nms_window)


def _loop_nms(candidates: List[LoopCandidate], window: int) -> List[LoopCandidate]:
    """Keep the strongest pair and suppress pairs with an end within `window` frames of its ends."""
    if window <= 0:
        return candidates
    kept: List[LoopCandidate] = []
    for c in candidates:
        if any(abs(c.frame_a - k.frame_a) <= window or abs(c.frame_b - k.frame_b) <= window
               or abs(c.frame_a - k.frame_b) <= window or abs(c.frame_b - k.frame_a) <= window for k in kept):
            continue
        kept.append(c)
    return kept


def chunk_of_frame(frame: int, chunk_ranges: Sequence[Tuple[int, int]]) -> int:
    """Index of the last chunk whose range holds `frame` (ranges sorted by start)."""
    starts = [int(s) for s, _ in chunk_ranges]
    pos = bisect.bisect_right(starts, frame) - 1
    if pos < 0 or not (chunk_ranges[pos][0] <= frame < chunk_ranges[pos][1]):
        raise InputError(f"frame {frame} is in no chunk")
    return pos


def _window_in_chunk(frame: int, chunk: Tuple[int, int], half: int) -> Tuple[int, int]:
    start, end = int(chunk[0]), int(chunk[1])
    lo, hi = frame - half, frame + half
    if lo < start:
        lo, hi = start, min(end, start + 2 * half)
    elif hi > end:
        lo, hi = max(start, end - 2 * half), end
    return lo, hi


def loop_chunk_frames(candidate: LoopCandidate, chunk_ranges: Sequence[Tuple[int, int]],
                      window: int = 10) -> np.ndarray:
    """(n,) frames of the loop chunk for a pair: `window` frames each side of both ends.

    Each end's window stays inside the chunk that holds that end, so the loop chunk shares its
    frames with exactly one chunk per end. Raises InputError when both ends are in one chunk.
    """
    ca = chunk_of_frame(candidate.frame_a, chunk_ranges)
    cb = chunk_of_frame(candidate.frame_b, chunk_ranges)
    if ca == cb:
        raise InputError(f"loop ({candidate.frame_a}, {candidate.frame_b}) lies inside chunk {ca}")
    a0, a1 = _window_in_chunk(candidate.frame_a, chunk_ranges[ca], window)
    b0, b1 = _window_in_chunk(candidate.frame_b, chunk_ranges[cb], window)
    frames = list(range(a0, a1)) + [f for f in range(b0, b1) if f >= a1]
    return np.array(frames, dtype=np.int64)


def split_loop_ends(frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Split a loop chunk's frames into its two ends at the largest gap between sorted frames."""
    f = np.sort(np.asarray(frames, dtype=np.int64))
    if f.size < 2:
        raise InputError("a loop chunk needs frames at two ends")
    gaps = np.diff(f)
    cut = int(np.argmax(gaps)) + 1
    return f[:cut], f[cut:]


@dataclass
class LoopReport:
    """What happened to one loop chunk."""

    index: int  # position in the `loops` list
    frames: Tuple[int, int]  # (first frame of end A, first frame of end B)
    chunks: Tuple[int, int]  # (chunk of end A, chunk of end B), −1 when unknown
    accepted: bool
    reason: str = ""  # why it was rejected
    scale: float = float("nan")  # scale of the constraint (chunk B → chunk A)
    residual_ratio: float = float("nan")  # worst side's robust RMS residual / spread
    weight: float = float("nan")  # robust-kernel weight in the pose graph


def compose_loop_constraint(T_loop_to_a: np.ndarray, T_loop_to_b: np.ndarray, info_a: np.ndarray,
                            info_b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Loop chunk L's Sim(3)s into chunks a and b → (Z (4, 4) mapping b into a, information at b).

    Z = T_{L→a} T_{L→b}⁻¹. With right perturbations ξ_a, ξ_b of the two fits,
    Z' ≈ Z exp(Adj(T_{L→b}) (ξ_a − ξ_b)), so Cov_Z = Adj (Σ_a + Σ_b) Adjᵀ at chunk b.
    """
    Z = T_loop_to_a @ sim3_inverse(T_loop_to_b)
    cov = np.linalg.pinv(info_a, hermitian=True) + np.linalg.pinv(info_b, hermitian=True)
    A = sim3_adjoint(T_loop_to_b)
    cov_z = A @ cov @ A.T
    info = np.linalg.pinv(0.5 * (cov_z + cov_z.T), hermitian=True)
    return Z, 0.5 * (info + info.T)
