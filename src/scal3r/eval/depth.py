"""Depth-map metrics: AbsRel and δ < 1.25, with per-image median scaling.

For one image with valid pixels V (gt finite and > 0, prediction finite and > 0, optionally gt
within [min_depth, max_depth]):

- median scaling (monocular predictions have no metric scale): s = median(gt_V) / median(pred_V),
  p = s · pred (s = 1 when scaling is off)
- AbsRel = mean_V |p − gt| / gt
- δ < 1.25 = fraction of V with max(p / gt, gt / p) < 1.25

A sequence's figure is the mean of the per-image figures (the usual Eigen et al. protocol).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Tuple

import numpy as np

from scal3r.errors import InputError


@dataclass
class DepthMetrics:
    """abs_rel, delta1 (fraction): means over images; scale: mean median-scaling factor; images: count."""

    abs_rel: float
    delta1: float
    scale: float
    images: int

    def to_dict(self) -> dict:
        return asdict(self)


def depth_errors(pred: np.ndarray, gt: np.ndarray, median_scaling: bool = True, min_depth: float = 0.0,
                 max_depth: Optional[float] = None) -> Tuple[float, float, float]:
    """(AbsRel, δ<1.25, scale) of one depth map pred (H, W) against gt (H, W).

    NaN for all three when no pixel is valid. Raises InputError on a shape mismatch.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise InputError(f"depth maps differ in shape: predicted {pred.shape} vs reference {gt.shape}")
    valid = np.isfinite(gt) & (gt > min_depth) & np.isfinite(pred) & (pred > 0)
    if max_depth is not None:
        valid &= gt <= max_depth
    if not valid.any():
        nan = float("nan")
        return nan, nan, nan
    p, g = pred[valid], gt[valid]
    scale = float(np.median(g) / np.median(p)) if median_scaling else 1.0
    p = p * scale
    abs_rel = float(np.mean(np.abs(p - g) / g))
    delta1 = float(np.mean(np.maximum(p / g, g / p) < 1.25))
    return abs_rel, delta1, scale


def depth_metrics(pairs: Iterable[Tuple[np.ndarray, np.ndarray]], median_scaling: bool = True,
                  min_depth: float = 0.0, max_depth: Optional[float] = None) -> DepthMetrics:
    """Mean AbsRel / δ<1.25 over (pred (H, W), gt (H, W)) pairs; images with no valid pixel are skipped."""
    rows = [depth_errors(p, g, median_scaling, min_depth, max_depth) for p, g in pairs]
    rows = np.asarray([r for r in rows if np.isfinite(r[0])], dtype=np.float64).reshape(-1, 3)
    if rows.shape[0] == 0:
        nan = float("nan")
        return DepthMetrics(nan, nan, nan, 0)
    return DepthMetrics(float(rows[:, 0].mean()), float(rows[:, 1].mean()), float(rows[:, 2].mean()), int(rows.shape[0]))
