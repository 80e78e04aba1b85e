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
   between the two chunks, with checks that reject implausible ones: the loop chunk's own evidence
   (each side's fit residual against the run's sequential fits, its scale against the pair scales)
   and, below, its agreement with the sequential chain.
5. `chain_consistency`: a χ² gate of each loop against what the sequential chain alone predicts.

Chain-consistency gate (false-loop rejection without a majority of true loops)
-----------------------------------------------------------------------------
A vote among loops (the pose graph's robust kernel) cannot decide between one true and one false
loop: each is as consistent with the graph as the other. Each loop is therefore judged on its
own against the one thing every loop must agree with, the chain of sequential alignments between
its two chunks, with the uncertainty that chain has accumulated between them.

Notation: the loop joins chunks a < b; Z_k (k = a … b−1) is the sequential fit mapping chunk k+1
into chunk k, Z_L the loop's measurement (chunk b into chunk a). The chain predicts
    P = Z_a Z_{a+1} ⋯ Z_{b−1},    Q_k = Z_{k+1} ⋯ Z_{b−1}  (Q_{b−1} = I),
and the statistic is built on the 7-dof residual r = log(Z_L⁻¹ P) ∈ R⁷ (ρ, ω, σ), at chunk b.

Error model — the one the pose graph already uses (posegraph's edges, geometry.drift): each
measurement is the truth up to a right perturbation made of its own fit noise ε (covariance Σ =
its alignment's information⁻¹, from the fit's points and residuals) plus the effect of the
network's drift: chunk c predicts its row ref+k moved by exp(k·d_c) in its canonical frame, with a
drift rate d_c ∈ R⁷ per row, and a fit between chunks c and c' is off by J d_c + J' d_c', with J, J'
its drift Jacobians with respect to each chunk's rate (geometry.drift, by refitting the fit's own
point sample with the rate undone in one chunk). The loop chunk L is a chunk of its own with its
own rate. So
    X_{k,k+1} = Z_k exp(ε_k + Jᵗ_k d_k + Jˢ_k d_{k+1}),
    X_ab      = Z_L exp(ε_L + Jᵃ_L d_a + Jᵇ_L d_b + Jᴸ_L d_L).
If the loop is true, X_ab = X_{a,a+1} ⋯ X_{b−1,b}; to first order (Z exp(ξ) Q = Z Q exp(Ad(Q⁻¹) ξ)),
with Ad_k = Ad(Q_k⁻¹),
    r ≈ ε_L − Σ_k Ad_k ε_k + Σ_c B_c d_c,
    B_c = [c = a] Jᵃ_L + [c = b] Jᵇ_L − [c < b] Ad_c Jᵗ_c − [c > a] Ad_{c−1} Jˢ_{c−1}  (c = a … b),
    B_L = Jᴸ_L.
Drift prior: every chunk's rate is N(0, Σ_d), and the rates of two chunks are correlated by an
unknown ρ ∈ [0, 1]: d_c = √ρ d̄ + √(1−ρ) δ_c with d̄ (common to all chunks) and the δ_c (each
chunk's own) independent N(0, Σ_d). ρ = 1 is a drift common to all chunks (one sign, a bias: the
chain's error grows with the number of chunks), ρ = 0 drift independent from chunk to chunk (it
grows with its square root, but in directions a common rate cannot produce: a heading error early
on undone by one later leaves a position error with no net rotation). Then r ~ N(0, Σ_r(ρ)),
    Σ_r(ρ) = Σ_L + Σ_k Ad_k Σ_k Ad_kᵀ + ρ A Σ_d Aᵀ + (1 − ρ) Σ_c B_c Σ_d B_cᵀ,
    A = Σ_c B_c  (c = a … b, L),
and χ²(ρ) = rᵀ Σ_r(ρ)⁻¹ r is χ²-distributed with 7 degrees of freedom at the true ρ. The gate
takes χ² = min over ρ ∈ [0, 1] of χ²(ρ) (a convex function of ρ: X ↦ rᵀX⁻¹r is convex and Σ_r is
affine in ρ): it is ≤ χ²(ρ_true), so whatever the network's ρ, a true loop exceeds the threshold
no more often than the quantile says. The loop is rejected when χ² exceeds the χ²₇ quantile
`gate_quantile` (default 99.9 %: 24.32): a true loop that fits the model is lost at most once in
a thousand, and a false loop is kept only when it agrees with the chain to within ~√24.3 ≈ 4.9
standard deviations of the chain's own uncertainty in every direction.

The drift terms are what make the gate usable: the fit noise alone is far too small for a chain
(a network's drift is systematic and invisible in the fits' residuals), and a gate on it would
reject true loops: on simulated 330-frame drives (10 chunks) a true loop's χ² is 70–360 on fit
noise alone and 1–6 with the drift terms. Σ_d is the backend's drift prior
(`BackendConfig.drift_sigma`: the size of a network's drift rate per row; how much of it is
common to all chunks is not known and differs between networks, hence the minimum over ρ).

Limits. The gate has no power against a false loop that is consistent with the chain: one
between two places whose true relative pose differs from the claimed one by less than ~5σ of the
chain's accumulated drift (a near-miss next to a true revisit, or a false loop between nearby
chunks of a badly drifting chain). Such a loop passes and is left to the pose graph's robust
kernel, which can outvote it only when other loops disagree; alone, it can make the result worse
than no loop by up to about that ~5σ. A prior larger than the network's real drift widens that
window; one smaller than it loses true loops. Measured in simulation (330 frames, a false loop
claiming a place 3–25 m short of the true revisit): 3 m near-misses pass, 6 m ones pass or not
(χ² 22–44), 10 m and more are rejected; the ones that passed still beat no loop there.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.geometry.camera import as_numpy
from scal3r.geometry.sim3 import sim3_adjoint, sim3_inverse, sim3_log

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
    # Chain-consistency gate (module docstring): reject a loop whose χ² against the sequential
    # chain exceeds this quantile of χ²₇. 0.999: a loop that fits the error model is lost once in a
    # thousand (losing a true loop costs its correction; keeping a false one can cost more than
    # all the chain's drift, as in the 11 m vs 6 m case that motivated the gate). None: no gate
    # (the release).
    gate_quantile: Optional[float] = 0.999

    def __post_init__(self):
        if self.gate_quantile is not None and not (0.0 < self.gate_quantile <= 1.0):
            raise ValueError(f"gate_quantile must be in (0, 1] or None, got {self.gate_quantile!r}")

    def gate_threshold(self) -> float:
        """The χ²₇ value at `gate_quantile` (inf when there is no gate)."""
        if self.gate_quantile is None or self.gate_quantile >= 1.0:
            return float("inf")
        from scipy.stats import chi2

        return float(chi2.ppf(self.gate_quantile, 7))


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
    # The descriptors stay as given (float32 from `thumbnail_descriptors`, 4 KiB a frame); rows
    # become unit float64 a block at a time (the same numbers as normalising them all at once).
    d = descriptors if isinstance(descriptors, np.ndarray) else as_numpy(descriptors, dtype=None)
    if d.ndim != 2:
        raise InputError(f"descriptors must be (N, D), got shape {d.shape}")

    def unit(rows: np.ndarray) -> np.ndarray:
        x = as_numpy(rows, dtype=np.float64)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

    n = d.shape[0]
    if n < 2:
        return []
    k = min(config.top_k + 1, n)
    pairs = {}
    # Blocked similarity: a block of rows against all frames, the columns a block at a time, so
    # that neither an N×N matrix nor a float64 copy of all descriptors is ever held (a few
    # rows × N similarities at most: memory does not grow with the square of the video).
    # Powers of two (≤ 1024, the block of earlier versions): BLAS treats a block's last few rows
    # (beyond its register tile) differently, so blocks that divide 1024 give the same numbers.
    rows_per_block = 1 << max(4, min(10, ((1 << 20) // n).bit_length() - 1))
    cols_per_block = 1024
    for start in range(0, n, rows_per_block):
        block = unit(d[start:start + rows_per_block])
        if block.shape[0] == n:
            sim = block @ block.T  # one block (≤ 1024 frames): numpy's symmetric product, as before
        elif n <= cols_per_block:
            sim = block @ unit(d).T
        else:
            sim = np.empty((block.shape[0], n))
            for c in range(0, n, cols_per_block):
                sim[:, c:c + cols_per_block] = block @ unit(d[c:c + cols_per_block]).T
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


def loop_chunk_times(candidate: LoopCandidate, frames: Sequence[int]) -> np.ndarray:
    """(n,) a loop chunk's frames on one time line that joins its two ends at the revisit.

    The end holding `frame_a` is shifted by `frame_b - frame_a`, so `frame_a` falls on `frame_b`:
    the candidate says the two were taken from about the same place, so per-frame work that starts
    each frame from its nearest neighbour in time (the photometric pose refinement) starts the
    first frame of the far end from its revisit partner, not from a frame a whole drive away.
    """
    f = np.asarray(frames, dtype=np.int64)
    lower, upper = split_loop_ends(f)
    holding_a = lower if candidate.frame_a in lower else upper
    return np.where(np.isin(f, holding_a), f + (candidate.frame_b - candidate.frame_a), f)


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
    chi2: float = float("nan")  # chain-consistency χ² (7 dof) of the loop against the sequential chain
    chi2_threshold: float = float("nan")  # the gate's χ²₇ quantile it was compared with


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


def chain_consistency(loop_measurement: np.ndarray, loop_information: np.ndarray,
                      loop_drift_maps: Tuple[np.ndarray, np.ndarray, np.ndarray],
                      chain_measurements: Sequence[np.ndarray], chain_informations: Sequence[np.ndarray],
                      chain_drift_maps: Sequence[Tuple[np.ndarray, np.ndarray]], drift_covariance: np.ndarray
                      ) -> Tuple[float, np.ndarray, np.ndarray]:
    """χ² of a loop against the chain of sequential constraints between its two chunks a < b.

    loop_measurement Z_L (4, 4) maps chunk b into chunk a, with information (7, 7) at b and drift
    maps (Jᵃ_L, Jᵇ_L, Jᴸ_L) (each 7 × n_d: the loop's response to chunk a's, chunk b's and the
    loop chunk's own drift rate); chain_measurements Z_a … Z_{b−1} (each chunk k+1 → chunk k) with
    their informations (at k+1) and drift maps (Jᵗ_k, Jˢ_k) (response to the rate of chunk k, the
    target, and of chunk k+1, the source); drift_covariance Σ_d (n_d, n_d).
    → (χ² = min over ρ ∈ [0, 1] of χ²(ρ), residual r = log(Z_L⁻¹ Z_a ⋯ Z_{b−1}) (7,), its covariance
    Σ_r(ρ) (7, 7) at the minimising ρ); see the module docstring for the model. Informations are
    inverted as pseudo-inverses (a direction a fit does not observe gets no variance from it, not
    an infinite one)."""
    n = len(chain_measurements)
    if n == 0 or len(chain_informations) != n or len(chain_drift_maps) != n:
        raise InputError("a chain needs one measurement, information and drift map per sequential edge")
    Sd = np.atleast_2d(np.asarray(drift_covariance, dtype=np.float64))
    J_a, J_b, J_L = (np.asarray(J, dtype=np.float64) for J in loop_drift_maps)
    # B[c] for the chunks a … b (index c − a), then the loop chunk's own.
    B = [np.zeros_like(J_a) for _ in range(n + 1)]
    B[0] = B[0] + J_a
    B[n] = B[n] + J_b
    cov = np.linalg.pinv(0.5 * (loop_information + loop_information.T), hermitian=True)
    Q = np.eye(4)  # Q_k = Z_{k+1} ⋯ Z_{b−1}, built from the end of the chain
    for i in range(n - 1, -1, -1):
        Z, info, (J_t, J_s) = chain_measurements[i], chain_informations[i], chain_drift_maps[i]
        Ad = sim3_adjoint(sim3_inverse(Q))
        cov = cov + Ad @ np.linalg.pinv(0.5 * (info + info.T), hermitian=True) @ Ad.T
        B[i] = B[i] - Ad @ J_t
        B[i + 1] = B[i + 1] - Ad @ J_s
        Q = Z @ Q
    B.append(J_L)
    A = np.sum(B, axis=0)
    shared = A @ Sd @ A.T
    own = sum(Bc @ Sd @ Bc.T for Bc in B)
    P = np.eye(4)
    for Z in chain_measurements:
        P = P @ Z
    r = sim3_log(sim3_inverse(loop_measurement) @ P)

    def cov_at(rho):
        c = cov + rho * shared + (1.0 - rho) * own
        return 0.5 * (c + c.T)

    def chi2_at(rho):
        return float(r @ np.linalg.solve(cov_at(rho), r))

    # χ²(ρ) is convex on [0, 1]: a bounded scalar search, and both ends.
    from scipy.optimize import minimize_scalar

    best = minimize_scalar(chi2_at, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-4})
    rho, chi2 = min(((0.0, chi2_at(0.0)), (1.0, chi2_at(1.0)), (float(best.x), float(best.fun))), key=lambda t: t[1])
    cov = cov_at(rho)
    return chi2, r, cov
