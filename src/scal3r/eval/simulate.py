"""Realistic chunk predictions from ground truth, to test the backend without a trained network.

`simulate_chunks` turns ground truth (camera-to-world poses, intrinsics, metric depth) into what
`scal3r.engine.infer_chunks` returns: per chunk, rows in ascending frame order, `pose_enc` (n, 9),
`depth` (n, H, W, 1), `depth_conf` (n, H, W), `world_points` (n, H, W, 3), `world_points_conf`
(n, H, W), all expressed in the chunk's own frame:

- the chunk frame is its reference camera's frame (row ceil(n/2) − 1, as the network's), in units
  that make the chunk's mean depth ≈ 1 times a log-normal scale error, optionally moved by a
  further random Sim(3) (`chunk_frame="random"`, the default: the backend must not rely on it);
- each frame's pose gets rotation and translation noise; its depth map a global scale jitter,
  per-pixel noise growing with distance, and outliers; sky pixels get a far depth with low
  confidence; confidences fall with the noise level;
- `pose_enc` is consistent with the depths: `world_points` is the unprojection of the noisy depth
  with the noisy camera (plus its own small noise).
- optional drift that grows away from the reference row (heading and scale), as networks show.

That is the "shared" noise model (the default): every chunk drifts at about one common rate, the
model the backend's drift estimate assumes. `SimulationConfig(noise_model="independent")` selects
a second, independently written model (`IndependentNoise`, `_independent_prediction`) that breaks
the backend's assumptions on purpose: each chunk's own zero-mean yaw, pitch and scale drift rates
(no common rate), pose errors that random-walk away from the reference row, heavy-tailed
(Student-t in log-depth) depth errors, confidences that fall towards the top rows and with distance
(sky and far structure least trusted), and a field of view biased per chunk (the geometry of a
chunk is then not a similarity of the truth).

`road_scene` makes cheap analytic ground truth (a ground plane and box buildings along a procedural
road, ray-cast), and `simulate_descriptors` place-recognition descriptors for loop detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.chunks import reference_row
from scal3r.geometry.camera import (camera_rays, encode_pose_encoding, fov_from_intrinsics, intrinsics_from_fov,
                                    invert_rigid, unproject_depth)
from scal3r.geometry.sim3 import sim3_inverse, sim3_matrix, sim3_split, so3_exp


@dataclass
class IndependentNoise:
    """Settings of the "independent" noise model (`SimulationConfig(noise_model="independent")`).

    Each figure is what a feed-forward multi-view network (VGGT-like, 60-frame chunks) plausibly
    gets wrong, chosen from the size of the error it produces over one chunk, not from what any
    backend test needs.
    """

    # Each chunk draws its own drift rates per frame away from its reference row, zero mean and
    # independent from chunk to chunk: σ 0.01°/frame of yaw is ±0.3° at the ends of a 60-frame
    # chunk (a few tenths of a degree of relative rotation error over a chunk), pitch half that
    # (the horizon constrains it), and 0.1 %/frame of log-scale is ±3 % at the chunk ends.
    yaw_drift_deg: float = 0.01
    pitch_drift_deg: float = 0.005
    scale_drift: float = 0.001
    # Pose errors correlated along the chunk: a random walk away from the reference row with these
    # steps per frame (0.02° and 0.1 % of the mean depth: ≈0.1° and 0.5 % after 30 frames).
    rotation_walk_deg: float = 0.02
    translation_walk: float = 0.001
    # Log-depth errors Student-t with `depth_t_dof` degrees of freedom (3: heavy tails, finite
    # variance), scale 1 % near the camera growing as (1 + d / depth_t_range); per-frame depth
    # scale jitter of 0.5 %.
    depth_t_dof: float = 3.0
    depth_t_scale: float = 0.01
    depth_t_range: float = 30.0
    depth_frame_scale: float = 0.005
    # Field of view too wide by 2 % ± 1 % per chunk (networks trained on a mix of lenses bias their
    # focal estimate), the same for every frame of a chunk.
    fov_bias: float = 0.02
    fov_bias_sigma: float = 0.01
    # Confidence 1 + peak·exp(−d / conf_range)·(row factor)·(log-normal jitter): the row factor
    # rises linearly from `conf_top` at the top row to 1 at the bottom (sky and far structure sit
    # at the top); sky pixels get ~1, the floor.
    conf_peak: float = 10.0
    conf_range: float = 25.0
    conf_top: float = 0.2
    conf_jitter: float = 0.2
    points_noise: float = 0.002  # extra relative noise of world_points over the depth unprojection


@dataclass
class SimulationConfig:
    """Noise model of simulated chunk predictions. `SimulationConfig.noise_free()` keeps only the
    per-chunk frames (exact geometry in arbitrary chunk frames)."""

    chunk_frame: str = "random"  # "reference": reference camera frame; "random": plus a random Sim(3)
    chunk_scale_sigma: float = 0.3  # log-normal σ of each chunk's unit around "mean depth = 1"
    rotation_noise_deg: float = 0.05  # per-frame pose rotation noise (σ per axis)
    translation_noise: float = 0.002  # per-frame camera-centre noise, × the chunk's mean depth
    depth_scale_noise: float = 0.002  # per-frame global depth scale jitter (relative σ)
    depth_noise: float = 0.01  # per-pixel relative depth σ near the camera …
    depth_noise_range: float = 20.0  # … growing as (1 + d / range) with metric distance d
    outlier_fraction: float = 0.02  # pixels whose depth is off by a factor in [0.5, 2]
    points_noise: float = 0.002  # extra relative noise of world_points over the depth unprojection
    heading_drift_deg: float = 0.002  # heading error per frame away from the reference row …
    scale_drift: float = 0.0002  # … and relative scale error per frame, each chunk's rates drawn
    drift_jitter: float = 0.5  # as rate × (1 + jitter·N(0, 1)): mostly one sign, as a network's bias
    sky_depth: float = 200.0  # metric depth reported for pixels that hit nothing
    seed: int = 0
    # "shared": the model above (each chunk's drift near one common rate); "independent": the
    # second model (`IndependentNoise`), which uses chunk_frame, chunk_scale_sigma, sky_depth and
    # seed from here and its own settings in `independent` for everything else.
    noise_model: str = "shared"
    independent: IndependentNoise = field(default_factory=IndependentNoise)

    def __post_init__(self):
        if self.chunk_frame not in ("random", "reference"):
            raise ValueError(f"chunk_frame must be 'random' or 'reference', got {self.chunk_frame!r}")
        if self.noise_model not in ("shared", "independent"):
            raise ValueError(f"noise_model must be 'shared' or 'independent', got {self.noise_model!r}")

    @classmethod
    def noise_free(cls, seed: int = 0, chunk_frame: str = "random") -> "SimulationConfig":
        return cls(chunk_frame=chunk_frame, rotation_noise_deg=0.0, translation_noise=0.0, depth_scale_noise=0.0,
                   depth_noise=0.0, outlier_fraction=0.0, points_noise=0.0, heading_drift_deg=0.0,
                   scale_drift=0.0, seed=seed)


@dataclass
class GroundTruth:
    c2w: np.ndarray  # (N, 4, 4) camera-to-world, OpenCV axes
    K: np.ndarray  # (N, 3, 3)
    depth: np.ndarray  # (N, H, W) float32 metric z-depth, inf where nothing was hit
    colors: Optional[np.ndarray] = None  # (N, H, W, 3) float32 in [0, 1]

    @property
    def path_length(self) -> float:
        c = self.c2w[:, :3, 3]
        return float(np.sum(np.linalg.norm(np.diff(c, axis=0), axis=1)))


# ---------------------------------------------------------------------------------------------
# Chunk predictions.


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    from scal3r.geometry.camera import quat_to_rotation

    return quat_to_rotation(q)


def _chunk_prediction(frames: np.ndarray, gt_c2w: np.ndarray, gt_K: np.ndarray, gt_depth: np.ndarray,
                      config: SimulationConfig, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Predictions (numpy) for the rows `frames` in one chunk frame."""
    if config.noise_model == "independent":
        return _independent_prediction(frames, gt_c2w, gt_K, gt_depth, config, rng)
    n = len(frames)
    H, W = gt_depth.shape[-2:]
    c2w = gt_c2w[frames]
    K = np.broadcast_to(gt_K, (len(gt_c2w), 3, 3))[frames] if gt_K.ndim == 3 else np.broadcast_to(gt_K, (n, 3, 3))
    depth = gt_depth[frames].astype(np.float64)
    sky = ~np.isfinite(depth) | (depth <= 0)
    finite = depth[~sky]
    mean_depth = float(finite.mean()) if finite.size else 1.0

    # Chunk frame: the reference camera, unit = mean depth × scale error, then a random Sim(3).
    ref = reference_row(n)
    unit = mean_depth * float(np.exp(config.chunk_scale_sigma * rng.normal()))
    world_to_ref = sim3_matrix(1.0 / unit, np.eye(3), np.zeros(3)) @ invert_rigid(c2w[ref])  # world → chunk
    if config.chunk_frame == "random":
        extra = sim3_matrix(1.0, _random_rotation(rng), rng.normal(size=3))
        world_to_ref = extra @ world_to_ref
    s_w, R_w, t_w = sim3_split(world_to_ref)
    chunk_to_world = sim3_inverse(world_to_ref)

    # Poses in the chunk frame (rigid, centres in chunk units), with drift and noise.
    R_c = R_w @ c2w[:, :3, :3]
    C = (s_w * c2w[:, :3, 3] @ R_w.T) + t_w
    k = np.arange(n) - ref
    depth_scale = np.ones(n)
    heading_rate = config.heading_drift_deg * (1.0 + config.drift_jitter * rng.normal())
    scale_rate = config.scale_drift * (1.0 + config.drift_jitter * rng.normal())
    if heading_rate or scale_rate:
        # Drift grows with the distance from the reference row: the network's view of frame
        # ref+k is turned by k·heading about the reference camera's up axis and scaled by
        # (1 + scale_drift)^k about the reference camera; its depth scales with it.
        up = -(R_c[ref][:, 1])  # reference camera's −y axis
        C_ref = C[ref].copy()
        for r in range(n):
            Rd = so3_exp(up * np.radians(heading_rate) * k[r])
            f = (1.0 + scale_rate) ** k[r]
            C[r] = C_ref + f * (Rd @ (C[r] - C_ref))
            R_c[r] = Rd @ R_c[r]
            depth_scale[r] = f
    rot_sigma = np.radians(config.rotation_noise_deg)
    if rot_sigma > 0:
        R_c = so3_exp(rng.normal(scale=rot_sigma, size=(n, 3))) @ R_c
    if config.translation_noise > 0:
        C = C + rng.normal(scale=config.translation_noise * mean_depth * s_w, size=(n, 3))
    pose_c2w = np.zeros((n, 4, 4))
    pose_c2w[:, :3, :3] = R_c
    pose_c2w[:, :3, 3] = C
    pose_c2w[:, 3, 3] = 1.0
    w2c = invert_rigid(pose_c2w)

    # Depth in chunk units with noise; sky far and unconfident.
    metric = np.where(sky, config.sky_depth, depth)
    sigma_rel = config.depth_noise * (1.0 + metric / config.depth_noise_range)
    noisy = metric * (1.0 + sigma_rel * rng.normal(size=metric.shape))
    noisy *= (1.0 + config.depth_scale_noise * rng.normal(size=(n, 1, 1)))
    outliers = rng.random(size=metric.shape) < config.outlier_fraction
    noisy = np.where(outliers, noisy * np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=metric.shape)), noisy)
    noisy = np.maximum(noisy, 1e-3 * mean_depth)
    d_chunk = noisy * s_w * depth_scale[:, None, None]
    # Confidence: high near, falling with the expected noise; outliers are not flagged (a network
    # does not know its own outliers), sky is ~1 as in VGGT.
    conf = 1.0 + 10.0 / (1.0 + metric / config.depth_noise_range) * np.exp(0.1 * rng.normal(size=metric.shape))
    conf = np.where(sky, 1.0 + 0.01 * rng.random(size=metric.shape), conf)

    points = unproject_depth(d_chunk, w2c, K)
    if config.points_noise > 0:
        points = points + rng.normal(scale=config.points_noise, size=points.shape) * d_chunk[..., None]
    return {
        "pose_enc": encode_pose_encoding(w2c, K, H, W),
        "depth": d_chunk[..., None],
        "depth_conf": conf,
        "world_points": points,
        "world_points_conf": conf.copy(),
    }, chunk_to_world


