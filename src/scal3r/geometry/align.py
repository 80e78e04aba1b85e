"""Sim(3) between two chunks from the point maps of the frames they share.

Estimator (the release's `sim3_wet`):
1. Point selection: a point is used when both confidences exceed `conf_ratio` × the smaller of the
   two medians (medians over all valid overlap pixels); its weight is √(c₁·c₂). Optionally at most
   `max_points_per_frame` points per frame, drawn with a generator seeded by the frame index so
   the result does not depend on chunk order or run.
2. Weighted Umeyama. The release's scale is the ratio of the weighted RMS spreads of the two
   centred clouds (symmetric in the two clouds, unlike Umeyama's least-squares scale, which
   shrinks towards zero when the source is noisy); the rotation is the Kabsch rotation of the
   weighted cross-covariance.
3. IRLS with Huber weights δ/‖r‖ (‖r‖ > δ), at most `irls_iters` rounds; it stops when a round no
   longer changes the estimate (and then keeps the estimate before that round, as the release does).

The result maps the SOURCE frame into the TARGET frame: p_target ≈ s·R·p_source + t.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.chunks import reference_row
from scal3r.geometry.camera import camera_rays, invert_rigid
from scal3r.geometry.sim3 import sim3_matrix, so3_log


@dataclass
class AlignConfig:
    """Settings of the robust Sim(3) between overlapping point maps."""

    # Keep points with confidence > conf_ratio × median (both sides). The release's 0.1 keeps sky
    # pixels (confidence ≈ 1 against a median of ~5–10), whose far, noisy depths then dominate the
    # spread-ratio scale; 0.5 drops them.
    conf_ratio: float = 0.5
    huber_delta: float = 0.1  # Huber threshold on the 3D residual
    # "absolute": δ in target-chunk units (release); "relative": δ × median distance of the
    # selected target points from their weighted centroid, which keeps δ meaningful for models
    # whose chunks are not normalised to unit scale.
    huber_mode: str = "absolute"
    irls_iters: int = 5
    irls_exit: float = 1e-9
    # At most this many points per frame, drawn deterministically (None: every selected point, the
    # release). 4096 keeps a 154×518 chunk pair under 0.5 s and moves the fit by ~1e-4.
    max_points_per_frame: Optional[int] = 4096
    scale_estimator: str = "rms"  # "rms" (release) or "umeyama" (least squares)
    min_points: int = 64  # fewer selected points than this: the alignment is unreliable
    float32_svd: bool = False  # the release takes the SVD of a float32 cross-covariance

    def __post_init__(self):
        if self.huber_mode not in ("absolute", "relative"):
            raise ValueError(f"huber_mode must be 'absolute' or 'relative', got {self.huber_mode!r}")
        if self.scale_estimator not in ("rms", "umeyama"):
            raise ValueError(f"scale_estimator must be 'rms' or 'umeyama', got {self.scale_estimator!r}")

    @classmethod
    def release(cls) -> "AlignConfig":
        return cls(conf_ratio=0.1, float32_svd=True, max_points_per_frame=None)


@dataclass
class Sim3Fit:
    """A robust Sim(3) fit mapping source points onto target points."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    n_points: int  # points that entered the fit
    n_frames: int  # frames those points came from
    rms_residual: float  # weighted RMS of ‖target − T(source)‖ at the estimate, target units
    median_residual: float  # median of ‖target − T(source)‖, target units
    spread: float  # weighted RMS distance of target points from their centroid, target units
    information: np.ndarray  # (7, 7) information of the estimate in the tangent (ρ, ω, σ) at the source side
    method: str = "points"  # "points" or "poses" (camera fallback when too few confident points)
    # A fixed subsample of the fit's points, for refits (geometry.drift): (src (P, 3), tar (P, 3),
    # final IRLS weights (P,), frame of each point (P,)); None for camera fallbacks.
    sample: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = None

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) [[sR, t], [0, 1]] mapping source coordinates into target coordinates."""
        return sim3_matrix(np.float64(self.scale), self.rotation, self.translation)


# ---------------------------------------------------------------------------------------------
# Estimators on point sets.


def weighted_umeyama(src: np.ndarray, tar: np.ndarray, weights: np.ndarray, scale_estimator: str = "rms",
                     float32_svd: bool = False) -> Tuple[float, np.ndarray, np.ndarray]:
    """Weighted Sim(3) with tar ≈ s·R·src + t. src, tar (n, 3); weights (n,) ≥ 0.

    Returns (s, R (3, 3), t (3,)). Raises InputError when the weights sum to ~0 or a cloud has
    no spread (all points equal), where no similarity is determined.
    """
    w_sum = float(np.sum(weights))
    if not np.isfinite(w_sum) or w_sum < 1e-6:
        raise InputError("total alignment weight too small for a Sim(3) estimate")
    # einsum rather than BLAS matmul for these skinny (n×3) products: the BLAS threads of a
    # 3-column product cost more than they save, badly so on a loaded machine.
    w = weights / w_sum
    src_c = np.einsum("n,ni->i", w, src)
    tar_c = np.einsum("n,ni->i", w, tar)
    src0 = src - src_c
    tar0 = tar - tar_c
    src_var = float(np.einsum("n,ni,ni->", w, src0, src0))
    tar_var = float(np.einsum("n,ni,ni->", w, tar0, tar0))
    # No spread relative to the points' magnitude (all points equal up to rounding).
    src_ref = float(np.einsum("n,ni,ni->", w, src, src)) + 1e-300
    tar_ref = float(np.einsum("n,ni,ni->", w, tar, tar)) + 1e-300
    if src_var <= 1e-20 * src_ref or tar_var <= 1e-20 * tar_ref:
        raise InputError("alignment points have no spread; cannot estimate a Sim(3)")
    H = np.einsum("n,ni,nj->ij", w, src0, tar0)  # (3, 3) weighted cross-covariance
    U, S, Vt = np.linalg.svd(H.astype(np.float32) if float32_svd else H)
    U, S, Vt = U.astype(np.float64), S.astype(np.float64), Vt.astype(np.float64)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    D = np.diag([1.0, 1.0, d])
    R = Vt.T @ D @ U.T
    if scale_estimator == "rms":
        s = np.sqrt(tar_var / src_var)
    else:
        s = float(S[0] + S[1] + d * S[2]) / src_var
    t = tar_c - s * R @ src_c
    return float(s), R, t


def _residual_norms(src: np.ndarray, tar: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n,) ‖tar − (s·R·src + t)‖."""
    d = tar - t - s * np.einsum("ij,nj->ni", R, src)
    return np.sqrt(np.einsum("ni,ni->n", d, d))


