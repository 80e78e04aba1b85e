"""Evaluate a predicted sequence directory against a ground-truth directory (`scal3r eval PRED GT`).

The ground truth uses the layout of `scal3r.data.synthetic`; the prediction that layout or the
output folder of `scal3r reconstruct` (a prediction needs only some of it):

- trajectory: `poses_tum.txt` / `trajectory_tum.txt` (`t tx ty tz qx qy qz qw`) or
  `poses_kitti.txt` / `trajectory_kitti.txt` (3×4 c2w rows), or `poses.txt` in either format.
  Frames are matched, in this order of preference: through the prediction's `frames.txt`
  (`index source_index name timestamp`, as `scal3r reconstruct` writes it: row i is ground-truth
  frame source_index); by timestamp when both sides are TUM (nearest within `max_time_diff`);
  else row i is frame i. Either side may also be given as the trajectory file itself.
- point cloud: `scene_points.ply` for the ground truth; for the prediction the first of
  `points.ply`, `scene_points.ply`, `pointcloud.ply`, `fused.ply`, or the only `*.ply` there. The
  prediction is moved into the ground-truth frame with the trajectory alignment first (so its
  scale and placement are the trajectory's, not fitted again to the cloud).
- depth: `depth/*.npy` of the same frames on both sides (matched as the trajectory rows are),
  compared with per-image median scaling; a prediction of another size with the same aspect
  ratio is resampled (nearest) onto the ground-truth grid, one of another aspect is skipped.

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
from scal3r.eval.pointcloud import F1_THRESHOLD, pointcloud_metrics
from scal3r.eval.trajectory import KITTI_LENGTHS, AlignMode, Alignment, align_trajectory, evaluate_trajectory
from scal3r.io.ply import read_ply
from scal3r.io.trajectory import associate_timestamps, read_kitti, read_tum

PathLike = Union[str, os.PathLike]
PRED_CLOUD_NAMES = ("points.ply", "scene_points.ply", "pointcloud.ply", "fused.ply")
TRAJECTORY_NAMES = ("poses_tum.txt", "poses_kitti.txt", "trajectory_tum.txt", "trajectory_kitti.txt", "poses.txt")


@dataclass(frozen=True)
class EvalOptions:
    """align: sim3 | se3 | none; threshold: precision/recall distance (gt units); voxel: optional
    downsampling of both clouds; rpe_delta: frames; max_time_diff: seconds for TUM association."""

    align: AlignMode = "sim3"
    threshold: float = F1_THRESHOLD
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
        for name in TRAJECTORY_NAMES:
            if (location / name).is_file():
                return load_trajectory(location / name)
        raise InputError(f"{location}: no trajectory ({', '.join(TRAJECTORY_NAMES)})")
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


def read_source_indices(pred_dir: Path) -> Optional[np.ndarray]:
    """The `source_index` column (N,) of a prediction's frames.txt, or None without one."""
    path = pred_dir / "frames.txt"
    if not path.is_file():
        return None
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            rows.append(int(parts[1]))
        except (IndexError, ValueError):
            raise InputError(f"{path}:{lineno}: expected `index source_index name timestamp`") from None
    return np.asarray(rows, dtype=np.int64)


# Below this fraction of the predicted poses matched, timestamp association is not trusted (the
# two files' clocks are not comparable, e.g. frame numbers against seconds).
MIN_MATCHED_FRACTION = 0.5


def _frame_numbers(t: np.ndarray, n_gt: int) -> bool:
    """Timestamps that are frame numbers of the ground truth: integers inside [0, n_gt)."""
    return bool(len(t) and np.all(np.abs(t - np.round(t)) < 1e-6) and t.min() >= 0 and t.max() < n_gt)


def associate(pred: Trajectory, gt: Trajectory, max_time_diff: float,
              source_indices: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, str]:
    """Index arrays (ip, ig) of the frames compared and how they were matched (see the module
    docstring for the rules). Timestamps that match fewer than `MIN_MATCHED_FRACTION` of the
    predicted poses fall back to frame numbers when the predicted ones are integers naming
    ground-truth frames (what `scal3r reconstruct` writes without real timestamps), else refuse."""
    ip, ig, how = _associate(pred, gt, max_time_diff, source_indices)
    if len(ip) < len(pred.c2w):
        import warnings

        warnings.warn(f"{len(pred.c2w) - len(ip)} of {len(pred.c2w)} predicted poses have no ground-truth "
                      f"match ({how}); they are left out", RuntimeWarning, stacklevel=2)
    return ip, ig, how


