import numpy as np

from scal3r.geometry.posegraph import PoseGraphConfig, Sim3Edge, chain_poses, optimize_pose_graph
from scal3r.geometry.sim3 import sim3_exp, sim3_inverse, sim3_log


def _truth(rng, M):
    xi = rng.normal(size=(M, 7)) * [5, 5, 5, 1, 1, 1, 0.3]
    xi[0] = 0
    return sim3_exp(xi)


def _rel(P, i, j):
    return sim3_inverse(P[i]) @ P[j]


def test_chain_poses_composes_relatives():
    rng = np.random.default_rng(0)
    P = _truth(rng, 6)
    np.testing.assert_allclose(chain_poses([_rel(P, k, k + 1) for k in range(5)]), P, atol=1e-10)


def test_exact_graph_is_recovered_from_a_perturbed_start():
    rng = np.random.default_rng(1)
    M = 12
    P = _truth(rng, M)
    pairs = [(k, k + 1) for k in range(M - 1)] + [(0, 6), (2, 11), (4, 9)]
    edges = [Sim3Edge(i, j, _rel(P, i, j), np.eye(7)) for i, j in pairs]
    start = P.copy()
    start[1:] = sim3_exp(0.1 * rng.normal(size=(M - 1, 7))) @ P[1:]
    for kernel in (None, "huber", "cauchy"):
        res = optimize_pose_graph(start, edges, PoseGraphConfig(robust_kernel=kernel))
        assert res.converged
        np.testing.assert_allclose(res.poses, P, atol=1e-8)
        assert res.final_cost < 1e-16
    # The first node is held fixed.
    np.testing.assert_array_equal(res.poses[0], start[0])


def test_loop_spreads_chain_drift():
    rng = np.random.default_rng(2)
    M = 20
    P = _truth(rng, M)
    # Every sequential edge carries the same small bias (drift); an exact loop 0–19 closes it.
    bias = sim3_exp([0.01, 0, 0.02, 0, 0.004, 0, 0.003])
    seq = [_rel(P, k, k + 1) @ bias for k in range(M - 1)]
    edges = [Sim3Edge(k, k + 1, Z, np.eye(7)) for k, Z in enumerate(seq)]
    edges.append(Sim3Edge(0, M - 1, _rel(P, 0, M - 1), np.eye(7) * 1e4, kind="loop"))
    chain = chain_poses(seq)
    res = optimize_pose_graph(chain, edges, PoseGraphConfig(robust_kernel=None))
    assert res.converged
    err_chain = np.linalg.norm(sim3_log(sim3_inverse(P) @ chain), axis=1)
    err_opt = np.linalg.norm(sim3_log(sim3_inverse(P) @ res.poses), axis=1)
    # Drift grows linearly along the chain; closing the loop pins the end and leaves a bridge
    # whose worst point (the middle) carries about a quarter of the open chain's end error.
    assert err_opt[-1] < 0.01 * err_chain[-1]
    assert err_opt.max() < 0.35 * err_chain.max()


def test_cauchy_kernel_down_weights_a_false_loop():
    rng = np.random.default_rng(3)
    M = 15
    P = _truth(rng, M)
    noise = lambda: sim3_exp(0.001 * rng.normal(size=7))
    info = np.eye(7) * 1e6  # σ = 1e-3, matching the noise
    pairs = [(k, k + 1) for k in range(M - 1)] + [(0, 5), (3, 10), (6, 14), (1, 12)]
    edges = [Sim3Edge(i, j, noise() @ _rel(P, i, j), info) for i, j in pairs]
    false = Sim3Edge(2, 13, sim3_exp([3, -2, 1, 0.5, 0.2, 0.1, 0.4]) @ _rel(P, 2, 13), info, kind="loop")
    clean = optimize_pose_graph(P, edges, PoseGraphConfig(robust_kernel="cauchy", kernel_width=3.0))
    res = optimize_pose_graph(P, edges + [false], PoseGraphConfig(robust_kernel="cauchy", kernel_width=3.0))
    assert res.edge_weights[-1] < 1e-6
    # χ²₇ of true edges stays below 36 (p < 1e-5), i.e. Cauchy weight 1/(1 + χ²/9) > 0.2.
    assert np.all(res.edge_weights[:-1] > 0.2)
    # A Cauchy edge pulls with at most ~c²/|r| whatever its error, against true edges of
    # stiffness 1e6: the false loop moves the solution by less than one true edge's noise (1e-3),
    # while at full weight it moves it by ~5 (see the L2 solve).
    diff = np.linalg.norm(sim3_log(sim3_inverse(clean.poses) @ res.poses), axis=1)
    assert diff.max() < 1e-3
    l2 = optimize_pose_graph(P, edges + [false], PoseGraphConfig(robust_kernel=None))
    assert np.linalg.norm(sim3_log(sim3_inverse(clean.poses) @ l2.poses), axis=1).max() > 1.0
