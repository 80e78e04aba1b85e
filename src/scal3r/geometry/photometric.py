"""Direct photometric alignment: each frame of a chunk posed against the chunk's reference frame
through the reference frame's predicted depth.

Not in the paper, where the camera head's poses are used as they come. A model trained from
scratch on a few CPU-hours (the bundled `compact` one) learns monocular depth well long before
its camera head tells the frames of a chunk apart (docs/training.md: every run's head settled on
one pose per chunk), while depth and two images fix the relative pose: warp the reference pixels,
lifted to 3D with their depth, into the other frame and find the rigid motion under which the
intensities agree (the direct image alignment of LSD-SLAM / DSO, here with the network's depth
instead of a depth the tracker estimates). The chunk's scale is the reference depth's, the same
for every frame of the chunk, which is what the backend's Sim(3) chaining expects.

Gauss–Newton on a left-multiplied increment (rotation ω, translation ν) of the world-to-camera
pose, coarse to fine over an area-downsampled pyramid, with Huber weights on the residuals (what
occlusions, specular changes and depth errors produce is heavy-tailed), times the reference
depth's confidence, and with an affine exposure change per frame (gain and offset, solved with the
pose as in DSO: cameras adapt their exposure while driving in and out of shade). Each frame starts from the best (lowest robust photometric cost, on the pixels
all candidates keep in view) of the head's pose, the pose solved for the frame nearest to it in
time and that neighbour's pose moved on at constant velocity, so a frame far from the reference
starts near the answer.

Shapes: images (S, 3, H, W) in [0, 1], fed order (row 0 = the reference); depth (S, H, W);
intrinsics K (3, 3) in pixels of that image size (pixel i's centre at i + 0.5, as everywhere in
`scal3r.geometry`); poses world(reference)-to-camera (S, 4, 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


# Fewer reference pixels with a positive, finite depth than this and a chunk keeps the head's
# poses: 8 unknowns (6 of pose, 2 of exposure) need several times as many constraints.
MIN_PIXELS = 64


@dataclass(frozen=True)
class PhotometricConfig:
    # Downsampling factors, coarse to fine: 4× gives a ~40×25 image at the bundled model's 168×98,
    # whose basin covers the 5–20 px motions between frames of a training-sized chunk.
    levels: Tuple[int, ...] = (4, 2, 1)
    iterations: int = 20  # Gauss–Newton steps per level at most (most levels stop after 3–10)
    # Huber threshold in robust standard deviations of the residual (1.345: 95 % efficiency
    # under Gaussian noise, the usual choice).
    huber: float = 1.345
    # Reference pixels whose depth confidence is below this fraction of the frame's median are
    # left out (sky and far background, where a monocular depth is a guess).
    min_confidence_ratio: float = 0.5
    # Solve a gain and offset of each frame's intensities with its pose (False: brightness constancy).
    exposure: bool = True
    # Stop a level when the step is below this (radians, and reference-depth units: the depth is
    # normalised to ~1, so 1e-4 is a tenth of a millimetre at 1 m); smaller steps change nothing
    # measurable (4 rendered chunks: 0.5–2.6 % of the motion at 1e-4 and at 1e-6, 35 % less time).
    tolerance: float = 1e-4


def _hat(v: Tensor) -> Tensor:
    """(3,) → (3, 3) cross-product matrix."""
    zero = v.new_zeros(())
    return torch.stack([torch.stack([zero, -v[2], v[1]]), torch.stack([v[2], zero, -v[0]]),
                        torch.stack([-v[1], v[0], zero])])


def _grey(image: Tensor) -> Tensor:
    """(3, H, W) → (1, 1, H, W) luma."""
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None, None]


def _with_gradients(grey: Tensor) -> Tensor:
    """(1, 1, h, w) → (1, 3, h, w): intensity and its central differences along x and y (zero at
    the border), sampled together at the warped positions."""
    gx, gy = torch.zeros_like(grey), torch.zeros_like(grey)
    gx[..., 1:-1] = (grey[..., 2:] - grey[..., :-2]) / 2
    gy[..., 1:-1, :] = (grey[..., 2:, :] - grey[..., :-2, :]) / 2
    return torch.cat([grey, gx, gy], dim=1)


class _Level:
    """One pyramid level of the reference: its 3D points, intensities and weights."""

    def __init__(self, grey: Tensor, depth: Tensor, weight: Tensor, K: Tensor, factor: int):
        H, W = depth.shape
        h, w = max(H // factor, 1), max(W // factor, 1)
        self.factor = factor
        self.size = (H, W)
        intensity = F.interpolate(grey, size=(h, w), mode="area").reshape(-1)
        d = F.interpolate(depth[None, None], size=(h, w), mode="area").reshape(-1)
        wt = F.interpolate(weight[None, None], size=(h, w), mode="area").reshape(-1)
        v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype), torch.arange(w, dtype=depth.dtype), indexing="ij")
        # Pixel centres of this level in full-resolution image coordinates, in the geometry's
        # convention (scal3r.geometry.camera: pixel i spans [i, i + 1], its centre at i + 0.5).
        u = (u.reshape(-1) + 0.5) * (W / w)
        v = (v.reshape(-1) + 0.5) * (H / h)
        keep = (d > 0) & torch.isfinite(d) & (wt > 0)
        self.points = torch.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], dim=-1)[keep]
        self.intensity = intensity[keep]
        self.weight = wt[keep]
        self.shape = (h, w)

    def target(self, grey: Tensor) -> Tensor:
        return _with_gradients(F.interpolate(grey, size=self.shape, mode="area"))


def _residuals(level: _Level, target: Tensor, K: Tensor, R: Tensor, t: Tensor, jacobian: bool,
               brightness: Tuple[float, float] = (0.0, 0.0)):
    """Photometric residuals of the reference points warped by (R, t) into `target`
    ((1, 3, h, w) from `_Level.target`), the target's intensities mapped by the affine exposure
    change exp(α)·I + β, brightness = (α, β) → (r (N,), inside (N,) bool, J (N, 8) or None:
    columns ω, ν, α, β)."""
    H, W = level.size
    X = level.points @ R.T + t
    z = X[:, 2].clamp_min(1e-6)
    u = K[0, 0] * X[:, 0] / z + K[0, 2]
    v = K[1, 1] * X[:, 1] / z + K[1, 2]
    grid = torch.stack([u / W * 2 - 1, v / H * 2 - 1], dim=-1)
    sample = F.grid_sample(target, grid[None, None], mode="bilinear", align_corners=False)[0, :, 0]
    gain = math.exp(brightness[0])
    r = gain * sample[0] + brightness[1] - level.intensity
    inside = (grid.abs() < 1).all(dim=-1) & (X[:, 2] > 1e-6)
    if not jacobian:
        return r, inside, None
    h, w = level.shape
    # Gradients per pixel of this level → per full-resolution pixel.
    gu, gv = gain * sample[1] * (w / W), gain * sample[2] * (h / H)
    fx, fy = K[0, 0], K[1, 1]
    zero = torch.zeros_like(z)
    du = torch.stack([fx / z, zero, -fx * X[:, 0] / z ** 2], dim=-1)
    dv = torch.stack([zero, fy / z, -fy * X[:, 1] / z ** 2], dim=-1)
    g = gu[:, None] * du + gv[:, None] * dv  # ∂r/∂X (N, 3)
    # X' = exp(ω^) X + ν: ∂X'/∂ω = −[X]×, so ∂r/∂ω = X × g.
    exposure = torch.stack([gain * sample[0], torch.ones_like(z)], dim=-1)
    return r, inside, torch.cat([torch.cross(X, g, dim=-1), g, exposure], dim=-1)


def _robust_scale(r: Tensor) -> Tensor:
    """Robust standard deviation of residuals (1.4826 × the median absolute value)."""
    return 1.4826 * r.abs().median() + 1e-6


def _huber_weights(r: Tensor, threshold: float) -> Tensor:
    return 1.0 / torch.clamp(r.abs() / (threshold * _robust_scale(r)), min=1.0)


def _best_start(level: _Level, target: Tensor, K: Tensor, starts, threshold: float, brightness):
    """The starting pose (R, t) of lowest robust photometric cost, counted on the reference pixels
    that every start keeps inside the frame (a start cannot win by pushing pixels out of view, nor
    lose because forward motion does)."""
    residuals = [_residuals(level, target, K, R, t, jacobian=False, brightness=brightness) for R, t in starts]
    common = torch.stack([inside for _, inside, _ in residuals]).all(dim=0)
    if not common.any():
        return starts[0]
    costs = []
    for r, _, _ in residuals:
        a = r[common].abs()
        costs.append(float((level.weight[common] * a.clamp_max(threshold * _robust_scale(a))).mean()))
    return starts[min(range(len(starts)), key=costs.__getitem__)]


def align_frame(levels: Sequence[_Level], frame_grey: Tensor, K: Tensor, R: Tensor, t: Tensor,
                cfg: PhotometricConfig, brightness: Tuple[float, float] = (0.0, 0.0)):
    """Gauss–Newton from (R, t) and the exposure change `brightness` over the pyramid → the refined
    (R, t) (reference → frame) and brightness (α, β)."""
    eye = torch.eye(8, dtype=R.dtype)
    alpha, beta = brightness
    for level in levels:
        target = level.target(frame_grey)
        for _ in range(cfg.iterations):
            r, inside, J = _residuals(level, target, K, R, t, jacobian=True, brightness=(alpha, beta))
            if int(inside.sum()) < 8:
                break
            r, J, wt = r[inside], J[inside], level.weight[inside]
            if not cfg.exposure:
                J = torch.cat([J[:, :6], torch.zeros_like(J[:, 6:])], dim=1)  # α, β stay 0 (damped)
            wt = wt * _huber_weights(r, cfg.huber)
            A = (J * wt[:, None]).T @ J
            b = (J * wt[:, None]).T @ r
            # Levenberg damping relative to the system's own scale keeps a flat direction (a
            # textureless frame) from taking a huge step.
            step = -torch.linalg.solve(A + 1e-6 * A.diagonal().mean() * eye, b)
            if not torch.isfinite(step).all():
                break
            rotation = torch.matrix_exp(_hat(step[:3]))
            R, t = rotation @ R, rotation @ t + step[3:6]
            alpha, beta = alpha + float(step[6]), beta + float(step[7])
            if float(step[:6].norm()) < cfg.tolerance:
                break
    return R, t, (alpha, beta)


def refine_chunk_poses(images: Tensor, depth: Tensor, w2c: Tensor, K: Tensor,
                       confidence: Optional[Tensor] = None, frames: Optional[Sequence[int]] = None,
                       cfg: PhotometricConfig = PhotometricConfig(), anchor: int = 0) -> Tensor:
    """Poses of a chunk's frames against its reference by direct alignment.

    images (S, 3, H, W) in [0, 1], row 0 the reference; depth (S, H, W) (only the anchor's row is
    used); w2c (S, 4, 4) the head's reference-to-camera poses (starting points); K (3, 3) pixels;
    confidence (S, H, W) the depth confidence (the anchor's row used) or None; frames (S,) the rows'
    frame indices or times, several rows may share one (to start each frame from its nearest
    solved neighbour in time; default: row order); anchor: the row every frame is aligned against
    (default the reference; a loop chunk's revisit frame keeps both ends near it), its depth
    setting the translations' unit.
    Returns (S, 4, 4) float32 reference-to-camera, row 0 the identity; `w2c` unchanged (with a
    warning) when the intrinsics are degenerate or the anchor has too few pixels with a usable
    depth to align on (e.g. an untrained network's zero field of view or non-positive depth)."""
    images, depth, w2c, K = images.float(), depth.float(), w2c.float(), K.float()
    if not (torch.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        warnings.warn("photometric pose refinement skipped for a chunk: degenerate intrinsics "
                      f"(fx {float(K[0, 0]):.3g}, fy {float(K[1, 1]):.3g}); the head's poses are kept")
        return w2c
    S = images.shape[0]
    frames = list(frames) if frames is not None else list(range(S))
    weight = torch.ones_like(depth[anchor])
    if confidence is not None:
        c = confidence[anchor].float()
        weight = torch.where(c >= cfg.min_confidence_ratio * c.median(), c / c.median().clamp_min(1e-12),
                             torch.zeros_like(c))
    reference = _grey(images[anchor])
    levels = [_Level(reference, depth[anchor], weight, K, f) for f in cfg.levels]
    finest = levels[-1]
    if finest.points.shape[0] < MIN_PIXELS:
        warnings.warn(f"photometric pose refinement skipped for a chunk: {finest.points.shape[0]} reference pixels "
                      "with a usable depth; the head's poses are kept")
        return w2c
    # The head's poses as starting points, relative to the anchor (against the reference they
    # are used as predicted, the reference's own predicted pose included).
    head = w2c if anchor == 0 else w2c @ torch.linalg.inv(w2c[anchor])
    out = head.clone()
    out[anchor] = torch.eye(4)
    solved = {anchor}
    exposure = {anchor: (0.0, 0.0)}
    # Nearest in time to the anchor first, so each frame can start from a solved neighbour.
    for row in sorted((r for r in range(S) if r != anchor), key=lambda i: abs(frames[i] - frames[anchor])):
        grey = _grey(images[row])
        target = finest.target(grey)
        neighbour = min(solved, key=lambda j: abs(frames[j] - frames[row]))
        starts = [(head[row, :3, :3], head[row, :3, 3]), (out[neighbour, :3, :3], out[neighbour, :3, 3])]
        # Constant velocity: the neighbour's motion from the solved frame as far before it.
        behind = [j for j in solved if frames[j] == 2 * frames[neighbour] - frames[row]]
        if behind:
            moved = out[neighbour] @ torch.linalg.inv(out[behind[0]]) @ out[neighbour]
            starts.append((moved[:3, :3], moved[:3, 3]))
        R, t = _best_start(finest, target, K, starts, cfg.huber, exposure[neighbour])
        R, t, exposure[row] = align_frame(levels, grey, K, R.clone(), t.clone(), cfg, exposure[neighbour])
        out[row, :3, :3], out[row, :3, 3] = R, t
        solved.add(row)
    out = out @ torch.linalg.inv(out[0])  # anchor → camera into reference → camera (exact for anchor 0)
    out[0] = torch.eye(4)
    return out


def refine_pose_encoding(images: Tensor, pose_enc: Tensor, depth: Tensor, confidence: Optional[Tensor] = None,
                         frames: Optional[Sequence[int]] = None, K: Optional[Tensor] = None,
                         cfg: PhotometricConfig = PhotometricConfig(), anchor: int = 0) -> Tensor:
    """A chunk's network outputs with the poses refined by `refine_chunk_poses`.

    images (S, 3, H, W) in [0, 1] (uint8 is scaled), fed order; pose_enc (S, 9); depth (S, H, W)
    or (S, H, W, 1); confidence (S, H, W) or None; K (3, 3) known intrinsics at this size, else the
    reference row's predicted field of view; anchor: the row aligned against (`refine_chunk_poses`).
    Returns (S, 9) float32: translation and rotation replaced, the fields of view as predicted."""
    from scal3r.geometry.camera import decode_pose_encoding_torch, rotation_to_quat

    if images.dtype == torch.uint8:
        images = images.float() / 255
    if depth.ndim == 4:
        depth = depth[..., 0]
    H, W = images.shape[-2:]
    pose_enc = pose_enc.float()
    w2c, K_pred = decode_pose_encoding_torch(pose_enc, H, W)
    K = K.float() if K is not None else K_pred[0]
    refined = refine_chunk_poses(images, depth, w2c, K, confidence, frames, cfg, anchor)
    out = pose_enc.clone()
    out[:, :3] = refined[:, :3, 3]
    out[:, 3:7] = torch.from_numpy(rotation_to_quat(refined[:, :3, :3].double().numpy())).float()
    return out

