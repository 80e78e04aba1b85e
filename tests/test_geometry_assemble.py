"""`assemble` end to end on simulated chunk predictions (scal3r.eval.simulate) of analytic drives."""

import warnings

import numpy as np
import pytest

from scal3r.chunks import chunk_ranges
from scal3r.errors import InputError
from scal3r.eval.simulate import (SimulationConfig, road_scene, simulate_chunks, simulate_descriptors,
                                  simulate_loop_chunk)
from scal3r.eval.trajectory import align_trajectory, ate_rmse
from scal3r.geometry import BackendConfig, LoopConfig, assemble, find_loop_candidates, frame_owners, loop_chunk_frames
from scal3r.geometry.camera import decode_pose_encoding, invert_rigid


@pytest.fixture(scope="module")
def drive300():
    return road_scene(300, loop=False, height=16, width=24, seed=1)


def test_noise_free_recovery_is_exact(drive300):
    gt = drive300
    ranges = chunk_ranges(300, 60, 30)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, SimulationConfig.noise_free(seed=2), as_torch=False)
    rec = assemble(outs, ranges)
    # float64 chunk outputs: exact up to the conditioning of 9 chained Sim(3) fits.
    assert ate_rmse(rec.c2w, gt.c2w) < 1e-9 * gt.path_length
    aligned, sim = align_trajectory(rec.c2w, gt.c2w)
    np.testing.assert_allclose(aligned[:, :3, :3], gt.c2w[:, :3, :3], atol=1e-9)
    # Depth is in world units: the truth up to the one global scale of the world frame.
    finite = np.isfinite(gt.depth)
    np.testing.assert_allclose(rec.depth[finite] * sim.scale, gt.depth[finite], rtol=1e-6)
    np.testing.assert_allclose(rec.K, np.broadcast_to(gt.K, rec.K.shape), atol=1e-9)
    # The same through torch float32 tensors (what infer_chunks returns): float32 rounding.
    outs32 = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, SimulationConfig.noise_free(seed=2))
    assert ate_rmse(assemble(outs32, ranges).c2w, gt.c2w) < 1e-4 * gt.path_length


def test_world_points_source_and_central_ownership(drive300):
    gt = drive300
    ranges = chunk_ranges(300, 60, 30)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, SimulationConfig.noise_free(seed=3), as_torch=False)
    rec = assemble(outs, ranges, config=BackendConfig(point_source="world_points", ownership="central"))
    assert ate_rmse(rec.c2w, gt.c2w) < 1e-9 * gt.path_length
    # Central ownership: each frame from the chunk whose reference row it is closest to.
    src, row = frame_owners(ranges, "central")
    assert src[45] == 1 and row[45] == 15  # chunk 1 = [30, 90), reference row 29 → frame 59
    assert src[44] == 0 and src[75] == 2
    np.testing.assert_array_equal(rec.src_chunk, src)


def test_default_noise_1000_frames_without_loops_under_one_percent():
    gt = road_scene(1000, loop=False, height=24, width=32, seed=4)
    ranges = chunk_ranges(1000, 60, 30)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, SimulationConfig(seed=4))
    rec = assemble(outs, ranges)
    assert gt.path_length > 990
    assert ate_rmse(rec.c2w, gt.c2w) < 0.01 * gt.path_length
    assert all(f.method == "points" for f in rec.pair_fits)


def test_loop_closure_on_a_returning_drive_halves_ate():
    N = 1000
    gt = road_scene(N, loop=True, height=24, width=32, seed=5, revisit=0.1)
    ranges = chunk_ranges(N, 60, 30)
    cfg = SimulationConfig(heading_drift_deg=0.01, scale_drift=0.001, seed=5)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, cfg)
    # Detection: the revisit of the first ~90 frames by the last ones is found.
    cands = find_loop_candidates(simulate_descriptors(gt.c2w, seed=5), LoopConfig())
    loop_len = N / 1.1
    assert len(cands) >= 2
    for c in cands:
        assert abs((c.frame_b - c.frame_a) - loop_len) < 5
    loops = [simulate_loop_chunk(loop_chunk_frames(c, ranges), gt.c2w, gt.K, gt.depth, cfg, key=k)
             for k, c in enumerate(cands)]
    base = assemble(outs, ranges)
    closed = assemble(outs, ranges, loops=loops)
    assert all(r.accepted for r in closed.loops)
    # Every loop passed the chain-consistency gate, and its report says by how much.
    assert all(r.chi2 <= r.chi2_threshold for r in closed.loops)
    ate0, ate1 = ate_rmse(base.c2w, gt.c2w), ate_rmse(closed.c2w, gt.c2w)
    assert ate1 < 0.5 * ate0


def _small(seed=6, n=90, ranges=((0, 60), (30, 90)), cfg=None):
    gt = road_scene(n, loop=False, height=12, width=16, seed=seed)
    cfg = cfg or SimulationConfig.noise_free(seed=seed)
    return gt, list(ranges), simulate_chunks(gt.c2w, gt.K, gt.depth, list(ranges), cfg, as_torch=False)


