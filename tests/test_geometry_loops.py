import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.geometry.loops import (LoopCandidate, LoopConfig, compose_loop_constraint, find_loop_candidates,
                                   loop_chunk_frames, loop_chunk_times, split_loop_ends,
                                   thumbnail_descriptors)
from scal3r.geometry.sim3 import sim3_exp, sim3_inverse


def _ring_descriptors(n, period, dim=64, seed=0):
    """Descriptors of a drive that passes the same places every `period` frames."""
    rng = np.random.default_rng(seed)
    places = rng.normal(size=(period, dim))
    d = places[np.arange(n) % period] + 0.05 * rng.normal(size=(n, dim))
    return d


def test_candidates_find_revisits_with_gap_and_nms():
    d = _ring_descriptors(300, 200)
    cands = find_loop_candidates(d, LoopConfig(similarity_threshold=0.9, nms_window=25, min_frame_gap=10))
    assert cands, "the revisit of frames 0–99 by frames 200–299 must be found"
    for c in cands:
        assert c.frame_b - c.frame_a == 200
        assert c.similarity > 0.9
    # NMS: no two kept pairs have ends within the window.
    a = sorted(c.frame_a for c in cands)
    assert np.all(np.diff(a) > 25)
    assert len(cands) >= 3  # 100 revisited frames / 26
    # Strongest first.
    sims = [c.similarity for c in cands]
    assert sims == sorted(sims, reverse=True)


def test_no_candidates_without_revisit_or_within_gap():
    rng = np.random.default_rng(1)
    assert find_loop_candidates(rng.normal(size=(200, 64))) == []
    # Near-identical neighbours (a car standing still) are not loops.
    still = np.repeat(rng.normal(size=(1, 64)), 8, axis=0)
    assert find_loop_candidates(still, LoopConfig(min_frame_gap=10)) == []


def test_thumbnail_descriptor_matches_same_image():
    rng = np.random.default_rng(2)
    imgs = rng.random(size=(3, 3, 64, 96)).astype(np.float32)
    imgs[2] = imgs[0] * 0.8 + 0.1  # same view, other exposure
    d = thumbnail_descriptors(imgs)
    assert d.shape == (3, 32 * 32)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert d[0] @ d[2] > 0.99 and abs(d[0] @ d[1]) < 0.2
    with pytest.raises(InputError):
        thumbnail_descriptors(np.zeros((2, 3, 8, 8)))


def test_loop_chunk_frames_stay_inside_each_ends_chunk():
    ranges = [(0, 60), (30, 90), (60, 120), (90, 150), (120, 180)]
    frames = loop_chunk_frames(LoopCandidate(2, 175, 0.95), ranges, window=10)
    a, b = split_loop_ends(frames)
    np.testing.assert_array_equal(a, np.arange(0, 20))
    np.testing.assert_array_equal(b, np.arange(160, 180))
    frames = loop_chunk_frames(LoopCandidate(40, 130, 0.95), ranges, window=10)
    a, b = split_loop_ends(frames)
    np.testing.assert_array_equal(a, np.arange(30, 50))
    np.testing.assert_array_equal(b, np.arange(120, 140))
    with pytest.raises(InputError, match="inside chunk"):
        loop_chunk_frames(LoopCandidate(95, 110, 0.95), ranges)


def test_loop_chunk_times_join_the_two_ends_at_the_revisit():
    ranges = [(0, 60), (30, 90), (60, 120), (90, 150), (120, 180)]
    cand = LoopCandidate(2, 175, 0.95)
    frames = loop_chunk_frames(cand, ranges, window=10)
    fed = np.concatenate([frames[25:], frames[:25]])  # any order: each time goes with its frame
    times = loop_chunk_times(cand, fed)
    expected = np.where(fed < 100, fed + 173, fed)
    np.testing.assert_array_equal(times, expected)
    assert times[list(fed).index(2)] == times[list(fed).index(175)] == 175


def test_composed_constraint_and_its_information():
    rng = np.random.default_rng(3)
    A, B = sim3_exp(rng.normal(size=7)), sim3_exp(rng.normal(size=7))
    info = np.diag(rng.uniform(1, 10, size=7))
    Z, info_z = compose_loop_constraint(A, B, info, 2 * info)
    np.testing.assert_allclose(Z, A @ sim3_inverse(B), atol=1e-12)
    # Information of the composition is symmetric positive definite and weaker than either side.
    w = np.linalg.eigvalsh(info_z)
    assert np.all(w > 0)
    np.testing.assert_allclose(info_z, info_z.T, atol=1e-9 * np.abs(info_z).max())


