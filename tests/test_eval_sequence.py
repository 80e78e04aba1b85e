"""`scal3r eval`: a prediction directory against a ground-truth directory, library and CLI."""

import json

import numpy as np
import pytest

from scal3r.cli import main
from scal3r.errors import InputError
from scal3r.eval.sequence import EvalOptions, evaluate_sequence, format_report, load_trajectory
from scal3r.eval.trajectory import Alignment
from scal3r.io.ply import write_ply
from scal3r.io.trajectory import quaternion_to_matrix, write_kitti, write_tum


def make_gt(root, rng, n=60):
    root.mkdir()
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = quaternion_to_matrix(np.c_[rng.normal(scale=0.05, size=(n, 3)), np.ones(n)])
    c2w[:, :3, 3] = np.c_[np.cumsum(np.ones(n) * 1.5), rng.normal(scale=0.2, size=n), np.sin(np.arange(n) / 9) * 8]
    write_kitti(root / "poses_kitti.txt", c2w)
    write_tum(root / "poses_tum.txt", np.arange(n) / 10, c2w)
    points = rng.uniform(-20, 20, size=(3000, 3))
    write_ply(root / "scene_points.ply", points, rng.integers(0, 255, size=(3000, 3), dtype=np.uint8))
    (root / "depth").mkdir()
    depths = []
    for i in range(4):
        d = rng.uniform(1, 30, size=(12, 16)).astype(np.float32)
        d[0] = 0
        np.save(root / "depth" / f"{i:06d}.npy", d)
        depths.append(d)
    return c2w, points.astype(np.float32).astype(np.float64), depths


def test_exact_prediction_in_another_frame_scores_perfectly(tmp_path):
    rng = np.random.default_rng(0)
    gt_c2w, gt_points, depths = make_gt(tmp_path / "gt", rng)
    sim = Alignment(0.3, quaternion_to_matrix(np.array([0.1, -0.4, 0.2, 0.9]))[0], np.array([5.0, -2, 7]))
    pred = tmp_path / "pred"
    (pred / "depth").mkdir(parents=True)
    # Timestamps shifted by 1 ms (within the association tolerance) and one frame missing.
    keep = np.r_[0:30, 31:60]
    write_tum(pred / "poses_tum.txt", np.arange(60)[keep] / 10 + 0.001, sim.apply_poses(gt_c2w)[keep])
    write_ply(pred / "points.ply", sim.apply_points(gt_points))
    for i, d in enumerate(depths):
        np.save(pred / "depth" / f"{i:06d}.npy", d * 2.5)  # monocular depth: right up to scale

    r = evaluate_sequence(pred, tmp_path / "gt")
    t, p, d = r["trajectory"], r["pointcloud"], r["depth"]
    assert t["matched"] == 59 and t["ate"]["rmse"] < 1e-5 and t["rpe_rot"]["rmse"] < 1e-4
    assert abs(t["scale"] - 1 / 0.3) < 1e-6
    # float32 PLY storage leaves ~1e-5 m of round-off in the aligned cloud.
    assert p["chamfer"] < 1e-4 and p["f1"] == 1.0
    assert d["images"] == 4 and d["abs_rel"] < 1e-6 and d["delta1"] == 1.0
    text = format_report(r)
    assert "ATE RMSE" in text and "Chamfer" in text and "AbsRel" in text


def test_noisy_prediction_scores_match_direct_metrics(tmp_path):
    rng = np.random.default_rng(1)
    gt_c2w, gt_points, _ = make_gt(tmp_path / "gt", rng)
    pred_c2w = gt_c2w.copy()
    pred_c2w[:, :3, 3] += rng.normal(scale=0.1, size=(60, 3))
    (tmp_path / "pred").mkdir()
    write_kitti(tmp_path / "pred" / "poses_kitti.txt", pred_c2w)
    from scal3r.eval.trajectory import evaluate_trajectory

    r = evaluate_sequence(tmp_path / "pred", tmp_path / "gt", EvalOptions(align="se3", rpe_delta=2))
    direct = evaluate_trajectory(pred_c2w, gt_c2w, "se3", 2)
    assert r["trajectory"]["ate"]["rmse"] == pytest.approx(direct.ate.rmse, abs=1e-12)
    assert r["trajectory"]["rpe_trans"]["rmse"] == pytest.approx(direct.rpe_trans.rmse, abs=1e-12)
    assert "pointcloud" not in r and "depth" not in r