def test_single_chunk_is_its_own_frame():
    gt, ranges, outs = _small(n=40, ranges=[(0, 40)])
    rec = assemble(outs, ranges)
    np.testing.assert_array_equal(rec.chunk_sim3, np.eye(4)[None])
    w2c, _ = decode_pose_encoding(outs[0]["pose_enc"], 12, 16)
    np.testing.assert_allclose(rec.c2w, invert_rigid(w2c), atol=1e-12)
    assert rec.pair_fits == [] and ate_rmse(rec.c2w, gt.c2w) < 1e-9


def test_overlap_of_one_frame_warns_but_stays_exact():
    gt, ranges, outs = _small(ranges=[(0, 50), (49, 90)])
    with pytest.warns(RuntimeWarning, match="share a single frame"):
        rec = assemble(outs, ranges)
    assert ate_rmse(rec.c2w, gt.c2w) < 1e-9 * gt.path_length


def test_disjoint_chunks_and_bad_ranges_are_errors():
    gt, ranges, outs = _small()
    with pytest.raises(InputError, match="share no frame"):
        assemble(outs, [(0, 60), (60, 120)])
    with pytest.raises(InputError, match="chunk outputs for"):
        assemble(outs, [(0, 60)])
    with pytest.raises(InputError, match="rows"):
        assemble(outs, [(0, 60), (30, 91)])
    with pytest.raises(InputError, match="start at frame 0"):
        assemble(outs, [(1, 61), (31, 91)])


def test_nan_pose_is_an_error_naming_the_chunk():
    gt, ranges, outs = _small()
    outs[1]["pose_enc"] = outs[1]["pose_enc"].copy()
    outs[1]["pose_enc"][5, 0] = np.nan
    with pytest.raises(InputError, match="chunk 1: .*NaN"):
        assemble(outs, ranges)


def test_nan_depth_pixels_warn_and_are_ignored():
    gt, ranges, outs = _small()
    d = outs[1]["depth"].copy()
    d[:, :3] = np.nan
    outs[1]["depth"] = d
    with pytest.warns(RuntimeWarning, match="chunk 1: .* NaN or infinite"):
        rec = assemble(outs, ranges)
    assert ate_rmse(rec.c2w, gt.c2w) < 1e-9 * gt.path_length


def test_chunk_without_confident_points_warns_and_uses_cameras():
    gt, ranges, outs = _small()
    d = outs[1]["depth"].copy()
    d[:] = -1.0  # a chunk whose depth head failed
    outs[1]["depth"] = d
    with pytest.warns(RuntimeWarning, match="chunks 0 and 1: only 0 confident points"):
        rec = assemble(outs, ranges)
    assert rec.pair_fits[0].method == "poses"
    # Noise-free cameras: the camera-based alignment is exact too.
    assert ate_rmse(rec.c2w, gt.c2w) < 1e-9 * gt.path_length


def test_degenerate_loops_are_dropped_with_a_warning():
    gt, ranges, outs = _small(n=150, ranges=[(0, 60), (30, 90), (60, 120), (90, 150)],
                              cfg=SimulationConfig(seed=7))
    inside = simulate_loop_chunk(np.r_[0:10, 40:50], gt.c2w, gt.K, gt.depth, key=0, as_torch=False)
    empty = simulate_loop_chunk(np.r_[0:10, 130:140], gt.c2w, gt.K, gt.depth, key=1, as_torch=False)
    empty["depth"] = np.full_like(empty["depth"], np.nan)
    scaled = simulate_loop_chunk(np.r_[0:10, 130:140], gt.c2w, gt.K, gt.depth, key=2, as_torch=False)
    # A loop chunk whose second end is 10× too large: not a similarity of the first end.
    scaled["depth"][10:] *= 10.0
    scaled["pose_enc"][10:, :3] *= 10.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = assemble(outs, ranges, loops=[inside, empty, scaled])
    messages = " | ".join(str(w.message) for w in caught)
    assert [r.accepted for r in rec.loops] == [False, False, False]
    assert "both ends lie in chunk 0" in rec.loops[0].reason
    assert "confident points" in rec.loops[1].reason
    assert "scale" in rec.loops[2].reason or "residual" in rec.loops[2].reason
    assert messages.count("dropped") == 3
    # Dropped loops leave the chain untouched.
    np.testing.assert_allclose(rec.chunk_sim3, assemble(outs, ranges).chunk_sim3)


def test_invalid_field_of_view_warns_and_stays_finite():
    gt, ranges, outs = _small()
    enc = outs[1]["pose_enc"].copy()
    enc[:4, 7:9] = 0.0  # an untrained camera head's relu output
    outs[1]["pose_enc"] = enc
    with pytest.warns(RuntimeWarning, match="chunk 1: 4 of 60 frames have a field of view outside"):
        rec = assemble(outs, ranges)
    assert np.all(np.isfinite(rec.c2w)) and np.all(np.isfinite(rec.K))
    # Those frames (30–33 of chunk 1 = [30, 90)) are shared with chunk 0, which supplies the rest.
    assert ate_rmse(rec.c2w[:30], gt.c2w[:30]) < 1e-6
