"""Trajectory metrics: zero for identical inputs, known values on constructed cases, equal to evo's."""

import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.eval.trajectory import (Alignment, align_trajectory, ate_rmse, evaluate_trajectory,
                                    kitti_segment_errors, relative_pose_errors, rotation_angle,
                                    umeyama_alignment)


def random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], 1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], 1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1)], 1)


def random_walk(rng, n, step=1.0):
    """A smooth-ish random c2w trajectory (N, 4, 4)."""
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = random_rotations(rng, n)
    c2w[:, :3, 3] = np.cumsum(rng.normal(scale=step, size=(n, 3)), axis=0)
    return c2w


def perturb(rng, c2w, rot_sigma=0.02, trans_sigma=0.3):
    out = c2w.copy()
    small = np.tile(np.eye(4), (len(c2w), 1, 1))
    for i in range(len(c2w)):
        w = rng.normal(scale=rot_sigma, size=3)
        th = np.linalg.norm(w)
        k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / th
        small[i, :3, :3] = np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k
    out = out @ small
    out[:, :3, 3] += rng.normal(scale=trans_sigma, size=(len(c2w), 3))
    return out


def sim3_of(rng, s=2.5):
    return Alignment(s, random_rotations(rng, 1)[0], rng.normal(size=3) * 10)


def test_identical_inputs_give_zero():
    rng = np.random.default_rng(0)
    gt = random_walk(rng, 50)
    m = evaluate_trajectory(gt, gt, kitti_lengths=(5.0, 10.0))
    assert m.ate.rmse < 1e-9 and m.rpe_trans.rmse < 1e-9 and m.rpe_rot.rmse < 1e-6
    assert m.kitti.segments > 0 and m.kitti.t_rel < 1e-7 and m.kitti.r_rel < 1e-5
    assert abs(m.scale - 1) < 1e-12


def test_sim3_recovered_exactly():
    rng = np.random.default_rng(1)
    gt = random_walk(rng, 40)
    true = sim3_of(rng)
    pred = true.apply_poses(gt)  # pred = S·gt, so the alignment pred→gt is S⁻¹
    aligned, a = align_trajectory(pred, gt, "sim3")
    assert abs(a.scale - 1 / true.scale) < 1e-10
    np.testing.assert_allclose(aligned, gt, atol=1e-9)
    assert ate_rmse(pred, gt, "sim3") < 1e-9
    # SE(3) cannot undo the scale: the residual is what is left after the best rigid fit.
    assert ate_rmse(pred, gt, "se3") > 1.0
    t, r = relative_pose_errors(aligned, gt)
    assert t.max() < 1e-9 and r.max() < 1e-6


def test_umeyama_with_reflection_returns_a_rotation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3))
    y = x * np.array([1, 1, -1])  # a mirror image: the best proper rotation is not exact
    a = umeyama_alignment(x, y)
    assert abs(np.linalg.det(a.rotation) - 1) < 1e-12
    np.testing.assert_allclose(a.rotation @ a.rotation.T, np.eye(3), atol=1e-12)


def test_degenerate_and_mismatched_inputs_raise():
    gt = np.tile(np.eye(4), (5, 1, 1))
    with pytest.raises(InputError):
        ate_rmse(gt, gt)
    with pytest.raises(InputError):
        ate_rmse(gt[:3], gt)
    with pytest.raises(InputError):
        ate_rmse(np.zeros((5, 3, 3)), gt)


def test_rotation_angle_small_and_large():
    for th in (1e-9, 1e-4, 0.5, 3.0):
        r = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
        assert abs(rotation_angle(r) - th) < 1e-15 + 1e-12 * th


def straight_line(n, step=1.0):
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 2, 3] = np.arange(n) * step  # driving forward along z
    return c2w


def test_kitti_scale_drift_is_exactly_one_percent():
    gt = straight_line(1000)
    pred = gt.copy()
    pred[:, :3, 3] *= 1.01  # 1 m too far every 100 m
    k = kitti_segment_errors(pred, gt)
    assert k.segments > 0
    # dist[last] exceeds L by one step (1 m): error is 0.01·(L + 1)/L.
    expected = np.mean([0.01 * (L + 1) / L for L, (_, _, c) in k.per_length.items() for _ in range(c)]) * 100
    assert abs(k.t_rel - expected) < 1e-9 and k.r_rel < 1e-9
    assert set(k.per_length) == {100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0}
    # Segment counts follow the devkit: starts every 10 frames whose segment fits.
    assert k.per_length[100.0][2] == len(range(0, 1000 - 101, 10))