def _independent_prediction(frames: np.ndarray, gt_c2w: np.ndarray, gt_K: np.ndarray, gt_depth: np.ndarray,
                            config: SimulationConfig, rng: np.random.Generator):
    """The "independent" noise model (`IndependentNoise`): predictions for the rows `frames`."""
    p = config.independent
    n = len(frames)
    H, W = gt_depth.shape[-2:]
    K_true = gt_K[frames] if gt_K.ndim == 3 else np.broadcast_to(gt_K, (n, 3, 3))
    z = gt_depth[frames].astype(np.float64)
    sky = ~(np.isfinite(z) & (z > 0))
    metric = np.where(sky, config.sky_depth, z)
    mean_depth = float(z[~sky].mean()) if np.any(~sky) else 1.0
    ref = reference_row(n)
    k = (np.arange(n) - ref).astype(np.float64)

    # The chunk's frame: its reference camera, one unit = mean depth × a log-normal error, then
    # (chunk_frame="random") a random rigid motion. chunk_from_world is a similarity.
    unit = mean_depth * float(np.exp(config.chunk_scale_sigma * rng.standard_normal()))
    chunk_from_world = sim3_matrix(1.0 / unit, np.eye(3), np.zeros(3)) @ invert_rigid(gt_c2w[frames[ref]])
    if config.chunk_frame == "random":
        chunk_from_world = sim3_matrix(1.0, _random_rotation(rng), rng.standard_normal(3)) @ chunk_from_world
    s_c, R_c, t_c = sim3_split(chunk_from_world)
    rot = R_c @ gt_c2w[frames, :3, :3]  # true camera orientations in the chunk frame
    centre = s_c * gt_c2w[frames, :3, 3] @ R_c.T + t_c

    # This chunk's own drift rates (zero mean, independent of every other chunk): row ref+k is
    # turned by k·yaw about the reference camera's up axis and k·pitch about its right axis, and
    # scaled by exp(k·scale) about the reference camera; its depth scales with it.
    yaw = np.radians(p.yaw_drift_deg) * rng.standard_normal()
    pitch = np.radians(p.pitch_drift_deg) * rng.standard_normal()
    log_scale = p.scale_drift * rng.standard_normal()
    up, right = -rot[ref][:, 1], rot[ref][:, 0]
    turn = so3_exp(k[:, None] * (yaw * up + pitch * right))  # (n, 3, 3)
    grow = np.exp(k * log_scale)
    centre = centre[ref] + grow[:, None] * np.einsum("nij,nj->ni", turn, centre - centre[ref])
    rot = turn @ rot

    # Random-walk pose errors accumulating outward from the reference row (which has none).
    def walk(sigma, shape):
        steps = sigma * rng.standard_normal((n,) + shape)
        out = np.zeros((n,) + shape)
        for r in range(ref + 1, n):
            out[r] = out[r - 1] + steps[r]
        for r in range(ref - 1, -1, -1):
            out[r] = out[r + 1] + steps[r]
        return out

    rot = so3_exp(walk(np.radians(p.rotation_walk_deg), (3,))) @ rot
    centre = centre + walk(p.translation_walk * mean_depth * s_c, (3,))
    c2w = np.zeros((n, 4, 4))
    c2w[:, :3, :3] = rot
    c2w[:, :3, 3] = centre
    c2w[:, 3, 3] = 1.0
    w2c = invert_rigid(c2w)

    # A field of view biased for the whole chunk: depth stays the network's z-depth per pixel, so
    # unprojecting it with the biased intrinsics bends the geometry.
    fov_h, fov_w = fov_from_intrinsics(K_true, H, W)
    widen = 1.0 + p.fov_bias + p.fov_bias_sigma * rng.standard_normal()
    K_pred = intrinsics_from_fov(np.clip(fov_h * widen, 1e-3, np.pi - 1e-3), np.clip(fov_w * widen, 1e-3, np.pi - 1e-3),
                                 H, W)

    # Heavy-tailed depth: Student-t in log-depth, growing with distance, and a per-frame scale.
    log_err = p.depth_t_scale * (1.0 + metric / p.depth_t_range) * rng.standard_t(p.depth_t_dof, size=metric.shape)
    log_err = log_err + p.depth_frame_scale * rng.standard_normal((n, 1, 1))
    d_chunk = metric * np.exp(log_err) * s_c * grow[:, None, None]

    # Confidence: low towards the top rows and far away, the floor on sky; it does not know the
    # heavy-tailed errors.
    row_factor = p.conf_top + (1.0 - p.conf_top) * np.arange(H, dtype=np.float64)[:, None] / max(H - 1, 1)
    conf = 1.0 + p.conf_peak * np.exp(-metric / p.conf_range) * row_factor * np.exp(
        p.conf_jitter * rng.standard_normal(metric.shape))
    conf = np.where(sky, 1.0 + 0.02 * rng.random(metric.shape), conf)

    points = unproject_depth(d_chunk, w2c, K_pred)
    if p.points_noise > 0:
        points = points + p.points_noise * d_chunk[..., None] * rng.standard_normal(points.shape)
    return {
        "pose_enc": encode_pose_encoding(w2c, K_pred, H, W),
        "depth": d_chunk[..., None],
        "depth_conf": conf,
        "world_points": points,
        "world_points_conf": conf.copy(),
    }, sim3_inverse(chunk_from_world)