def _huber_weights(residual: np.ndarray, delta: float) -> np.ndarray:
    return np.where(residual > delta, delta / np.maximum(residual, 1e-300), 1.0)


def _huber_cost(residual: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(residual)
    return np.where(a <= delta, 0.5 * residual ** 2, delta * (a - 0.5 * delta))


def robust_sim3(src: np.ndarray, tar: np.ndarray, weights: np.ndarray, config: AlignConfig,
                n_frames: int = 1, frame_ids: Optional[np.ndarray] = None, sample_size: int = 1024) -> Sim3Fit:
    """IRLS-Huber weighted Sim(3) with tar ≈ s·R·src + t. src, tar (n, 3); weights (n,).

    frame_ids (n,): the frame of each point; with it the fit keeps an evenly strided subsample of
    at most `sample_size` points (`Sim3Fit.sample`).
    """
    src = np.asarray(src, dtype=np.float64)
    tar = np.asarray(tar, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    s, R, t = weighted_umeyama(src, tar, weights, config.scale_estimator, config.float32_svd)
    w_norm = weights / np.sum(weights)
    tar_c = np.einsum("n,ni->i", w_norm, tar)
    spread = float(np.sqrt(np.einsum("n,ni,ni->", w_norm, tar - tar_c, tar - tar_c)))
    delta = config.huber_delta
    if config.huber_mode == "relative":
        delta = config.huber_delta * float(np.median(np.linalg.norm(tar - tar_c, axis=1)))
    prev_error = np.inf
    for _ in range(config.irls_iters):
        res = _residual_norms(src, tar, s, R, t)
        w = weights * _huber_weights(res, delta)
        s_new, R_new, t_new = weighted_umeyama(src, tar, w, config.scale_estimator, config.float32_svd)
        t_change = abs(s_new - s) + float(np.linalg.norm(t_new - t))
        cos_angle = (np.trace(R_new @ R.T) - 1.0) / 2.0
        r_change = float(np.arccos(min(1.0, max(-1.0, cos_angle))))
        error = float(np.sum(_huber_cost(res, delta) * weights))
        # The release stops as soon as a round changes nothing (or the cost stalls) and keeps
        # the estimate from before that round.
        if (t_change < config.irls_exit and r_change < np.radians(0.1)) or \
                abs(prev_error - error) < config.irls_exit * prev_error:
            break
        prev_error = error
        s, R, t = s_new, R_new, t_new
    res = _residual_norms(src, tar, s, R, t)
    w_final = weights * _huber_weights(res, delta)
    rms = float(np.sqrt(np.sum(w_final * res ** 2) / np.sum(w_final)))
    info = _fit_information(src, w_final, s, rms, spread, n_frames)
    sample = None
    if frame_ids is not None:
        keep = np.linspace(0, src.shape[0] - 1, min(sample_size, src.shape[0])).astype(np.int64)
        sample = (src[keep], tar[keep], w_final[keep], np.asarray(frame_ids)[keep])
    return Sim3Fit(scale=s, rotation=R, translation=t, n_points=int(src.shape[0]), n_frames=n_frames,
                   rms_residual=rms, median_residual=float(np.median(res)), spread=spread, information=info,
                   sample=sample)


def _fit_information(src: np.ndarray, w: np.ndarray, s: float, rms: float, spread: float,
                     n_frames: int) -> np.ndarray:
    """(7, 7) information of the fit for a right perturbation T·exp(ξ), ξ = (ρ, ω, σ).

    A source point p moves by s·R·(ρ + ω × p + σ p); with J = [I, -p×, p] the Gauss–Newton
    information is s²·Σ wᵢ JᵢᵀJᵢ / σ_r². Network errors are correlated within a frame (a whole
    depth map is off by a smooth warp), so the points are not independent: the sum is normalised
    to the weight of `n_frames` independent observations. A floor on σ_r (1e-3 of the spread)
    keeps noise-free fits finite.
    """
    w = w / np.sum(w)
    p = src
    JtJ = np.zeros((7, 7))
    JtJ[0:3, 0:3] = np.eye(3)
    mean_p = np.einsum("n,ni->i", w, p)
    # Σ w [-p×] and Σ w p terms
    from scal3r.geometry.sim3 import hat

    JtJ[0:3, 3:6] = -hat(mean_p)
    JtJ[0:3, 6] = mean_p
    pp = np.einsum("n,ni,nj->ij", w, p, p)  # Σ w p pᵀ
    tr = np.trace(pp)
    # (-p×)ᵀ(-p×) = |p|² I - p pᵀ ; (-p×)ᵀ p = 0 ; pᵀp = |p|²
    JtJ[3:6, 3:6] = tr * np.eye(3) - pp
    JtJ[6, 6] = tr
    JtJ = np.triu(JtJ) + np.triu(JtJ, 1).T
    sigma = max(rms, 1e-3 * spread, 1e-12)
    return (s * s) * JtJ * max(n_frames, 1) / (sigma * sigma)


# ---------------------------------------------------------------------------------------------
# Point selection from chunk outputs.


@dataclass
class ChunkView:
    """One chunk's geometry in its own frame, rows in the order of `frames`.

    frames (n,) global frame index per row; w2c (n, 4, 4); K (n, 3, 3); depth (n, H, W);
    depth_conf (n, H, W); world_points (n, H, W, 3) and world_points_conf (n, H, W) optional.
    """

    frames: np.ndarray
    w2c: np.ndarray
    K: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    world_points: Optional[np.ndarray] = None
    world_points_conf: Optional[np.ndarray] = None
    usable: Optional[np.ndarray] = None  # (n,) bool: rows that may enter alignments (None: all)

    def row_of(self, frame: int) -> int:
        hit = np.nonzero(self.frames == frame)[0]
        if hit.size == 0:
            raise KeyError(frame)
        return int(hit[0])

    def points(self, row: int, source: str, pixels: Optional[np.ndarray] = None) -> np.ndarray:
        """(P, 3) points of a row in the chunk frame at flat pixel indices (all pixels if None)."""
        if source == "world_points":
            pts = np.asarray(self.world_points[row], dtype=np.float64).reshape(-1, 3)
            return pts if pixels is None else pts[pixels]
        H, W = self.depth.shape[-2:]
        d = np.asarray(self.depth[row], dtype=np.float64).reshape(-1)
        if pixels is None:
            rays = camera_rays(self.K[row], H, W).reshape(-1, 3)
        else:
            # Rays of the selected pixels only: K⁻¹ (u + 0.5, v + 0.5, 1).
            d = d[pixels]
            uv1 = np.stack([pixels % W + 0.5, pixels // W + 0.5, np.ones(len(pixels))], axis=1)
            rays = np.einsum("ij,nj->ni", np.linalg.inv(self.K[row]), uv1)
        c2w = invert_rigid(self.w2c[row])
        return np.einsum("ij,nj->ni", c2w[:3, :3], rays * d[:, None]) + c2w[:3, 3]

    def confidence(self, row: int, source: str) -> np.ndarray:
        c = self.world_points_conf if source == "world_points" else self.depth_conf
        return np.asarray(c[row], dtype=np.float64).reshape(-1)

    def valid(self, row: int, source: str) -> np.ndarray:
        """(H·W,) bool: finite positive depth (or finite point) and finite confidence, in a usable row."""
        conf = self.confidence(row, source)
        if self.usable is not None and not self.usable[row]:
            return np.zeros(conf.shape, dtype=bool)
        if source == "world_points":
            pts = np.asarray(self.world_points[row]).reshape(-1, 3)
            ok = np.all(np.isfinite(pts), axis=1)
        else:
            d = np.asarray(self.depth[row]).reshape(-1)
            ok = np.isfinite(d) & (d > 0)
        return ok & np.isfinite(conf)

    def center_weight(self, row: int) -> float:
        """How central a row is in its chunk: 1 at the reference row, → 0 at the ends."""
        n = len(self.frames)
        ref = reference_row(n)
        span = max(ref, n - 1 - ref, 1)
        return 1.0 - abs(row - ref) / (span + 1.0)


def overlap_points(target: ChunkView, source: ChunkView, frames: Sequence[int], config: AlignConfig,
                   point_source: str = "depth", frame_ids: Optional[list] = None
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Select corresponding points of shared frames. → (src (P,3), tar (P,3), weights (P,), n_frames used).

    When `frame_ids` is a list, each used frame's per-point frame indices are appended to it.
    """
    per_frame = []
    for f in frames:
        rt, rs = target.row_of(f), source.row_of(f)
        valid = target.valid(rt, point_source) & source.valid(rs, point_source)
        per_frame.append((f, rt, rs, np.nonzero(valid)[0]))
    if not per_frame:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), 0
    conf_t_all = [target.confidence(rt, point_source)[pix] for _, rt, _, pix in per_frame]
    conf_s_all = [source.confidence(rs, point_source)[pix] for _, _, rs, pix in per_frame]
    cat_t, cat_s = np.concatenate(conf_t_all), np.concatenate(conf_s_all)
    if cat_t.size == 0:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), 0
    threshold = config.conf_ratio * min(float(np.median(cat_t)), float(np.median(cat_s)))
    src_list, tar_list, w_list = [], [], []
    used_frames = 0
    for (f, rt, rs, pix), ct, cs in zip(per_frame, conf_t_all, conf_s_all):
        keep = (ct > threshold) & (cs > threshold)
        pix, ct, cs = pix[keep], ct[keep], cs[keep]
        if pix.size == 0:
            continue
        if config.max_points_per_frame is not None and pix.size > config.max_points_per_frame:
            rng = np.random.default_rng(int(f))
            pick = np.sort(rng.choice(pix.size, size=config.max_points_per_frame, replace=False))
            pix, ct, cs = pix[pick], ct[pick], cs[pick]
        src_list.append(source.points(rs, point_source, pix))
        tar_list.append(target.points(rt, point_source, pix))
        w_list.append(np.sqrt(ct * cs))
        if frame_ids is not None:
            frame_ids.append(np.full(pix.size, f, dtype=np.int64))
        used_frames += 1
    if not src_list:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), 0
    return np.concatenate(src_list), np.concatenate(tar_list), np.concatenate(w_list), used_frames


def pose_sim3(target: ChunkView, source: ChunkView, frames: Sequence[int]) -> Tuple[float, np.ndarray, np.ndarray]:
    """Sim(3) source → target from the shared frames' cameras alone (fallback without points).

    Rotation: chordal mean of R_t,c2w R_s,c2wᵀ; scale: ratio of centre spreads (needs ≥ 2 distinct
    centres), otherwise the ratio of median depths; translation: from the centroids.
    """
    c2w_t = invert_rigid(target.w2c[[target.row_of(f) for f in frames]])
    c2w_s = invert_rigid(source.w2c[[source.row_of(f) for f in frames]])
    M = np.sum(c2w_t[:, :3, :3] @ np.swapaxes(c2w_s[:, :3, :3], -1, -2), axis=0)
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0]) @ Vt
    ct, cs = c2w_t[:, :3, 3], c2w_s[:, :3, 3]
    spread_t = np.linalg.norm(ct - ct.mean(0), axis=1).mean()
    spread_s = np.linalg.norm(cs - cs.mean(0), axis=1).mean()
    if len(frames) >= 2 and spread_s > 1e-9 and spread_t > 1e-9:
        s = spread_t / spread_s
    else:
        dt = [np.nanmedian(np.where(target.depth[target.row_of(f)] > 0, target.depth[target.row_of(f)], np.nan)) for f in frames]
        ds = [np.nanmedian(np.where(source.depth[source.row_of(f)] > 0, source.depth[source.row_of(f)], np.nan)) for f in frames]
        s = float(np.nanmedian(np.array(dt) / np.array(ds)))
        if not np.isfinite(s) or s <= 0:
            raise InputError("cannot align chunks: no confident points and no usable depth in the shared frames")
    t = ct.mean(0) - s * R @ cs.mean(0)
    return float(s), R, t


def align_views(target: ChunkView, source: ChunkView, frames: Sequence[int], config: AlignConfig,
                point_source: str = "depth", label: str = "") -> Sim3Fit:
    """Robust Sim(3) mapping `source`'s frame into `target`'s frame from their shared `frames`.

    With fewer than `config.min_points` confident points it warns and falls back to the cameras
    of the shared frames (marked `method="poses"`, with a weak information so loops can correct it).
    """
    frames = list(frames)
    if not frames:
        raise InputError(f"cannot align {label or 'chunks'}: they share no frame")
    ids: list = []
    src, tar, w, used = overlap_points(target, source, frames, config, point_source, frame_ids=ids)
    if src.shape[0] >= config.min_points:
        try:
            return robust_sim3(src, tar, w, config, n_frames=used, frame_ids=np.concatenate(ids))
        except InputError as err:
            reason = str(err)
    else:
        reason = f"only {src.shape[0]} confident points (< {config.min_points})"
    warnings.warn(f"alignment of {label or 'chunks'}: {reason}; using the shared frames' cameras instead",
                  RuntimeWarning, stacklevel=2)
    s, R, t = pose_sim3(target, source, frames)
    # Weak, isotropic information: one frame's worth of an uncertain pose.
    return Sim3Fit(scale=s, rotation=R, translation=t, n_points=0, n_frames=0, rms_residual=np.nan,
                   median_residual=np.nan, spread=np.nan, information=np.eye(7) * 1e-2, method="poses")


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(so3_log(R))))