def test_kitti_constant_yaw_rate():
    # Estimate turns 0.1° every metre while gt is straight: a segment of L metres rotates L·0.1°…
    n = 300
    gt = straight_line(n)
    pred = gt.copy()
    for i in range(n):
        th = np.radians(0.1) * i
        pred[i, :3, :3] = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    k = kitti_segment_errors(pred, gt, lengths=(100.0,))
    # …over L + 1 frames of path: 0.1·101/100 degrees per metre → 10.1 °/100 m.
    assert abs(k.r_rel - 10.1) < 1e-9


def test_short_trajectory_has_no_kitti_segments():
    gt = straight_line(20)
    k = kitti_segment_errors(gt, gt)
    assert k.segments == 0 and np.isnan(k.t_rel)


def devkit_reference(pred, gt, lengths=(100, 200, 300, 400, 500, 600, 700, 800), step=10):
    """A literal, loop-by-loop transcription of the KITTI devkit's calcSequenceErrors (acos angle)."""
    dist = [0.0]
    for i in range(1, len(gt)):
        dist.append(dist[-1] + np.linalg.norm(gt[i, :3, 3] - gt[i - 1, :3, 3]))
    t_errs, r_errs = [], []
    for first in range(0, len(gt), step):
        for length in lengths:
            last = next((i for i in range(first, len(dist)) if dist[i] > dist[first] + length), -1)
            if last == -1:
                continue
            delta_gt = np.linalg.inv(gt[first]) @ gt[last]
            delta_pred = np.linalg.inv(pred[first]) @ pred[last]
            err = np.linalg.inv(delta_pred) @ delta_gt
            d = 0.5 * (np.trace(err[:3, :3]) - 1.0)
            r_errs.append(np.arccos(max(min(d, 1.0), -1.0)) / length)
            t_errs.append(np.linalg.norm(err[:3, 3]) / length)
    return np.mean(t_errs) * 100, np.degrees(np.mean(r_errs)) * 100, len(t_errs)


@pytest.mark.parametrize("seed", [0, 1])
def test_kitti_matches_devkit_transcription(seed):
    rng = np.random.default_rng(seed)
    n = 900
    gt = np.tile(np.eye(4), (n, 1, 1))
    heading = np.cumsum(rng.normal(scale=0.02, size=n))
    gt[:, 0, 3] = np.cumsum(np.cos(heading))
    gt[:, 2, 3] = np.cumsum(np.sin(heading))
    for i in range(n):
        c, s_ = np.cos(-heading[i]), np.sin(-heading[i])
        gt[i, :3, :3] = np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])
    pred = perturb(rng, gt, rot_sigma=0.01, trans_sigma=0.2)
    t_ref, r_ref, count = devkit_reference(pred, gt)
    k = kitti_segment_errors(pred, gt)
    assert k.segments == count
    assert abs(k.t_rel - t_ref) < 1e-6 and abs(k.r_rel - r_ref) < 1e-6


# --- cross-check against evo --------------------------------------------------------------------

evo_traj = pytest.importorskip("evo.core.trajectory")
evo_metrics = pytest.importorskip("evo.core.metrics")


def evo_path(c2w):
    return evo_traj.PosePath3D(poses_se3=[p.copy() for p in c2w])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("align", ["sim3", "se3", "none"])
def test_matches_evo(seed, align):
    rng = np.random.default_rng(seed)
    gt = random_walk(rng, 120)
    pred = sim3_of(rng, s=0.37).apply_poses(perturb(rng, gt))

    ref, est = evo_path(gt), evo_path(pred)
    if align != "none":
        est.align(ref, correct_scale=align == "sim3")
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    stats = ape.get_all_statistics()

    m = evaluate_trajectory(pred, gt, align=align, rpe_delta=1)
    assert abs(m.ate.rmse - stats["rmse"]) < 1e-6
    assert abs(m.ate.mean - stats["mean"]) < 1e-6
    assert abs(m.ate.median - stats["median"]) < 1e-6
    assert abs(m.ate.max - stats["max"]) < 1e-6

    for delta in (1, 5):
        m = evaluate_trajectory(pred, gt, align=align, rpe_delta=delta)
        for relation, ours in ((evo_metrics.PoseRelation.translation_part, m.rpe_trans),
                               (evo_metrics.PoseRelation.rotation_angle_deg, m.rpe_rot)):
            rpe = evo_metrics.RPE(relation, delta=delta, delta_unit=evo_metrics.Unit.frames, all_pairs=True)
            rpe.process_data((ref, est))
            s = rpe.get_all_statistics()
            assert abs(ours.rmse - s["rmse"]) < 1e-6
            assert abs(ours.mean - s["mean"]) < 1e-6
            assert abs(ours.max - s["max"]) < 1e-6