def _associate(pred, gt, max_time_diff, source_indices):
    if source_indices is not None:
        if len(source_indices) != len(pred.c2w):
            raise InputError(f"frames.txt lists {len(source_indices)} frames but {pred.path} has {len(pred.c2w)} poses")
        ok = (source_indices >= 0) & (source_indices < len(gt.c2w))
        if not ok.all():
            raise InputError(f"frames.txt names source frames up to {source_indices.max()}, but {gt.path} has "
                             f"only {len(gt.c2w)} poses")
        return np.arange(len(pred.c2w)), source_indices, "frames.txt source indices"
    if pred.timestamps is not None and gt.timestamps is not None:
        ip, ig = associate_timestamps(pred.timestamps, gt.timestamps, max_time_diff)
        if len(ip) >= max(2, MIN_MATCHED_FRACTION * len(pred.c2w)):
            return ip, ig, f"timestamps within {max_time_diff} s"
        if _frame_numbers(pred.timestamps, len(gt.c2w)):
            idx = np.round(pred.timestamps).astype(np.int64)
            return np.arange(len(pred.c2w)), idx, "predicted timestamps read as ground-truth frame numbers"
        raise InputError(f"only {len(ip)} of {len(pred.c2w)} timestamps of {pred.path} match {gt.path} within "
                         f"{max_time_diff} s (need {MIN_MATCHED_FRACTION:.0%}); are both in seconds?")
    if len(pred.c2w) != len(gt.c2w):
        raise InputError(f"{pred.path} has {len(pred.c2w)} poses and {gt.path} {len(gt.c2w)}; without timestamps "
                         f"on both sides frames are matched by row, so the counts must agree")
    idx = np.arange(len(gt.c2w))
    return idx, idx, "row i is frame i"


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
    sources = read_source_indices(pred) if pred.is_dir() else None
    has_traj = pred.is_file() or any((pred / n).is_file() for n in TRAJECTORY_NAMES)
    if has_traj:
        p, g = load_trajectory(pred), load_trajectory(gt)
        ip, ig, how = associate(p, g, options.max_time_diff, sources)
        metrics = evaluate_trajectory(p.c2w[ip], g.c2w[ig], options.align, options.rpe_delta, options.kitti_lengths)
        result["trajectory"] = {"pred_file": str(p.path), "gt_file": str(g.path), "matched": int(len(ip)),
                                "pred_poses": int(len(p.c2w)), "gt_poses": int(len(g.c2w)), "association": how,
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
        pairs = _depth_pairs(pred, gt, sources)
        if pairs:
            skipped: List[str] = []
            dm = depth_metrics(_load_depth_pairs(pairs, skipped))
            result["depth"] = dm.to_dict()
            if skipped:
                result["depth"]["skipped"] = skipped
    if not any(k in result for k in ("trajectory", "pointcloud", "depth")):
        raise InputError(f"nothing to evaluate: {pred} has no trajectory, point cloud or depth maps that match {gt}")
    return result


def _depth_pairs(pred: Path, gt: Path, sources: Optional[np.ndarray]) -> List[Tuple[Path, Path]]:
    """(predicted, ground-truth) depth files of the same frames: by frames.txt, else by file name."""
    if not (pred / "depth").is_dir() or not (gt / "depth").is_dir():
        return []
    gt_files = sorted((gt / "depth").glob("*.npy"))
    pred_files = sorted((pred / "depth").glob("*.npy"))
    if sources is not None:
        return [(pred_files[i], gt_files[s]) for i, s in enumerate(sources) if i < len(pred_files) and s < len(gt_files)]
    by_stem = {f.stem: f for f in gt_files}
    return [(f, by_stem[f.stem]) for f in pred_files if f.stem in by_stem]


def _load_depth_pairs(pairs, skipped: List[str]):
    # A prediction at another resolution is resampled (nearest) onto the ground-truth grid; one of
    # another aspect ratio was cropped or padded differently, and pixels would not correspond.
    for pp, gp in pairs:
        g = np.load(gp)
        p = np.load(pp)
        if p.shape != g.shape:
            if abs(p.shape[1] / p.shape[0] - g.shape[1] / g.shape[0]) > 0.01 * g.shape[1] / g.shape[0]:
                skipped.append(f"{pp.name}: {p.shape[1]}×{p.shape[0]} vs {g.shape[1]}×{g.shape[0]}")
                continue
            p = _resize_nearest(p, g.shape)
        yield p, g


def _fmt(x: object, spec: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_report(result: Dict[str, object]) -> str:
    """A plain-text table of `evaluate_sequence`'s result."""
    lines = []
    t = result.get("trajectory")
    if t:
        lines.append(f"trajectory: {t['matched']} poses compared ({t.get('pred_poses', '?')} predicted, "
                     f"{t.get('gt_poses', '?')} in the ground truth; {t.get('association', '')}), "
                     f"{t['path_length']:.1f} m of ground truth, {t['align']} alignment (scale {t['scale']:.4g})")
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