def test_trajectory_files_can_be_given_directly(tmp_path):
    rng = np.random.default_rng(2)
    make_gt(tmp_path / "gt", rng)
    r = evaluate_sequence(tmp_path / "gt" / "poses_kitti.txt", tmp_path / "gt" / "poses_tum.txt")
    assert r["trajectory"]["ate"]["rmse"] < 1e-9
    assert load_trajectory(tmp_path / "gt").path.name == "poses_tum.txt"


def test_mismatches_are_input_errors(tmp_path):
    rng = np.random.default_rng(3)
    gt_c2w, _, _ = make_gt(tmp_path / "gt", rng)
    (tmp_path / "pred").mkdir()
    write_kitti(tmp_path / "pred" / "poses_kitti.txt", gt_c2w[:10])
    with pytest.raises(InputError, match="counts must agree"):
        evaluate_sequence(tmp_path / "pred", tmp_path / "gt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="nothing to evaluate"):
        evaluate_sequence(tmp_path / "empty", tmp_path / "gt")
    (tmp_path / "odd.txt").write_text("1 2 3 4 5\n")
    with pytest.raises(InputError, match="neither TUM"):
        load_trajectory(tmp_path / "odd.txt")


def test_cli_eval_prints_and_writes_json(tmp_path, capsys):
    rng = np.random.default_rng(4)
    make_gt(tmp_path / "gt", rng)
    (tmp_path / "pred").mkdir()
    for name in ("poses_tum.txt", "scene_points.ply"):
        (tmp_path / "pred" / name).write_bytes((tmp_path / "gt" / name).read_bytes())
    assert main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--threshold", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "ATE RMSE" in out and "F1" in out
    doc = json.loads((tmp_path / "pred" / "eval.json").read_text())
    assert doc["trajectory"]["ate"]["rmse"] < 1e-9 and doc["pointcloud"]["f1"] == 1.0
    assert doc["trajectory"]["kitti"]["t_rel"] is None  # 90 m of path: no 100 m segment, NaN → null
    assert main(["eval", str(tmp_path / "missing"), str(tmp_path / "gt")]) == 2
    assert "scal3r: error:" in capsys.readouterr().err


def test_reconstruct_output_folder_with_frame_list(tmp_path):
    """The layout `scal3r reconstruct` writes: trajectory_*.txt, frames.txt (here every 2nd source
    frame), points.ply, depth maps at another resolution of the same aspect ratio."""
    rng = np.random.default_rng(5)
    gt_c2w, gt_points, depths = make_gt(tmp_path / "gt", rng, n=60)
    for i in range(4, 9):  # more ground-truth depth maps, so that sources 0, 2, 4, 6, 8 exist
        np.save(tmp_path / "gt" / "depth" / f"{i:06d}.npy", rng.uniform(1, 30, size=(12, 16)).astype(np.float32))
    sources = np.arange(0, 60, 2)
    rec = tmp_path / "rec"
    (rec / "depth").mkdir(parents=True)
    sim = Alignment(2.0, np.eye(3), np.array([1.0, 2, 3]))
    write_kitti(rec / "trajectory_kitti.txt", sim.apply_poses(gt_c2w[sources]))
    (rec / "frames.txt").write_text("# index source_index name timestamp\n" +
                                    "".join(f"{i} {s} {s:06d}.png {s / 10!r}\n" for i, s in enumerate(sources)))
    for i, s in enumerate(sources[:4]):
        g = np.load(tmp_path / "gt" / "depth" / f"{s:06d}.npy")
        np.save(rec / "depth" / f"{i:06d}.npy", np.repeat(np.repeat(g, 2, 0), 2, 1) * 3)  # 2× size, 3× scale
    np.save(rec / "depth" / "000004.npy", np.ones((10, 10), np.float32))  # wrong aspect: skipped
    r = evaluate_sequence(rec, tmp_path / "gt")
    assert r["trajectory"]["matched"] == 30 and r["trajectory"]["ate"]["rmse"] < 1e-9
    assert r["depth"]["images"] == 4 and r["depth"]["abs_rel"] < 1e-6
    assert len(r["depth"]["skipped"]) == 1
    (rec / "frames.txt").write_text("0 999 x.png 0.0\n")
    with pytest.raises(InputError, match="frames.txt"):
        evaluate_sequence(rec, tmp_path / "gt")
