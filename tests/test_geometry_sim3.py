import numpy as np
from scipy.linalg import expm

from scal3r.geometry.sim3 import (hat, nearest_rotation, sim3_adjoint, sim3_exp, sim3_inverse, sim3_log,
                                  sim3_matrix, sim3_right_jacobian_inverse, sim3_split, so3_exp, so3_log)


def _algebra(xi):
    A = np.zeros((4, 4))
    A[:3, :3] = hat(xi[3:6]) + xi[6] * np.eye(3)
    A[:3, 3] = xi[:3]
    return A


def _tangents(rng, n=60):
    xi = rng.normal(size=(n, 7))
    xi[:, 3:6] *= 0.8
    xi[:10, 3:6] *= 1e-9  # near-zero rotation
    xi[10:20, 6] *= 1e-12  # near-zero scale
    xi[20:25, 3:6] = 0.0
    xi[25:30, 6] = 0.0
    return xi


def test_exp_matches_matrix_exponential_and_log_inverts_it():
    rng = np.random.default_rng(0)
    xi = _tangents(rng)
    T = sim3_exp(xi)
    for x, t in zip(xi, T):
        np.testing.assert_allclose(t, expm(_algebra(x)), atol=1e-12)
    np.testing.assert_allclose(sim3_log(T), xi, atol=1e-12)
    np.testing.assert_allclose(so3_log(so3_exp(xi[:, 3:6])), xi[:, 3:6], atol=1e-12)


def test_split_inverse_and_adjoint():
    rng = np.random.default_rng(1)
    T = sim3_exp(rng.normal(size=(20, 7)))
    s, R, t = sim3_split(T)
    np.testing.assert_allclose(sim3_matrix(s, R, t), T, atol=1e-12)
    np.testing.assert_allclose(T @ sim3_inverse(T), np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
    eta = 0.3 * rng.normal(size=(20, 7))
    lhs = T @ sim3_exp(eta) @ sim3_inverse(T)
    rhs = sim3_exp(np.einsum("nij,nj->ni", sim3_adjoint(T), eta))
    np.testing.assert_allclose(lhs, rhs, atol=1e-10)


def test_right_jacobian_inverse_matches_finite_differences():
    rng = np.random.default_rng(2)
    for _ in range(10):
        xi = 0.5 * rng.normal(size=7)
        Jinv = sim3_right_jacobian_inverse(xi)
        h = 1e-6
        num = np.zeros((7, 7))
        for k in range(7):
            e = np.zeros(7)
            e[k] = h
            num[:, k] = (sim3_log(sim3_exp(xi) @ sim3_exp(e)) - sim3_log(sim3_exp(xi) @ sim3_exp(-e))) / (2 * h)
        # Central differences: O(h²) truncation and ~1e-16/h rounding → 1e-8.
        np.testing.assert_allclose(Jinv, num, atol=1e-8)


def test_nearest_rotation_projects_onto_so3():
    rng = np.random.default_rng(3)
    R = so3_exp(rng.normal(size=(5, 3)))
    noisy = R + 1e-7 * rng.normal(size=R.shape)
    P = nearest_rotation(noisy)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.broadcast_to(np.eye(3), P.shape), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(P), 1.0, atol=1e-14)
    np.testing.assert_allclose(P, R, atol=1e-6)
