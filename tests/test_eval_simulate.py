import numpy as np
import pytest
import torch

from scal3r.errors import InputError
from scal3r.eval.simulate import (SimulationConfig, road_scene, simulate_chunks, simulate_descriptors,
                                  simulate_loop_chunk)
from scal3r.chunks import reference_row
from scal3r.geometry.camera import decode_pose_encoding, invert_rigid, project_points, unproject_depth


@pytest.fixture(scope="module")
def scene():
    return road_scene(120, loop=False, height=12, width=16, seed=3)


def test_road_scene_depth_is_consistent_across_views(scene):
    # Unproject frame i, reproject into the camera 3 m behind it and compare with that frame's depth.
    # Inverse depth of a plane is affine in pixel coordinates, so bilinear interpolation of 1/depth
    # between pixel centres is exact inside planar patches (ground, box faces): the median
    # disagreement must be at rounding level, edges and occlusions aside.
    H, W = scene.depth.shape[1:]
    i, j = 43, 40
    finite = np.isfinite(scene.depth[i])
    pts = unproject_depth(np.where(finite, scene.depth[i], 1.0)[None], invert_rigid(scene.c2w[i:i + 1]), scene.K[None])[0]
    uv, z = project_points(pts[finite], invert_rigid(scene.c2w[j]), scene.K)
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (z > 0) & (x0 >= 0) & (x0 < W - 1) & (y0 >= 0) & (y0 < H - 1)
    x, y, x0, y0, z = x[inside], y[inside], x0[inside], y0[inside], z[inside]
    inv = 1.0 / scene.depth[j].astype(np.float64)  # 0 for sky
    fx, fy = x - x0, y - y0
    interp = ((1 - fx) * (1 - fy) * inv[y0, x0] + fx * (1 - fy) * inv[y0, x0 + 1]
              + (1 - fx) * fy * inv[y0 + 1, x0] + fx * fy * inv[y0 + 1, x0 + 1])
    rel = np.abs(interp * z - 1.0)
    assert rel.size > 0.3 * H * W
    assert np.median(rel) < 1e-5  # float32 depth storage
    assert 0.05 < np.mean(~finite) < 0.6  # some sky, mostly structure


def test_chunk_outputs_format_and_determinism(scene):
    ranges = [(0, 60), (30, 90), (60, 120)]
    a = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, SimulationConfig(seed=5))
    b = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, SimulationConfig(seed=5))
    c = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, SimulationConfig(seed=6))
    H, W = scene.depth.shape[1:]
    for out in a:
        assert out["pose_enc"].shape == (60, 9) and out["pose_enc"].dtype == torch.float32
        assert out["depth"].shape == (60, H, W, 1)
        assert out["depth_conf"].shape == (60, H, W)
        assert out["world_points"].shape == (60, H, W, 3)
        assert out["world_points_conf"].shape == (60, H, W)
        assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all()
        assert (out["depth_conf"] >= 1).all()
    for k in a[0]:
        assert torch.equal(a[1][k], b[1][k])
    assert not torch.equal(a[1]["depth"], c[1]["depth"])


def test_pose_encoding_consistent_with_depth_and_points(scene):
    cfg = SimulationConfig(points_noise=0.0, seed=1)
    out = simulate_chunks(scene.c2w, scene.K, scene.depth, [(0, 60)], cfg, as_torch=False)[0]
    H, W = scene.depth.shape[1:]
    w2c, K = decode_pose_encoding(out["pose_enc"], H, W)
    np.testing.assert_allclose(K, np.broadcast_to(scene.K, K.shape), atol=1e-9)
    np.testing.assert_allclose(unproject_depth(out["depth"], w2c, K), out["world_points"], atol=1e-9)


def test_noise_free_chunk_is_an_exact_similarity_of_the_truth(scene):
    cfg = SimulationConfig.noise_free(chunk_frame="reference")
    out = simulate_chunks(scene.c2w, scene.K, scene.depth, [(10, 50)], cfg, as_torch=False)[0]
    H, W = scene.depth.shape[1:]
    w2c, _ = decode_pose_encoding(out["pose_enc"], H, W)
    ref = reference_row(40)
    # chunk_frame="reference": the reference camera is the chunk's origin, axes aligned.
    np.testing.assert_allclose(w2c[ref], np.eye(4), atol=1e-9)
    # Depth is the truth in chunk units (one scale for the whole chunk) where something was hit.
    finite = np.isfinite(scene.depth[10:50])
    ratio = out["depth"][..., 0][finite] / scene.depth[10:50][finite]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    # Relative camera motion matches the truth up to that scale.
    c2w = invert_rigid(w2c)
    gt_rel = invert_rigid(scene.c2w[10 + ref]) @ scene.c2w[10:50]
    np.testing.assert_allclose(c2w[:, :3, :3], gt_rel[:, :3, :3], atol=1e-9)
    np.testing.assert_allclose(c2w[:, :3, 3], gt_rel[:, :3, 3] * ratio[0], atol=1e-9)


def test_loop_chunk_and_descriptors():
    scene = road_scene(220, loop=True, height=8, width=12, revisit=0.25)
    loop = simulate_loop_chunk(np.r_[0:10, 180:190], scene.c2w, scene.K, scene.depth, key=2)
    assert loop["frames"].tolist() == list(range(10)) + list(range(180, 190))
    assert loop["pose_enc"].shape == (20, 9)
    d = simulate_descriptors(scene.c2w)
    # The drive re-drives its first quarter (length 220/1.25 = 176 frames later): same place,
    # same heading → similar; elsewhere dissimilar.
    assert d[0] @ d[176] > 0.9
    assert abs(d[0] @ d[88]) < 0.3


