"""Trajectory metrics of the field: ATE after Umeyama alignment, RPE, KITTI odometry segment errors.

All functions take camera-to-world poses `c2w` as arrays (N, 4, 4) or (N, 3, 4) (float64 advised),
the estimate (`pred`) and the ground truth (`gt`) already associated frame by frame (row i of both
is the same frame). Positions are the camera centres `c2w[:, :3, 3]`.

Definitions (as in Sturm et al. IROS 2012 / `evo`, and the KITTI odometry devkit):

- Alignment (Umeyama 1991): the similarity (s, R, t) minimising Σ_i ‖p_gt,i − (s R p_pred,i + t)‖²
  over camera centres. `sim3` estimates all 7 DoF (monocular methods: scale is unobservable);
  `se3` fixes s = 1; `none` uses the poses as given. The aligned pose is
  [s R R_i | s R p_i + t] — rotations turn with R, positions scale and move.
- ATE (absolute trajectory error): e_i = ‖p̂_i − p_gt,i‖ after alignment; reported as the RMSE
  sqrt(mean e_i²) in metres (gt units), plus mean/median/max.
- RPE (relative pose error) for a frame step Δ: E_i = (Q_i⁻¹ Q_{i+Δ})⁻¹ (P_i⁻¹ P_{i+Δ}), Q = gt and
  P = estimate (scale-aligned first: RPE is invariant to a rigid motion of the estimate, not to
  its scale). Translation error ‖trans(E_i)‖ (metres), rotation error angle(E_i) (degrees), RMSE
  over all overlapping pairs (i, i+Δ), i = 0 … N−Δ−1 (TUM's definition; `evo --all_pairs`).
- KITTI segment errors (Geiger et al. CVPR 2012, devkit `evaluate_odometry.cpp`): from every 10th
  frame f, for each length L in 100, 200, …, 800 m of gt path, take the first frame l whose gt path
  distance from f exceeds L; E = (P_f⁻¹ P_l)⁻¹ (Q_f⁻¹ Q_l). Translation error ‖trans(E)‖ / L and
  rotation error angle(E) / L, averaged over all (f, L) segments, reported as t_rel in % (metres of
  drift per 100 m) and r_rel in degrees per 100 m. Angles here use atan2 (the devkit uses acos,
  equal up to rounding but less precise for small angles).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Literal, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError

AlignMode = Literal["sim3", "se3", "none"]
KITTI_LENGTHS = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)


@dataclass(frozen=True)
class Alignment:
    """A similarity x ↦ s R x + t. scale: float; rotation: (3, 3); translation: (3,)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @staticmethod
    def identity() -> "Alignment":
        return Alignment(1.0, np.eye(3), np.zeros(3))

    def matrix(self) -> np.ndarray:
        """(4, 4) matrix [[s R, t], [0, 1]]."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """points (N, 3) → (N, 3) float64."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def apply_poses(self, c2w: np.ndarray) -> np.ndarray:
        """c2w (N, 3|4, 4) → (N, 4, 4): rotations R R_i, centres s R p_i + t (the camera's own
        scale stays 1: a similarity of the world moves cameras, it does not resize them)."""
        c2w = as_poses(c2w)
        out = c2w.copy()
        out[:, :3, :3] = self.rotation @ c2w[:, :3, :3]
        out[:, :3, 3] = self.apply_points(c2w[:, :3, 3])
        return out


