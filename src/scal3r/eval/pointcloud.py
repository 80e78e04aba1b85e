"""Point-cloud metrics: accuracy, completeness, Chamfer distance, precision / recall / F1.

Definitions (as in the DTU / Tanks-and-Temples / ETH3D line of benchmarks), for a predicted cloud P
and a reference cloud G, with d(x, S) the Euclidean distance from x to the nearest point of S:

- accuracy      = mean_{p∈P} d(p, G)   (how close predicted points are to the truth)
- completeness  = mean_{g∈G} d(g, P)   (how much of the truth the prediction covers)
- Chamfer       = (accuracy + completeness) / 2
- precision(τ)  = fraction of p ∈ P with d(p, G) < τ
- recall(τ)     = fraction of g ∈ G with d(g, P) < τ
- F1(τ)         = 2 · precision · recall / (precision + recall)  (0 when both are 0)

Both clouds may first be voxel-downsampled with the same voxel size, so that dense regions do not
dominate the means. Medians are reported too. Nearest neighbours use scipy's cKDTree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional, Tuple

import numpy as np
from scipy.spatial import cKDTree

from scal3r.errors import InputError


def voxel_downsample(points: np.ndarray, voxel_size: float, colors: Optional[np.ndarray] = None,
                     reduce: Literal["mean", "first"] = "mean") -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One point per occupied voxel of a grid with cell `voxel_size` anchored at the origin.

    points (N, 3), colors (N, C) or None → (M, 3) float64, (M, C) or None, M ≤ N, ordered by voxel.
    reduce="mean" gives each voxel's centroid (mean colour); "first" keeps the first input point
    that falls in it (a point that lies exactly on the sampled surface).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"expected points of shape (N, 3), got {points.shape}")
    if voxel_size <= 0:
        raise InputError(f"voxel size must be positive, got {voxel_size}")
    if points.shape[0] == 0:
        return points.copy(), None if colors is None else np.asarray(colors)[:0]
    keys = np.floor(points / voxel_size).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if reduce == "first":
        return points[first], None if colors is None else np.asarray(colors)[first]
    if reduce != "mean":
        raise InputError(f"unknown voxel reduction {reduce!r}")
    counts = np.bincount(inverse).astype(np.float64)[:, None]
    out = np.zeros((len(first), 3))
    np.add.at(out, inverse, points)
    out /= counts
    out_colors = None
    if colors is not None:
        colors = np.asarray(colors)
        acc = np.zeros((len(first), colors.shape[1]))
        np.add.at(acc, inverse, colors.astype(np.float64))
        acc /= counts
        out_colors = np.rint(acc).astype(colors.dtype) if np.issubdtype(colors.dtype, np.integer) else acc
    return out, out_colors


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance (M,) from each query point (M, 3) to its nearest reference point (N, 3)."""
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape[0] == 0:
        return np.full(len(query), np.inf)
    return cKDTree(reference).query(np.asarray(query, dtype=np.float64), k=1, workers=-1)[0]


@dataclass
class PointCloudMetrics:
    """Distances in the clouds' units (metres for metric clouds); fractions in [0, 1]."""

    accuracy: float
    completeness: float
    chamfer: float
    accuracy_median: float
    completeness_median: float
    precision: float
    recall: float
    f1: float
    threshold: float
    voxel_size: Optional[float]
    num_pred: int
    num_gt: int

    def to_dict(self) -> dict:
        return asdict(self)


# Default precision/recall distance (metres, ground-truth units) for F1, everywhere in the project:
# the synthetic worlds' reference clouds are voxelised at 0.2 m, so a smaller threshold would
# measure that grid more than the reconstruction.
F1_THRESHOLD = 0.5


def pointcloud_metrics(pred: np.ndarray, gt: np.ndarray, threshold: float,
                       voxel_size: Optional[float] = None) -> PointCloudMetrics:
    """Accuracy, completeness, Chamfer and precision/recall/F1 at `threshold` of pred (N, 3) against
    gt (M, 3), after voxel downsampling both (centroids) when `voxel_size` is given."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    for name, p in (("predicted", pred), ("reference", gt)):
        if p.ndim != 2 or p.shape[1] != 3:
            raise InputError(f"expected {name} points of shape (N, 3), got {p.shape}")
        if p.shape[0] == 0:
            raise InputError(f"the {name} point cloud is empty")
    if threshold <= 0:
        raise InputError(f"threshold must be positive, got {threshold}")
    if voxel_size is not None:
        pred = voxel_downsample(pred, voxel_size)[0]
        gt = voxel_downsample(gt, voxel_size)[0]
    d_pred = nearest_distances(pred, gt)
    d_gt = nearest_distances(gt, pred)
    accuracy, completeness = float(d_pred.mean()), float(d_gt.mean())
    precision = float(np.mean(d_pred < threshold))
    recall = float(np.mean(d_gt < threshold))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PointCloudMetrics(
        accuracy=accuracy, completeness=completeness, chamfer=(accuracy + completeness) / 2,
        accuracy_median=float(np.median(d_pred)), completeness_median=float(np.median(d_gt)),
        precision=precision, recall=recall, f1=float(f1), threshold=float(threshold),
        voxel_size=None if voxel_size is None else float(voxel_size),
        num_pred=int(len(pred)), num_gt=int(len(gt)))
