"""Evaluate a predicted sequence directory against a ground-truth directory (`scal3r eval PRED GT`).

Both directories use the layout of `scal3r.data.synthetic` (a prediction needs only some of it):

- trajectory: `poses_tum.txt` (`t tx ty tz qx qy qz qw`) or `poses_kitti.txt` (3×4 c2w rows), or
  `poses.txt` in either format. TUM on both sides is associated by timestamp (nearest within
  `max_time_diff`); otherwise row i is frame i. Either side may also be given as the file itself.
- point cloud: `scene_points.ply` for the ground truth; for the prediction the first of
  `points.ply`, `scene_points.ply`, `pointcloud.ply`, `fused.ply`, or the only `*.ply` there. The
  prediction is moved into the ground-truth frame with the trajectory alignment first (so its
  scale and placement are the trajectory's, not fitted again to the cloud).
- depth: `depth/<stem>.npy` files present on both sides, compared with per-image median scaling.

What is missing on the prediction side is skipped; a trajectory is required for point clouds (for
the alignment) unless `align="none"`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from scal3r.errors import InputError
from scal3r.eval.depth import depth_metrics
from scal3r.eval.pointcloud import pointcloud_metrics
from scal3r.eval.trajectory import KITTI_LENGTHS, AlignMode, Alignment, align_trajectory, evaluate_trajectory
from scal3r.io.ply import read_ply
from scal3r.io.trajectory import associate_timestamps, read_kitti, read_tum

PathLike = Union[str, os.PathLike]
PRED_CLOUD_NAMES = ("points.ply", "scene_points.ply", "pointcloud.ply", "fused.ply")


@dataclass(frozen=True)
class EvalOptions:
    """align: sim3 | se3 | none; threshold: precision/recall distance (gt units); voxel: optional
    downsampling of both clouds; rpe_delta: frames; max_time_diff: seconds for TUM association."""

    align: AlignMode = "sim3"
    threshold: float = 0.25
    voxel: Optional[float] = None
    rpe_delta: int = 1
    max_time_diff: float = 0.01
    kitti_lengths: Tuple[float, ...] = KITTI_LENGTHS


@dataclass
class Trajectory:
    """c2w (N, 4, 4); timestamps (N,) or None (KITTI files carry none); source file."""

    c2w: np.ndarray
    timestamps: Optional[np.ndarray]
    path: Path


def load_trajectory(location: PathLike) -> Trajectory:
    """A trajectory file, or the trajectory file of a sequence directory (see the module docstring)."""
    location = Path(location)
    if location.is_dir():
        for name in ("poses_tum.txt", "poses_kitti.txt", "poses.txt"):
            if (location / name).is_file():
                return load_trajectory(location / name)
        raise InputError(f"{location}: no poses_tum.txt, poses_kitti.txt or poses.txt")
    if not location.is_file():
        raise InputError(f"trajectory not found: {location}")
    first = next((line for line in location.read_text(encoding="utf-8").splitlines()
                  if line.strip() and not line.lstrip().startswith("#")), "")
    columns = len(first.replace(",", " ").split())
    if columns == 8:
        t, c2w = read_tum(location)
        return Trajectory(c2w, t, location)
    if columns == 12:
        return Trajectory(read_kitti(location), None, location)
    raise InputError(f"{location}: neither TUM (8 columns) nor KITTI (12 columns); found {columns}")


def associate(pred: Trajectory, gt: Trajectory, max_time_diff: float) -> Tuple[np.ndarray, np.ndarray]:
    """Index arrays (ip, ig) of the frames compared."""
    if pred.timestamps is not None and gt.timestamps is not None:
        ip, ig = associate_timestamps(pred.timestamps, gt.timestamps, max_time_diff)
        if len(ip) < 2:
            raise InputError(f"only {len(ip)} timestamps of {pred.path} and {gt.path} match within {max_time_diff} s")
        return ip, ig
    if len(pred.c2w) != len(gt.c2w):
        raise InputError(f"{pred.path} has {len(pred.c2w)} poses and {gt.path} {len(gt.c2w)}; without timestamps "
                         f"on both sides frames are matched by row, so the counts must agree")
    idx = np.arange(len(gt.c2w))
    return idx, idx


def _find_pred_cloud(pred_dir: Path) -> Optional[Path]:
    for name in PRED_CLOUD_NAMES:
        if (pred_dir / name).is_file():
            return pred_dir / name
    plys = sorted(pred_dir.glob("*.ply"))
    return plys[0] if len(plys) == 1 else None


def _resize_nearest(depth: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    h, w = depth.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int), w - 1)
    return depth[rows][:, cols]


def evaluate_sequence(pred: PathLike, gt: PathLike, options: EvalOptions = EvalOptions()) -> Dict[str, object]:
    """All metrics that both sides allow, as a JSON-ready dict with keys `trajectory`,
    `pointcloud`, `depth` (each present only when evaluated) plus `pred`, `gt`, `options`."""
    pred, gt = Path(pred), Path(gt)
    if not pred.exists():
        raise InputError(f"prediction not found: {pred}")
    if not gt.exists():
        raise InputError(f"ground truth not found: {gt}")
    result: Dict[str, object] = {"pred": str(pred), "gt": str(gt),
                                 "options": {"align": options.align, "threshold": options.threshold,
                                             "voxel": options.voxel, "rpe_delta": options.rpe_delta}}
    alignment: Optional[Alignment] = Alignment.identity() if options.align == "none" else None
    has_traj = pred.is_file() or any((pred / n).is_file() for n in ("poses_tum.txt", "poses_kitti.txt", "poses.txt"))
    if has_traj:
        p, g = load_trajectory(pred), load_trajectory(gt)
        ip, ig = associate(p, g, options.max_time_diff)
        metrics = evaluate_trajectory(p.c2w[ip], g.c2w[ig], options.align, options.rpe_delta, options.kitti_lengths)
        result["trajectory"] = {"pred_file": str(p.path), "gt_file": str(g.path), "matched": int(len(ip)),
                                **metrics.to_dict()}
        _, alignment = align_trajectory(p.c2w[ip], g.c2w[ig], options.align)
        result["alignment"] = {"scale": alignment.scale, "rotation": alignment.rotation.tolist(),
                               "translation": alignment.translation.tolist()}
    if pred.is_dir() and gt.is_dir():
        cloud = _find_pred_cloud(pred)
        if cloud is not None and (gt / "scene_points.ply").is_file():
            if alignment is None:
                raise InputError(f"{pred}: a point cloud needs a trajectory to be aligned (or --align none)")
            pc, gc = read_ply(cloud), read_ply(gt / "scene_points.ply")
            m = pointcloud_metrics(alignment.apply_points(pc.points), gc.points, options.threshold, options.voxel)
            result["pointcloud"] = {"pred_file": str(cloud), **m.to_dict()}
        pairs = _depth_pairs(pred, gt)
        if pairs:
            dm = depth_metrics(_load_depth_pairs(pairs))
            result["depth"] = dm.to_dict()
    if not any(k in result for k in ("trajectory", "pointcloud", "depth")):
        raise InputError(f"nothing to evaluate: {pred} has no trajectory, point cloud or depth maps that match {gt}")
    return result


def _depth_pairs(pred: Path, gt: Path) -> List[Tuple[Path, Path]]:
    if not (pred / "depth").is_dir() or not (gt / "depth").is_dir():
        return []
    gt_files = {f.stem: f for f in (gt / "depth").glob("*.npy")}
    return [(f, gt_files[f.stem]) for f in sorted((pred / "depth").glob("*.npy")) if f.stem in gt_files]


def _load_depth_pairs(pairs):
    # A prediction at another resolution is resampled (nearest) onto the ground-truth grid.
    for pp, gp in pairs:
        g = np.load(gp)
        p = np.load(pp)
        yield (p if p.shape == g.shape else _resize_nearest(p, g.shape)), g


def _fmt(x: object, spec: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_report(result: Dict[str, object]) -> str:
    """A plain-text table of `evaluate_sequence`'s result."""
    lines = []
    t = result.get("trajectory")
    if t:
        lines.append(f"trajectory: {t['matched']} poses, {t['path_length']:.1f} m of ground truth, "
                     f"{t['align']} alignment (scale {t['scale']:.4g})")
        ate, rt, rr, k = t["ate"], t["rpe_trans"], t["rpe_rot"], t["kitti"]
        lines += [f"  ATE RMSE          {_fmt(ate['rmse'])} m   (mean {_fmt(ate['mean'])}, max {_fmt(ate['max'])})",
                  f"  RPE trans (Δ={t['rpe_delta']})   {_fmt(rt['rmse'])} m   RMSE",
                  f"  RPE rot   (Δ={t['rpe_delta']})   {_fmt(rr['rmse'])} °   RMSE",
                  f"  KITTI t_rel       {_fmt(k['t_rel'], '.3f')} %   ({k['segments']} segments of 100…800 m)",
                  f"  KITTI r_rel       {_fmt(k['r_rel'], '.3f')} °/100 m"]
    p = result.get("pointcloud")
    if p:
        vox = f", voxel {p['voxel_size']}" if p.get("voxel_size") else ""
        lines.append(f"point cloud: {p['num_pred']} predicted vs {p['num_gt']} reference points "
                     f"(threshold {p['threshold']}{vox})")
        lines += [f"  accuracy          {_fmt(p['accuracy'])}   (median {_fmt(p['accuracy_median'])})",
                  f"  completeness      {_fmt(p['completeness'])}   (median {_fmt(p['completeness_median'])})",
                  f"  Chamfer           {_fmt(p['chamfer'])}",
                  f"  precision         {_fmt(p['precision'], '.3f')}",
                  f"  recall            {_fmt(p['recall'], '.3f')}",
                  f"  F1                {_fmt(p['f1'], '.3f')}"]
    d = result.get("depth")
    if d:
        lines.append(f"depth: {d['images']} images, median-scaled")
        lines += [f"  AbsRel            {_fmt(d['abs_rel'])}", f"  δ<1.25            {_fmt(d['delta1'], '.3f')}"]
    return "\n".join(lines)


def _json_ready(x):
    """NaN/inf → None (JSON has no NaN), numpy scalars → Python numbers, recursively."""
    if isinstance(x, dict):
        return {str(k): _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(path: PathLike, result: Dict[str, object]) -> None:
    """Write `result` as JSON via a temporary file and a rename (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_json_ready(result), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