def as_poses(c2w: np.ndarray) -> np.ndarray:
    """(N, 3, 4) or (N, 4, 4) → (N, 4, 4) float64 with a [0 0 0 1] bottom row."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((3, 4), (4, 4)):
        raise InputError(f"expected poses of shape (N, 3, 4) or (N, 4, 4), got {c2w.shape}")
    out = np.zeros((c2w.shape[0], 4, 4))
    out[:, :3] = c2w[:, :3]
    out[:, 3, 3] = 1.0
    return out


def _pair(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred, gt = as_poses(pred), as_poses(gt)
    if pred.shape[0] != gt.shape[0]:
        raise InputError(f"trajectories have different lengths: {pred.shape[0]} estimated vs "
                         f"{gt.shape[0]} ground-truth poses")
    if pred.shape[0] == 0:
        raise InputError("empty trajectory")
    return pred, gt


def rotation_angle(rotations: np.ndarray) -> np.ndarray:
    """Rotation angle in radians of rotation matrices (..., 3, 3) → (...), in [0, π].

    atan2(‖axis·sinθ‖, cosθ) stays accurate for small angles, where acos((tr − 1)/2) loses half
    the digits."""
    r = np.asarray(rotations, dtype=np.float64)
    cos = (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1.0) / 2.0
    axis = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.linalg.norm(axis, axis=-1) / 2.0
    return np.arctan2(sin, cos)


def umeyama_alignment(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Alignment:
    """The similarity (s, R, t) minimising Σ ‖target_i − (s R source_i + t)‖² (Umeyama 1991).

    source, target: (N, 3) corresponding points. with_scale=False fixes s = 1 (rigid fit).
    Raises InputError when the source points are all equal (no scale or rotation is defined).
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise InputError(f"expected two (N, 3) point sets, got {x.shape} and {y.shape}")
    n = x.shape[0]
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    var_x = (xc ** 2).sum() / n
    if n < 2 or var_x <= 1e-24:
        raise InputError("cannot align trajectories: the estimated camera positions are all identical")
    cov = yc.T @ xc / n
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0  # reflection → proper rotation
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / var_x) if with_scale else 1.0
    translation = mean_y - scale * rotation @ mean_x
    return Alignment(scale, rotation, translation)


def align_trajectory(pred: np.ndarray, gt: np.ndarray, align: AlignMode = "sim3") -> Tuple[np.ndarray, Alignment]:
    """Align pred c2w (N, 3|4, 4) to gt on camera centres → (aligned pred (N, 4, 4), Alignment)."""
    pred, gt = _pair(pred, gt)
    if align == "none":
        alignment = Alignment.identity()
    elif align in ("sim3", "se3"):
        alignment = umeyama_alignment(pred[:, :3, 3], gt[:, :3, 3], with_scale=align == "sim3")
    else:
        raise InputError(f"unknown alignment {align!r} (choose sim3, se3 or none)")
    return alignment.apply_poses(pred), alignment


@dataclass
class ErrorStats:
    """Summary of per-item errors: rmse, mean, median, max (same unit as the errors), count."""

    rmse: float
    mean: float
    median: float
    max: float
    count: int

    @staticmethod
    def of(errors: np.ndarray) -> "ErrorStats":
        e = np.asarray(errors, dtype=np.float64)
        if e.size == 0:
            nan = float("nan")
            return ErrorStats(nan, nan, nan, nan, 0)
        return ErrorStats(float(np.sqrt(np.mean(e ** 2))), float(e.mean()), float(np.median(e)),
                          float(e.max()), int(e.size))


def ate_errors(pred: np.ndarray, gt: np.ndarray, align: AlignMode = "sim3") -> Tuple[np.ndarray, Alignment]:
    """Per-frame absolute position errors (N,) in gt units after alignment, and the alignment."""
    aligned, alignment = align_trajectory(pred, gt, align)
    gt = as_poses(gt)
    return np.linalg.norm(aligned[:, :3, 3] - gt[:, :3, 3], axis=1), alignment


def ate_rmse(pred: np.ndarray, gt: np.ndarray, align: AlignMode = "sim3") -> float:
    """ATE RMSE (gt units, metres for metric gt) after `align` alignment of pred to gt."""
    return ErrorStats.of(ate_errors(pred, gt, align)[0]).rmse