def _as_torch(out: Dict[str, np.ndarray]):
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) if k != "frames"
            else torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in out.items()}


def _check_gt(c2w, K, depth):
    c2w = np.asarray(c2w, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    depth = np.asarray(depth)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise InputError(f"c2w must be (N, 4, 4), got {c2w.shape}")
    if depth.ndim != 3 or depth.shape[0] != c2w.shape[0]:
        raise InputError(f"depth must be (N, H, W) with N = {c2w.shape[0]}, got {depth.shape}")
    if K.shape not in ((3, 3), (c2w.shape[0], 3, 3)):
        raise InputError(f"K must be (3, 3) or (N, 3, 3), got {K.shape}")
    return c2w, K, depth


def simulate_chunks(c2w, K, depth, chunk_ranges: Sequence[Tuple[int, int]],
                    config: Optional[SimulationConfig] = None, as_torch: bool = True,
                    truth: Optional[List[np.ndarray]] = None) -> List[Dict]:
    """Ground truth c2w (N, 4, 4), K (3, 3) or (N, 3, 3), depth (N, H, W) → chunk outputs.

    One dict per chunk in the `infer_chunks` format (torch float32 tensors unless as_torch=False).
    Deterministic for a given `config.seed`. When `truth` is a list, each chunk's exact Sim(3)
    chunk frame → world (4, 4) is appended to it (the oracle for the backend's chunk_sim3, up to
    the world frame).
    """
    config = config or SimulationConfig()
    c2w, K, depth = _check_gt(c2w, K, depth)
    outs = []
    for b, (s, e) in enumerate(chunk_ranges):
        rng = np.random.default_rng([config.seed, b])
        out, chunk_to_world = _chunk_prediction(np.arange(int(s), int(e)), c2w, K, depth, config, rng)
        outs.append(_as_torch(out) if as_torch else out)
        if truth is not None:
            truth.append(chunk_to_world)
    return outs


def simulate_loop_chunk(frames: Sequence[int], c2w, K, depth, config: Optional[SimulationConfig] = None,
                        key: int = 0, as_torch: bool = True) -> Dict:
    """A loop chunk (the network run on `frames` as one chunk): a dict with "frames" and the chunk keys.

    The reference row of a loop chunk is its middle row like any chunk's; `key` seeds its noise.
    """
    config = config or SimulationConfig()
    c2w, K, depth = _check_gt(c2w, K, depth)
    frames = np.asarray(frames, dtype=np.int64)
    rng = np.random.default_rng([config.seed, 1_000_003, key])
    out, _ = _chunk_prediction(frames, c2w, K, depth, config, rng)
    out["frames"] = frames
    return _as_torch(out) if as_torch else out


def simulate_false_loop_chunk(frames_a: Sequence[int], frames_b: Sequence[int], c2w, K, depth,
                              config: Optional[SimulationConfig] = None, key: int = 0, as_torch: bool = True) -> Dict:
    """A loop chunk for a FALSE revisit: frames_b are predicted as if taken at frames_a's place.

    What a network produces when a place-recognition match pairs two different places that look
    alike: each end's geometry is right on its own (so each side aligns well with its chunk), but
    the second end's cameras sit on the first end's (its middle camera on the first end's middle
    camera), so the constraint between the two chunks is confidently wrong.
    """
    c2w, K, depth = _check_gt(c2w, K, depth)
    fa = np.asarray(frames_a, dtype=np.int64)
    fb = np.asarray(frames_b, dtype=np.int64)
    moved = c2w.copy()
    T = c2w[fa[len(fa) // 2]] @ invert_rigid(c2w[fb[len(fb) // 2]])
    moved[fb] = T @ c2w[fb]
    return simulate_loop_chunk(np.concatenate([fa, fb]), moved, K, depth, config, key=key, as_torch=as_torch)


# ---------------------------------------------------------------------------------------------
# Place-recognition descriptors.


def simulate_descriptors(c2w, dim: int = 512, position_scale: float = 4.0, heading_scale_deg: float = 30.0,
                         noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """(N, dim) descriptors whose cosine similarity ≈ exp(−Δp²/2ℓ² − Δψ²/2ℓ_ψ²).

    Random Fourier features of (camera position, heading) — a stand-in for an image descriptor
    that recognises a place seen again from a similar viewpoint. ℓ = `position_scale` metres,
    ℓ_ψ = `heading_scale_deg`.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pos = c2w[:, :3, 3] / position_scale
    fwd = c2w[:, :3, 2]
    heading = np.arctan2(fwd[:, 1], fwd[:, 0])
    # Heading on the circle: (cos, sin) scaled so a small Δψ gives distance Δψ / ℓ_ψ.
    lr = np.radians(heading_scale_deg)
    z = np.concatenate([pos, np.stack([np.cos(heading), np.sin(heading)], 1) / lr], axis=1)
    Wm = rng.normal(size=(z.shape[1], dim))
    phase = rng.uniform(0, 2 * np.pi, size=dim)
    feat = np.cos(z @ Wm + phase) * np.sqrt(2.0 / dim)
    feat = feat + noise * rng.normal(size=feat.shape) / np.sqrt(dim)
    return feat / np.linalg.norm(feat, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Analytic ground truth: a road with box buildings, ray-cast.


def _road_centreline(n_frames: int, spacing: float, loop: bool, rng: np.random.Generator,
                     revisit: float = 0.0) -> np.ndarray:
    """(n_frames, 2) points spaced `spacing` apart along a smooth road.

    When `loop`, the road is closed and the drive goes once round plus a fraction `revisit` of
    the loop again, so its last frames re-drive its first ones.
    """
    length = n_frames * spacing / (1.0 + revisit) if loop else n_frames * spacing
    u = np.linspace(0.0, 1.0, 20001)
    if loop:
        # A wobbly closed loop of the right length (scaled afterwards).
        a = 2 * np.pi * u
        r = 1.0 + 0.15 * np.sin(3 * a + rng.uniform(0, 6.28)) + 0.08 * np.sin(5 * a + rng.uniform(0, 6.28))
        xy = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    else:
        # An open meander heading along +x with turns.
        a = 2 * np.pi * u
        xy = np.stack([u * 3.0, 0.35 * np.sin(2.5 * a + rng.uniform(0, 6.28)) + 0.2 * np.sin(6 * a)], 1)
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    xy = xy * (length / arc[-1])
    arc = arc * (length / arc[-1])
    s = np.arange(n_frames) * spacing
    if loop:
        s = np.mod(s, length)
    return np.stack([np.interp(s, arc, xy[:, 0]), np.interp(s, arc, xy[:, 1])], 1)


def _boxes_along(centre: np.ndarray, rng: np.random.Generator, every: float = 9.0, offset: Tuple[float, float] = (7.0, 12.0)):
    """Axis-aligned boxes (B, 6) [min xyz, max xyz] and colours (B, 3) on both sides of the road."""
    seg = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    boxes, colors = [], []
    for s in np.arange(0.0, arc[-1], every):
        i = min(int(np.searchsorted(arc, s)), len(centre) - 2)
        p = centre[i]
        tang = centre[i + 1] - centre[i]
        tang = tang / (np.linalg.norm(tang) + 1e-12)
        normal = np.array([-tang[1], tang[0]])
        for side in (-1.0, 1.0):
            c = p + side * normal * rng.uniform(*offset)
            half = rng.uniform(1.5, 3.5, size=2)
            h = rng.uniform(3.0, 14.0)
            boxes.append([c[0] - half[0], c[1] - half[1], 0.0, c[0] + half[0], c[1] + half[1], h])
            colors.append(rng.uniform(0.2, 0.9, size=3))
    boxes = np.array(boxes)
    colors = np.array(colors)
    # Drop boxes that stand on the road (the curve may pass near another stretch of road).
    keep = np.ones(len(boxes), dtype=bool)
    for k, b in enumerate(boxes):
        cx = np.clip(centre[:, 0], b[0], b[3])
        cy = np.clip(centre[:, 1], b[1], b[4])
        keep[k] = np.min(np.hypot(centre[:, 0] - cx, centre[:, 1] - cy)) > 3.0
    return boxes[keep], colors[keep]


def _raycast(origin: np.ndarray, rays: np.ndarray, boxes: np.ndarray, colors: np.ndarray, max_depth: float):
    """rays (P, 3) with camera-z = 1 (so the hit parameter is z-depth) → depth (P,), colour (P, 3)."""
    P = rays.shape[0]
    depth = np.full(P, np.inf)
    col = np.tile(np.array([0.55, 0.7, 0.95]), (P, 1))  # sky
    # Ground plane z = 0 with a checker texture.
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = -origin[2] / rays[:, 2]
    ground = (rays[:, 2] < 0) & (tg > 0) & (tg < max_depth)
    depth[ground] = tg[ground]
    hit = origin + tg[ground, None] * rays[ground]
    checker = (np.floor(hit[:, 0] / 2.0) + np.floor(hit[:, 1] / 2.0)) % 2
    col[ground] = np.where(checker[:, None] > 0, 0.35, 0.45)
    if boxes.size:
        # Slab test, all rays × all boxes (per axis, to keep the reductions cheap).
        safe = np.where(np.abs(rays) < 1e-12, 1e-12, rays)
        inv = 1.0 / safe  # (P, 3)
        tnear = np.full((P, boxes.shape[0]), -np.inf)
        tfar = np.full((P, boxes.shape[0]), np.inf)
        for a in range(3):
            t1 = (boxes[None, :, a] - origin[a]) * inv[:, a:a + 1]
            t2 = (boxes[None, :, a + 3] - origin[a]) * inv[:, a:a + 1]
            np.maximum(tnear, np.minimum(t1, t2), out=tnear)
            np.minimum(tfar, np.maximum(t1, t2), out=tfar)
        ok = (tnear <= tfar) & (tnear > 0)
        tb = np.where(ok, tnear, np.inf)
        k = np.argmin(tb, axis=1)
        tmin = tb[np.arange(P), k]
        closer = (tmin < depth) & (tmin < max_depth)
        depth[closer] = tmin[closer]
        shade = 0.8 + 0.2 * np.cos(origin[2] + tmin[closer])
        col[closer] = colors[k[closer]] * np.clip(shade, 0.6, 1.0)[:, None]
    return depth, col


def road_scene(n_frames: int, loop: bool = True, height: int = 24, width: int = 32, spacing: float = 1.0,
               hfov_deg: float = 80.0, camera_height: float = 1.65, max_depth: float = 80.0,
               seed: int = 0, colors: bool = False, revisit: float = 0.1) -> GroundTruth:
    """Ground truth of a drive along a procedural road lined with box buildings.

    `loop=True`: the road is a closed loop; the drive goes round once and then re-drives the first
    `revisit` fraction of it (revisits at the end of the drive); otherwise an open meander. Frames are `spacing` metres apart; OpenCV camera axes, world z up.
    Depth is inf where a ray hits nothing within `max_depth` metres (sky).
    """
    if n_frames < 2:
        raise InputError("a drive needs at least 2 frames")
    rng = np.random.default_rng(seed)
    centre = _road_centreline(n_frames + 1, spacing, loop, rng, revisit)
    # Cameras ride on the right lane, looking along the road with a little yaw/pitch sway.
    tang = np.gradient(centre, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    normal = np.stack([-tang[:, 1], tang[:, 0]], 1)
    pos2 = centre - 1.5 * normal
    c2w = np.zeros((n_frames, 4, 4))
    up = np.array([0.0, 0.0, 1.0])
    sway = 0.02 * np.sin(np.arange(n_frames + 1) * 0.05 + rng.uniform(0, 6.28))
    for i in range(n_frames):
        yaw = np.arctan2(tang[i, 1], tang[i, 0]) + sway[i]
        pitch = -0.02 + 0.01 * sway[i]
        fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        right = np.cross(fwd, up)
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        c2w[i, :3, :3] = np.stack([right, down, fwd], 1)
        c2w[i, :3, 3] = [pos2[i, 0], pos2[i, 1], camera_height]
        c2w[i, 3, 3] = 1.0
    fx = width / 2.0 / np.tan(np.radians(hfov_deg) / 2.0)
    K = np.array([[fx, 0.0, width / 2.0], [0.0, fx, height / 2.0], [0.0, 0.0, 1.0]])
    # Buildings along the road once (the re-driven stretch of a loop sees the same ones again).
    unique = int(np.ceil((n_frames + 1) / (1.0 + revisit))) + 1 if loop else n_frames + 1
    boxes, box_colors = _boxes_along(centre[:unique], rng)
    rays_cam = camera_rays(K, height, width).reshape(-1, 3)
    depth = np.empty((n_frames, height, width), dtype=np.float32)
    cols = np.empty((n_frames, height, width, 3), dtype=np.float32) if colors else None
    centres = 0.5 * (boxes[:, 0:2] + boxes[:, 3:5])
    for i in range(n_frames):
        o = c2w[i, :3, 3]
        near = np.linalg.norm(centres - o[:2], axis=1) < max_depth + 10.0
        d, c = _raycast(o, rays_cam @ c2w[i, :3, :3].T, boxes[near], box_colors[near], max_depth)
        depth[i] = d.reshape(height, width)
        if cols is not None:
            cols[i] = c.reshape(height, width, 3)
    return GroundTruth(c2w=c2w, K=K, depth=depth, colors=cols)