def test_bad_ground_truth_shapes():
    with pytest.raises(InputError):
        simulate_chunks(np.zeros((3, 3, 4)), np.eye(3), np.ones((3, 4, 4)), [(0, 3)])
    with pytest.raises(InputError):
        simulate_chunks(np.tile(np.eye(4), (3, 1, 1)), np.eye(3), np.ones((2, 4, 4)), [(0, 3)])


def test_noise_model_selection():
    assert SimulationConfig().noise_model == "shared"  # the default model is unchanged
    with pytest.raises(ValueError, match="noise_model"):
        SimulationConfig(noise_model="other")


def test_independent_noise_model_format_and_determinism(scene):
    ranges = [(0, 60), (30, 90), (60, 120)]
    cfg = SimulationConfig(noise_model="independent", seed=5)
    a = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, cfg)
    b = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, cfg)
    shared = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, SimulationConfig(seed=5))
    H, W = scene.depth.shape[1:]
    for out, other in zip(a, shared):
        assert out["pose_enc"].shape == (60, 9) and out["depth"].shape == (60, H, W, 1)
        assert out["world_points"].shape == (60, H, W, 3) and out["world_points_conf"].shape == (60, H, W)
        assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all()
        assert not torch.equal(out["depth"], other["depth"])
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k])
    loop = simulate_loop_chunk(np.r_[0:10, 100:110], scene.c2w, scene.K, scene.depth, cfg, key=1)
    assert loop["pose_enc"].shape == (20, 9)


def _drift_only(**kw):
    from scal3r.eval.simulate import IndependentNoise

    base = dict(rotation_walk_deg=0.0, translation_walk=0.0, depth_t_scale=0.0, depth_frame_scale=0.0, fov_bias=0.0,
                fov_bias_sigma=0.0, points_noise=0.0)
    base.update(kw)
    return SimulationConfig(noise_model="independent", chunk_frame="reference", chunk_scale_sigma=0.0,
                            independent=IndependentNoise(**base))


def test_independent_drift_rates_differ_from_chunk_to_chunk():
    scene = road_scene(300, loop=False, height=8, width=12, seed=4)
    ranges = [(s, s + 60) for s in range(0, 241, 30)]  # 9 chunks
    outs = simulate_chunks(scene.c2w, scene.K, scene.depth, ranges, _drift_only(), as_torch=False)
    H, W = scene.depth.shape[1:]
    yaw_rates = []
    for (s, e), out in zip(ranges, outs):
        w2c, _ = decode_pose_encoding(out["pose_enc"], H, W)
        c2w = invert_rigid(w2c)
        ref = reference_row(e - s)
        truth = invert_rigid(scene.c2w[s + ref]) @ scene.c2w[s:e]  # in the reference camera's frame
        err = c2w[-1, :3, :3] @ truth[-1, :3, :3].T  # the drift turn of the last row
        # Yaw: about the reference camera's up axis (−y in OpenCV axes).
        yaw_rates.append(-np.arctan2(err[0, 2], err[2, 2]) / (e - s - 1 - ref))
    yaw_deg = np.degrees(yaw_rates)
    # Each chunk its own zero-mean rate (σ 0.01°/frame): both signs, no common value.
    assert (yaw_deg > 0).any() and (yaw_deg < 0).any()
    assert 0.003 < np.std(yaw_deg) < 0.03


def test_independent_depth_heavy_tails_confidence_rows_and_fov_bias():
    from scal3r.eval.simulate import IndependentNoise

    scene = road_scene(60, loop=False, height=24, width=32, seed=2)
    H, W = scene.depth.shape[1:]
    cfg = SimulationConfig(noise_model="independent", chunk_frame="reference", chunk_scale_sigma=0.0, seed=3,
                           independent=IndependentNoise(yaw_drift_deg=0.0, pitch_drift_deg=0.0, scale_drift=0.0))
    out = simulate_chunks(scene.c2w, scene.K, scene.depth, [(0, 60)], cfg, as_torch=False)[0]
    finite = np.isfinite(scene.depth)
    unit = 1.0 / float(scene.depth[finite].mean())
    log_err = np.log(out["depth"][..., 0][finite] / (scene.depth[finite] * unit))
    log_err = log_err - np.median(log_err)
    z = log_err / (1.4826 * np.median(np.abs(log_err)))
    # Student-t (3 dof): far more mass beyond 5 robust σ than a Gaussian's 6e-7.
    assert np.mean(np.abs(z) > 5) > 1e-3
    conf = out["depth_conf"]
    structure = finite & (scene.depth < 30)
    top, bottom = structure[:, : H // 3], structure[:, -H // 3:]
    assert conf[:, : H // 3][top].mean() < 0.8 * conf[:, -H // 3:][bottom].mean()
    assert conf[~finite].max() < 1.05  # sky: the floor
    _, K = decode_pose_encoding(out["pose_enc"], H, W)
    fov = 2 * np.arctan(W / 2 / K[:, 0, 0])
    fov_true = 2 * np.arctan(W / 2 / scene.K[0, 0])
    np.testing.assert_allclose(fov, fov[0])  # one bias for the whole chunk
    assert fov[0] != pytest.approx(fov_true, rel=1e-6) and abs(fov[0] / fov_true - 1.02) < 0.05