def relative_pose_errors(pred: np.ndarray, gt: np.ndarray, delta: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Per-pair RPE for frame step `delta`, with no alignment (scale-align pred first if needed).

    Returns (translation errors (N − Δ,) in gt units, rotation errors (N − Δ,) in degrees).
    """
    pred, gt = _pair(pred, gt)
    if delta < 1:
        raise InputError(f"RPE frame step must be ≥ 1, got {delta}")
    if pred.shape[0] <= delta:
        return np.zeros(0), np.zeros(0)
    rel_pred = np.linalg.inv(pred[:-delta]) @ pred[delta:]
    rel_gt = np.linalg.inv(gt[:-delta]) @ gt[delta:]
    err = np.linalg.inv(rel_gt) @ rel_pred
    return np.linalg.norm(err[:, :3, 3], axis=1), np.degrees(rotation_angle(err[:, :3, :3]))


def path_distances(c2w: np.ndarray) -> np.ndarray:
    """Cumulative path length (N,) along camera centres, 0 at the first frame."""
    p = as_poses(c2w)[:, :3, 3]
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])


@dataclass
class KittiSegmentErrors:
    """KITTI odometry drift. t_rel: % (m per 100 m); r_rel: degrees per 100 m; averaged over all
    segments; per_length: L → (t_rel %, r_rel °/100 m, number of segments); segments: total count.
    NaN when the gt path is shorter than the shortest length."""

    t_rel: float
    r_rel: float
    segments: int
    per_length: Dict[float, Tuple[float, float, int]] = field(default_factory=dict)


def kitti_segment_errors(pred: np.ndarray, gt: np.ndarray, lengths: Sequence[float] = KITTI_LENGTHS,
                         step_frames: int = 10) -> KittiSegmentErrors:
    """KITTI odometry segment errors of pred against gt (no alignment here; see module docstring)."""
    pred, gt = _pair(pred, gt)
    dist = path_distances(gt)
    inv_pred, inv_gt = np.linalg.inv(pred), np.linalg.inv(gt)
    t_all, r_all = [], []
    per_length = {}
    for length in lengths:
        first = np.arange(0, len(gt), step_frames)
        # First frame strictly beyond dist[f] + L (devkit: dist[i] > dist[first] + len).
        last = np.searchsorted(dist, dist[first] + length, side="right")
        ok = last < len(gt)
        first, last = first[ok], last[ok]
        if first.size == 0:
            per_length[float(length)] = (float("nan"), float("nan"), 0)
            continue
        delta_pred = inv_pred[first] @ pred[last]
        delta_gt = inv_gt[first] @ gt[last]
        err = np.linalg.inv(delta_pred) @ delta_gt
        t_err = np.linalg.norm(err[:, :3, 3], axis=1) / length
        r_err = rotation_angle(err[:, :3, :3]) / length
        t_all.append(t_err)
        r_all.append(r_err)
        per_length[float(length)] = (float(t_err.mean() * 100), float(np.degrees(r_err.mean()) * 100), int(first.size))
    if not t_all:
        return KittiSegmentErrors(float("nan"), float("nan"), 0, per_length)
    t_cat, r_cat = np.concatenate(t_all), np.concatenate(r_all)
    return KittiSegmentErrors(float(t_cat.mean() * 100), float(np.degrees(r_cat.mean()) * 100), int(t_cat.size), per_length)


@dataclass
class TrajectoryMetrics:
    """All trajectory metrics for one estimate against gt (see the module docstring)."""

    align: str
    num_poses: int
    path_length: float          # gt path length, gt units
    scale: float                # alignment scale applied to the estimate
    ate: ErrorStats             # gt units
    rpe_trans: ErrorStats       # gt units, per `rpe_delta` frames
    rpe_rot: ErrorStats         # degrees, per `rpe_delta` frames
    rpe_delta: int
    kitti: KittiSegmentErrors

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kitti"]["per_length"] = {f"{k:g}": list(v) for k, v in self.kitti.per_length.items()}
        return d


def evaluate_trajectory(pred: np.ndarray, gt: np.ndarray, align: AlignMode = "sim3", rpe_delta: int = 1,
                        kitti_lengths: Sequence[float] = KITTI_LENGTHS) -> TrajectoryMetrics:
    """Align pred to gt (`align`), then ATE, RPE (step `rpe_delta`) and KITTI segment errors.

    pred, gt: c2w (N, 3|4, 4), associated frame by frame.
    """
    pred, gt = _pair(pred, gt)
    aligned, alignment = align_trajectory(pred, gt, align)
    ate = np.linalg.norm(aligned[:, :3, 3] - gt[:, :3, 3], axis=1)
    rpe_t, rpe_r = relative_pose_errors(aligned, gt, rpe_delta)
    return TrajectoryMetrics(
        align=align, num_poses=int(len(gt)), path_length=float(path_distances(gt)[-1]),
        scale=float(alignment.scale), ate=ErrorStats.of(ate), rpe_trans=ErrorStats.of(rpe_t),
        rpe_rot=ErrorStats.of(rpe_r), rpe_delta=int(rpe_delta),
        kitti=kitti_segment_errors(aligned, gt, kitti_lengths))
