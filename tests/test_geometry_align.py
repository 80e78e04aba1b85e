
import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.geometry.align import AlignConfig, ChunkView, align_views, overlap_points, robust_sim3, weighted_umeyama
from scal3r.geometry.camera import intrinsics_from_fov, invert_rigid
from scal3r.geometry.sim3 import sim3_exp, sim3_split, so3_exp


def _cloud(rng, n=2000):
    return rng.normal(size=(n, 3)) * [3.0, 1.0, 2.0] + [0, 0, 5]


def test_weighted_umeyama_recovers_exact_similarity():
    rng = np.random.default_rng(0)
    src = _cloud(rng)
    s, R, t = 2.5, so3_exp([0.3, -0.2, 1.0]), np.array([1.0, -2.0, 0.5])
    tar = s * src @ R.T + t
    w = rng.uniform(0.5, 2.0, size=len(src))
    for estimator in ("rms", "umeyama"):
        s2, R2, t2 = weighted_umeyama(src, tar, w, estimator)
        assert abs(s2 - s) < 1e-12
        np.testing.assert_allclose(R2, R, atol=1e-12)
        np.testing.assert_allclose(t2, t, atol=1e-11)


def test_weighted_umeyama_rejects_degenerate_input():
    src = np.ones((10, 3))
    with pytest.raises(InputError, match="spread"):
        weighted_umeyama(src, src, np.ones(10))
    with pytest.raises(InputError, match="weight"):
        weighted_umeyama(src, src, np.zeros(10))


def test_robust_sim3_ignores_gross_outliers():
    rng = np.random.default_rng(1)
    src = _cloud(rng, 5000)
    s, R, t = 0.7, so3_exp([0.1, 0.5, -0.3]), np.array([0.2, 0.1, -1.0])
    tar = s * src @ R.T + t + 0.005 * rng.normal(size=src.shape)
    bad = rng.random(len(src)) < 0.1
    tar[bad] += rng.normal(scale=3.0, size=(bad.sum(), 3))
    w = np.ones(len(src))
    plain = weighted_umeyama(src, tar, w)
    fit = robust_sim3(src, tar, w, AlignConfig(huber_delta=0.05))
    # 10% outliers of 3σ=9 units bias the plain fit; Huber IRLS brings it back near the noise level.
    assert abs(plain[0] - s) > 0.02
    assert abs(fit.scale - s) < 0.01
    assert np.degrees(np.linalg.norm(so3_exp(np.zeros(3)) - fit.rotation @ R.T)) < 1.0
    assert fit.n_points == len(src)
    assert np.all(np.linalg.eigvalsh(fit.information) > 0)


def _views(rng, H=12, W=16, n=6, frames0=range(0, 6), frames1=range(3, 9)):
    """Two chunk views of the same metric scene in different Sim(3) frames, exact."""
    N = 9
    c2w = np.zeros((N, 4, 4))
    c2w[:, :3, :3] = so3_exp(0.05 * rng.normal(size=(N, 3)))
    c2w[:, :3, 3] = np.stack([np.zeros(N), np.zeros(N), np.arange(N) * 0.5], 1)
    c2w[:, 3, 3] = 1
    K = intrinsics_from_fov(np.full(N, 1.0), np.full(N, 1.2), H, W)
    depth = rng.uniform(4, 8, size=(N, H, W))
    views, truth = [], []
    for frames in (frames0, frames1):
        frames = np.array(list(frames))
        S = sim3_exp(rng.normal(size=7) * [1, 1, 1, .5, .5, .5, .3])  # world → chunk
        s, R, t = sim3_split(S)
        local = c2w[frames].copy()
        local[:, :3, :3] = R @ local[:, :3, :3]
        local[:, :3, 3] = s * local[:, :3, 3] @ R.T + t
        views.append(ChunkView(frames=frames, w2c=invert_rigid(local), K=K[frames], depth=depth[frames] * s,
                               depth_conf=rng.uniform(1, 3, size=(len(frames), H, W))))
        truth.append(S)
    return views, truth


def test_align_views_recovers_relative_similarity_exactly():
    rng = np.random.default_rng(2)
    (v0, v1), (S0, S1) = _views(rng)
    fit = align_views(v0, v1, [3, 4, 5], AlignConfig())
    expected = S0 @ np.linalg.inv(S1)  # chunk 1 → world → chunk 0
    np.testing.assert_allclose(fit.matrix, expected, atol=1e-9)
    assert fit.method == "points" and fit.n_frames == 3


def test_point_sampling_is_deterministic_and_capped():
    rng = np.random.default_rng(3)
    (v0, v1), _ = _views(rng)
    cfg = AlignConfig(max_points_per_frame=50)
    a = overlap_points(v0, v1, [3, 4, 5], cfg)
    b = overlap_points(v0, v1, [3, 4, 5], cfg)
    assert a[0].shape == (150, 3)
    np.testing.assert_array_equal(a[0], b[0])
    # A frame's sample depends on the frame, not on which other frames are aligned with it.
    c = overlap_points(v0, v1, [4], cfg)
    np.testing.assert_array_equal(c[0], a[0][50:100])


def test_confidence_selection_uses_release_rule():
    rng = np.random.default_rng(4)
    (v0, v1), _ = _views(rng)
    v0.depth_conf[:] = 2.0
    v1.depth_conf[:] = 2.0
    v0.depth_conf[3, :2] = 0.1  # below 0.1 × median (0.2) on one side only
    src, tar, w, used = overlap_points(v0, v1, [3], AlignConfig())
    assert src.shape[0] == 12 * 16 - 2 * 16
    np.testing.assert_allclose(w, 2.0)  # √(c₁c₂)


def test_too_few_points_warns_and_falls_back_to_cameras():
    rng = np.random.default_rng(5)
    (v0, v1), (S0, S1) = _views(rng)
    v1.depth[:] = np.nan
    with pytest.warns(RuntimeWarning, match="confident points"):
        fit = align_views(v0, v1, [3, 4, 5], AlignConfig(), label="chunks 0 and 1")
    assert fit.method == "poses"
    # Exact cameras: the camera-based Sim(3) is exact too.
    np.testing.assert_allclose(fit.matrix, S0 @ np.linalg.inv(S1), atol=1e-9)


def test_no_shared_frame_is_an_error():
    rng = np.random.default_rng(6)
    (v0, v1), _ = _views(rng)
    with pytest.raises(InputError, match="share no frame"):
        align_views(v0, v1, [], AlignConfig())