def _sampled_chain(rng, n_edges=6, rho=1.0, drift=True):
    """Measurements drawn from the gate's own error model (geometry.loops): truth, per-edge fit
    noise and per-chunk drift rates with correlation rho → chain_consistency arguments."""
    from scal3r.geometry.sim3 import sim3_exp

    X = [sim3_exp(rng.normal(size=7) * [2, 2, 2, 0.3, 0.3, 0.3, 0.1]) for _ in range(n_edges)]
    covs = []
    for _ in range(n_edges + 1):
        L = rng.normal(size=(7, 7)) * 1e-3
        covs.append(L @ L.T + 1e-7 * np.eye(7))
    Sd = np.diag(rng.uniform(0.5, 2.0, size=7) * 1e-8)
    scale = 30.0 if drift else 0.0
    J_seq = [(scale * rng.normal(size=(7, 7)), scale * rng.normal(size=(7, 7))) for _ in range(n_edges)]
    J_loop = tuple(scale * rng.normal(size=(7, 7)) for _ in range(3))
    return X, covs, Sd, J_seq, J_loop


def _draw(rng, X, covs, Sd, J_seq, J_loop, rho):
    from scal3r.geometry.sim3 import sim3_exp

    n = len(X)
    Ld = np.linalg.cholesky(Sd)
    common = Ld @ rng.normal(size=7)
    d = [np.sqrt(rho) * common + np.sqrt(1 - rho) * (Ld @ rng.normal(size=7)) for _ in range(n + 2)]  # chunks a…b, L
    Z = []
    for k in range(n):
        eps = np.linalg.cholesky(covs[k]) @ rng.normal(size=7)
        xi = eps + J_seq[k][0] @ d[k] + J_seq[k][1] @ d[k + 1]
        Z.append(X[k] @ sim3_exp(-xi))  # X = Z exp(ξ)
    X_ab = np.eye(4)
    for x in X:
        X_ab = X_ab @ x
    eps = np.linalg.cholesky(covs[n]) @ rng.normal(size=7)
    xi = eps + J_loop[0] @ d[0] + J_loop[1] @ d[n] + J_loop[2] @ d[n + 1]
    return Z, X_ab @ sim3_exp(-xi)


@pytest.mark.parametrize("rho, drift", [(0.0, False), (1.0, True), (0.0, True), (0.5, True)])
def test_chain_consistency_is_chi2_7_under_its_model(rho, drift):
    """Loops drawn from the gate's model: without drift the statistic is χ²₇ (mean 7); with drift
    of any correlation the minimum over ρ is at most χ²₇, so at most 0.1 % exceed the 99.9 % gate
    (up to sampling error)."""
    from scal3r.geometry.loops import chain_consistency

    rng = np.random.default_rng(11)
    X, covs, Sd, J_seq, J_loop = _sampled_chain(rng, drift=drift)
    infos = [np.linalg.inv(c) for c in covs]
    chi2 = []
    for _ in range(600):
        Z, Z_L = _draw(rng, X, covs, Sd, J_seq, J_loop, rho)
        c, r, cov = chain_consistency(Z_L, infos[-1], J_loop, Z, infos[:-1], J_seq, Sd)
        chi2.append(c)
    chi2 = np.array(chi2)
    threshold = LoopConfig().gate_threshold()
    assert threshold == pytest.approx(24.3219, abs=1e-3)
    assert np.mean(chi2 > threshold) <= 0.005
    if not drift:
        assert abs(np.mean(chi2) - 7.0) < 0.6  # mean of χ²₇; its σ over 600 draws is 0.15
    else:
        assert np.mean(chi2) < 7.6


def test_chain_consistency_exact_loop_and_gross_error():
    from scal3r.geometry.loops import chain_consistency

    rng = np.random.default_rng(12)
    X, covs, Sd, J_seq, J_loop = _sampled_chain(rng)
    infos = [np.linalg.inv(c) for c in covs]
    X_ab = np.eye(4)
    for x in X:
        X_ab = X_ab @ x
    c, r, _ = chain_consistency(X_ab, infos[-1], J_loop, X, infos[:-1], J_seq, Sd)
    assert c < 1e-12 and np.abs(r).max() < 1e-9
    # A loop off by 2 units of translation and 0.3 rad: far outside the chain's uncertainty.
    c, r, _ = chain_consistency(X_ab @ sim3_exp([2, 0, 0, 0, 0.3, 0, 0]), infos[-1], J_loop, X, infos[:-1], J_seq, Sd)
    assert c > 10 * LoopConfig().gate_threshold()
    with pytest.raises(InputError):
        chain_consistency(X_ab, infos[-1], J_loop, [], [], [], Sd)
    with pytest.raises(ValueError):
        LoopConfig(gate_quantile=1.5)
    assert LoopConfig(gate_quantile=None).gate_threshold() == float("inf")
