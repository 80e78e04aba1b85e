"""Training losses (VGGT's recipe, written for chunked sequences; design.md §4b).

Per chunk, in the chunk's reference frame (the first frame fed), with ground truth divided by one
scale per chunk (the mean distance of its valid points to the origin), predictions not normalised
(the network learns to predict in that normalised frame, as VGGT):

    camera  Σ_iterations γ^(n−1−i) · (|Δt|₁ + |Δq|₁ + ½|Δfov|₁) / n        pose encoding, L1
    depth   mean_valid(c·|d̂ − d| − α log c) + mean_scales(c·|∇(d̂ − d)|)
    points  mean_valid(c·‖x̂ − x‖ − α log c) + mean_scales(c·|∇(x̂ − x)|)
    match   (correlation embedding only) cross-entropy of each cost-volume row against the true
            matching cell (bilinear soft target), frames 1…S−1, reference and previous frame
    total   λ_cam · camera + depth + points + λ_match · match
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossConfig:
    # VGGT's training config: camera weighted above the dense terms; here pose errors also drive
    # the trajectory error the project is judged on.
    camera_weight: float = 5.0
    # Later refinement iterations of the camera head count more (VGGT: 0.6).
    iteration_gamma: float = 0.6
    trans_weight: float = 1.0
    rot_weight: float = 1.0
    fov_weight: float = 0.5
    # Confidence regulariser α in c·err − α log c (VGGT: 0.2): larger α keeps confidence lower.
    conf_alpha: float = 0.2
    # Gradient (edge) term on 3 scales, as VGGT's "grad" loss.
    gradient_scales: int = 3
    # Weight of the correlation embedding's matching term. Its cost volumes get a dense, direct
    # target (which cell of the other frame a cell shows), so the features learn to match before
    # the pose head can use them; without it every from-scratch run collapsed (docs/training.md).
    match_weight: float = 1.0
    # A cell is supervised when at least this fraction of its pixels is seen in the other frame.
    match_min_coverage: float = 0.5
    # Translation residuals are clamped (VGGT: 100, in normalised units) so one broken frame
    # cannot dominate a step.
    trans_clamp: float = 100.0


def camera_loss(pose_enc_list: Tensor, gt_pose_enc: Tensor, cfg: LossConfig) -> Dict[str, Tensor]:
    """pose_enc_list (iterations, S, 9), gt_pose_enc (S, 9) → {"camera", "cam_t", "cam_r", "cam_fov",
    "cam_spread"} (the last is a detached diagnostic, `pose_spread`)."""
    n = pose_enc_list.shape[0]
    total_t = total_r = total_f = pose_enc_list.new_zeros(())
    for i in range(n):
        w = cfg.iteration_gamma ** (n - 1 - i)
        diff = (pose_enc_list[i] - gt_pose_enc).abs()
        total_t = total_t + w * diff[:, :3].clamp(max=cfg.trans_clamp).mean()
        total_r = total_r + w * diff[:, 3:7].mean()
        total_f = total_f + w * diff[:, 7:].mean()
    t, r, f = total_t / n, total_r / n, total_f / n
    return {"camera": cfg.trans_weight * t + cfg.rot_weight * r + cfg.fov_weight * f, "cam_t": t, "cam_r": r, "cam_fov": f,
            "cam_spread": pose_spread(pose_enc_list[-1], gt_pose_enc)}


def pose_spread(pose_enc: Tensor, gt_pose_enc: Tensor) -> Tensor:
    """Spread of the predicted translations over a chunk's non-reference frames / that of the
    truth (S, 9) each → () detached, for the log: ~0 is the collapse of docs/training.md (one pose
    for every frame), ~1 a head that tells the frames apart. 0 for chunks of fewer than 3 frames."""
    if pose_enc.shape[0] < 3:
        return pose_enc.new_zeros(())
    pred, true = pose_enc[1:, :3].detach().float(), gt_pose_enc[1:, :3].float()
    return pred.std(0).sum() / true.std(0).sum().clamp_min(1e-6)


def _gradient_term(residual: Tensor, mask: Tensor, conf: Tensor, scales: int) -> Tensor:
    """Mean over scales of c·|∂residual| along rows and columns where both pixels are valid.

    residual (S, H, W, C), mask (S, H, W) bool, conf (S, H, W)."""
    total = residual.new_zeros(())
    used = 0
    for s in range(scales):
        step = 2 ** s
        r, m, c = residual[:, ::step, ::step], mask[:, ::step, ::step], conf[:, ::step, ::step]
        terms = []
        for dim in (1, 2):
            n = r.shape[dim]
            if n < 2:
                continue
            d = (r.narrow(dim, 1, n - 1) - r.narrow(dim, 0, n - 1)).abs().sum(-1)
            both = m.narrow(dim, 1, n - 1) & m.narrow(dim, 0, n - 1)
            cc = 0.5 * (c.narrow(dim, 1, n - 1) + c.narrow(dim, 0, n - 1))
            if both.any():
                terms.append((cc * d)[both].mean())
        if terms:
            total = total + sum(terms) / len(terms)
            used += 1
    return total / max(used, 1)


def regression_loss(pred: Tensor, conf: Tensor, gt: Tensor, mask: Tensor, cfg: LossConfig) -> Dict[str, Tensor]:
    """Confidence-weighted regression: pred, gt (S, H, W, C), conf (S, H, W), mask (S, H, W) bool.

    Returns {"conf": mean c·err − α log c, "grad": the gradient term, "reg": mean err (for logs)}.
    """
    if not mask.any():
        zero = (pred * 0).sum() + (conf * 0).sum()
        return {"conf": zero, "grad": zero, "reg": zero.detach()}
    err = (pred - gt).norm(dim=-1)  # (S, H, W)
    c = conf[mask]
    conf_term = (c * err[mask] - cfg.conf_alpha * torch.log(c)).mean()
    grad_term = _gradient_term(pred - gt, mask, conf, cfg.gradient_scales)
    return {"conf": conf_term, "grad": grad_term, "reg": err[mask].mean().detach()}


def match_loss(logits: Tensor, match: Tensor, valid: Tensor, grid, min_coverage: float) -> Tensor:
    """Cross-entropy of a cost volume against the true matches.

    logits (S, M, M) (`scal3r.model.correlation.CostVolumes`), match (S, H, W, 2) each pixel's
    position in the other frame in [−1, 1], valid (S, H, W) bool, grid (gh, gw) with M = gh·gw.
    Per cell: the mean true position over its seen pixels, a bilinear soft target over the four
    nearest cells; frame 0 (the reference, or its own previous frame) is left out. Returns ()."""
    gh, gw = grid
    S, H, W = valid.shape
    if S < 2:
        return logits.new_zeros(())
    m = valid[1:].float()[:, None]
    pooled = lambda x: F.adaptive_avg_pool2d(x, (gh, gw))
    coverage = pooled(m)[:, 0]  # (S−1, gh, gw)
    position = pooled(match[1:].permute(0, 3, 1, 2) * m) / pooled(m).clamp_min(1e-6)  # (S−1, 2, gh, gw)
    use = (coverage >= min_coverage).reshape(S - 1, -1)
    if not use.any():
        return (logits * 0).sum()
    # Position → continuous cell index; bilinear weights on the four cells around it.
    cx = ((position[:, 0] + 1) / 2 * gw - 0.5).clamp(0, gw - 1).reshape(S - 1, -1)
    cy = ((position[:, 1] + 1) / 2 * gh - 0.5).clamp(0, gh - 1).reshape(S - 1, -1)
    x0, y0 = cx.floor().clamp(max=gw - 2).long(), cy.floor().clamp(max=gh - 2).long()
    fx, fy = cx - x0, cy - y0
    logp = logits[1:].log_softmax(dim=-1)
    loss = 0.0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        index = ((y0 + dy) * gw + (x0 + dx)).clamp(0, gh * gw - 1)
        loss = loss - w * logp.gather(-1, index[..., None])[..., 0]
    return loss[use].mean()


def chunk_loss(out: Mapping[str, Tensor], gt: Mapping[str, Tensor], cfg: LossConfig) -> Dict[str, Tensor]:
    """All terms for one chunk. `out`: `scal3r.engine.differentiable.forward_chunks` outputs;
    `gt`: "pose_enc" (S, 9), "depth" (S, H, W), "world_points" (S, H, W, 3), "valid" (S, H, W)
    (normalised, reference frame; see `scal3r.train.data.chunk_targets`), and with "cost_volumes"
    in `out` the true matches "match_ref", "match_prev" and their masks. "total" is the objective."""
    cam = camera_loss(out["pose_enc_list"], gt["pose_enc"], cfg)
    depth = regression_loss(out["depth"], out["depth_conf"], gt["depth"][..., None], gt["valid"], cfg)
    points = regression_loss(out["world_points"], out["world_points_conf"], gt["world_points"], gt["valid"], cfg)
    total = cfg.camera_weight * cam["camera"] + depth["conf"] + depth["grad"] + points["conf"] + points["grad"]
    terms = {}
    volumes = out.get("cost_volumes")
    if volumes is not None and cfg.match_weight > 0:
        match = sum(match_loss(logits, gt[f"match_{name}"], gt[f"match_{name}_valid"], volumes.grid, cfg.match_min_coverage)
                    for name, logits in (("ref", volumes.reference), ("prev", volumes.previous))) / 2
        total = total + cfg.match_weight * match
        terms["match"] = match
    terms = {"total": total, **cam, **terms}
    terms.update({f"depth_{k}": v for k, v in depth.items()})
    terms.update({f"points_{k}": v for k, v in points.items()})
    return terms
