"""`--gt`: ground truth for a reconstruction and the metrics against it.

GT is a directory in the synthetic-world layout (`poses_kitti.txt` or `poses_tum.txt`, optional
`scene_points.ply`; see `scal3r.data.synthetic`) or a trajectory file (TUM: 8 columns, KITTI: 12).
Frames are matched by source frame number (GT row i is input frame i, so `--stride`/`--fps` runs
still compare the right poses); a TUM ground truth is matched by timestamp instead when the input
carried real timestamps (video times, or timestamp-named images as in TUM RGB-D).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from scal3r.errors import InputError
from scal3r.eval.pointcloud import pointcloud_metrics
from scal3r.eval.trajectory import Alignment, align_trajectory, evaluate_trajectory
from scal3r.io.ply import read_ply
from scal3r.io.trajectory import associate_timestamps, read_kitti, read_tum


@dataclass
class GroundTruth:
    """c2w (M, 4, 4); timestamps (M,) or None; points (P, 3) reference cloud or None."""

    c2w: np.ndarray
    timestamps: Optional[np.ndarray]
    points: Optional[np.ndarray]
    source: str


def _read_trajectory_file(path: Path):
    first = ""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                first = line
                break
    columns = len(first.replace(",", " ").split())
    if columns == 8:
        t, c2w = read_tum(path)
        return c2w, t
    if columns == 12:
        return read_kitti(path), None
    raise InputError(f"--gt {path}: neither a TUM (8 columns) nor a KITTI (12 columns) trajectory "
                     f"(found {columns} columns)")


def load_ground_truth(location) -> GroundTruth:
    path = Path(location).expanduser()
    if not path.exists():
        raise InputError(f"--gt {path}: no such file or directory")
    if path.is_file():
        c2w, t = _read_trajectory_file(path)
        return GroundTruth(c2w, t, None, str(path))
    for name in ("poses_kitti.txt", "poses_tum.txt", "poses.txt", "trajectory_kitti.txt", "trajectory_tum.txt"):
        if (path / name).is_file():
            c2w, t = _read_trajectory_file(path / name)
            break
    else:
        raise InputError(f"--gt {path}: no poses_kitti.txt or poses_tum.txt in it (synthetic-world layout), "
                         "and it is not a trajectory file")
    points = None
    if (path / "scene_points.ply").is_file():
        points = read_ply(path / "scene_points.ply").points
    return GroundTruth(c2w, t, points, str(path))


def match_frames(gt: GroundTruth, source_indices: Sequence[int], timestamps: Optional[Sequence[float]]):
    """→ (rows of the prediction, rows of the ground truth) compared."""
    src = np.asarray(source_indices, dtype=np.int64)
    if gt.timestamps is not None and timestamps is not None:
        ip, ig = associate_timestamps(np.asarray(timestamps, dtype=np.float64), gt.timestamps, max_diff=0.02)
        if len(ip) < 3:
            raise InputError(f"--gt {gt.source}: only {len(ip)} frame timestamps match the ground truth within 0.02 s")
        return ip, ig
    ok = src < len(gt.c2w)
    if ok.sum() < 3:
        raise InputError(f"--gt {gt.source}: {len(gt.c2w)} ground-truth poses but the frames are source frames "
                         f"{int(src.min())}…{int(src.max())}; fewer than 3 of them have a pose")
    if not ok.all():
        raise InputError(f"--gt {gt.source} has {len(gt.c2w)} poses but the input has frame {int(src.max())}; "
                         "is it the ground truth of this input?")
    idx = np.nonzero(ok)[0]
    return idx, src[idx]


@dataclass
class Evaluation:
    metrics: Dict[str, object]
    alignment: Alignment  # prediction → ground-truth frame
    gt_in_pred: np.ndarray  # (M, 4, 4) matched GT poses moved into the prediction's frame (for plots)


def evaluate(gt: GroundTruth, c2w: np.ndarray, source_indices: Sequence[int], timestamps: Optional[Sequence[float]],
             points: Optional[np.ndarray] = None, threshold: Optional[float] = None,
             voxel: Optional[float] = 0.2) -> Evaluation:
    """Sim(3)-aligned ATE / RPE / KITTI drift of `c2w` (N, 4, 4), and Chamfer / F1 of `points`
    (P, 3) moved with the same alignment when the ground truth has a reference cloud."""
    ip, ig = match_frames(gt, source_indices, timestamps)
    pred, ref = c2w[ip], gt.c2w[ig]
    traj = evaluate_trajectory(pred, ref, "sim3")
    _, alignment = align_trajectory(pred, ref, "sim3")
    metrics: Dict[str, object] = {
        "matched_frames": int(len(ip)),
        "ate": traj.ate.rmse, "ate_mean": traj.ate.mean, "ate_max": traj.ate.max,
        "path_length": traj.path_length,
        "rpe_trans": traj.rpe_trans.rmse, "rpe_rot_deg": traj.rpe_rot.rmse,
        "kitti_t_rel": traj.kitti.t_rel, "kitti_r_rel": traj.kitti.r_rel,
        "scale": traj.scale, "align": "sim3",
    }
    if gt.points is not None and points is not None and len(points) and len(gt.points):
        from scal3r.eval.pointcloud import F1_THRESHOLD

        pc = pointcloud_metrics(alignment.apply_points(points), gt.points,
                                F1_THRESHOLD if threshold is None else threshold, voxel)
        metrics.update({"chamfer": pc.chamfer, "f1": pc.f1, "accuracy": pc.accuracy,
                        "completeness": pc.completeness, "precision": pc.precision, "recall": pc.recall,
                        "f1_threshold": pc.threshold, "eval_voxel": pc.voxel_size})
    inv = np.linalg.inv(alignment.matrix())
    gt_in_pred = ref.copy()
    gt_in_pred[:, :3, :3] = alignment.rotation.T @ ref[:, :3, :3]
    gt_in_pred[:, :3, 3] = ref[:, :3, 3] @ inv[:3, :3].T + inv[:3, 3]
    return Evaluation(metrics, alignment, gt_in_pred)
