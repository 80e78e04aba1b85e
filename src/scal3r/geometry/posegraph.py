"""Sim(3) pose graph over chunk transforms: Levenberg–Marquardt on the Lie algebra, robust kernel.

Nodes are chunk poses S_k (4×4 similarities mapping chunk k's frame into the world). An edge
(i, j, Z) says Z maps chunk j's frame into chunk i's frame; its residual is
r = log(Z⁻¹ S_i⁻¹ S_j) ∈ R⁷ (ρ, ω, σ), expressed at chunk j, with a 7×7 information Ω.
The cost is Σ ρ(rᵀ Ω r) with a robust kernel ρ; node updates are left perturbations
S_k ← exp(δ_k) S_k, which give the exact Jacobians J_j = Jr⁻¹(r)·Adj(S_j⁻¹) and J_i = −J_j.
Nodes in `fixed` (default: the first) hold the gauge.

Systematic error. Alignments of consecutive chunks share a bias: a network's pose and scale
errors grow away from each chunk's reference frame in the same way in every chunk, so every
sequential Sim(3) is off by about the same amount *in the chunk's own camera frame* (e.g. a few
hundredths of a degree of heading and a fraction of a percent of scale per chunk: over a hundred
chunks that is the "scale drift" of monocular reconstructions). Noise-based information cannot
see a bias, and a loop that closes only at the end of a long drive then gets spread along the
chain in the wrong proportions. An edge may therefore carry `bias_map` C (7×7): its residual
becomes r = log(Z⁻¹ S_i⁻¹ S_j) − C b with one bias b ∈ R⁷ shared by all such edges (C maps the
bias from the canonical camera frame into the edge's tangent), and b is estimated with the poses
under a weak prior. Without loops b is unobservable and stays 0 (the prior), so the solution is
the chain.

The normal equations are block-sparse (7×7 blocks on the chain plus loop blocks, plus a dense
border for b) and solved with scipy's sparse LU: a few hundred chunks solve in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from scal3r.geometry.sim3 import sim3_adjoint, sim3_exp, sim3_inverse, sim3_log, sim3_right_jacobian_inverse


@dataclass
class PoseGraphConfig:
    """Levenberg–Marquardt settings and robust kernel of the Sim(3) pose graph."""

    max_iterations: int = 100
    robust_kernel: Optional[str] = "cauchy"  # None, "huber" or "cauchy"
    kernel_width: float = 3.0  # in Mahalanobis units: residuals beyond ~this many σ are down-weighted
    lambda_init: float = 1e-6
    relative_tolerance: float = 1e-12  # stop when the cost decreases by less than this fraction

    def __post_init__(self):
        if self.robust_kernel not in (None, "huber", "cauchy"):
            raise ValueError(f"robust_kernel must be None, 'huber' or 'cauchy', got {self.robust_kernel!r}")


@dataclass
class Sim3Edge:
    """A relative Sim(3) constraint: `measurement` maps node j's frame into node i's frame."""

    i: int
    j: int
    measurement: np.ndarray  # (4, 4)
    information: np.ndarray = field(default_factory=lambda: np.eye(7))  # (7, 7), at node j
    kind: str = "sequential"  # "sequential" or "loop"
    bias_map: Optional[np.ndarray] = None  # (7, B): shared bias (B values) → this edge's tangent


@dataclass
class PoseGraphResult:
    poses: np.ndarray  # (M, 4, 4) optimised node poses
    edge_weights: np.ndarray  # (E,) robust-kernel weight of each edge at the solution (1 = full)
    edge_chi2: np.ndarray  # (E,) rᵀΩr of each edge at the solution
    initial_cost: float
    final_cost: float
    iterations: int
    converged: bool
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))  # shared systematic bias (size of bias_prior)


def _kernel(chi2: np.ndarray, config: PoseGraphConfig, width: Optional[float] = None):
    """Robust cost ρ(χ²) and its derivative (the IRLS weight) per edge."""
    c = config.kernel_width if width is None else width
    c2 = c * c
    if config.robust_kernel is None:
        return chi2, np.ones_like(chi2)
    if config.robust_kernel == "cauchy":
        return c2 * np.log1p(chi2 / c2), 1.0 / (1.0 + chi2 / c2)
    # Huber on the Mahalanobis norm.
    norm = np.sqrt(chi2)
    cost = np.where(norm <= c, chi2, 2.0 * c * norm - c2)
    weight = np.where(norm <= c, 1.0, c / np.maximum(norm, 1e-300))
    return cost, weight


def edge_residuals(poses: np.ndarray, I: np.ndarray, J: np.ndarray, Z_inv: np.ndarray) -> np.ndarray:
    """(E, 7) residuals log(Z⁻¹ S_i⁻¹ S_j)."""
    return sim3_log(Z_inv @ sim3_inverse(poses[I]) @ poses[J])


def optimize_pose_graph(poses: np.ndarray, edges: Sequence[Sim3Edge], config: Optional[PoseGraphConfig] = None,
                        fixed: Sequence[int] = (0,), bias_prior: Optional[np.ndarray] = None,
                        bias_init: Optional[np.ndarray] = None, kernel_width: Optional[float] = None
                        ) -> PoseGraphResult:
    """Minimise Σ ρ(rᵀΩr) (+ bᵀ Ω_b b) over the node poses (M, 4, 4), starting from `poses`.

    bias_prior: (7, 7) information of the shared bias b; b is estimated when given and some edge
    has a `bias_map`. kernel_width overrides config.kernel_width (for graduated schedules).
    """
    config = config or PoseGraphConfig()
    poses = np.array(poses, dtype=np.float64)
    M = poses.shape[0]
    E = len(edges)
    if E == 0:
        return PoseGraphResult(poses, np.ones(0), np.zeros(0), 0.0, 0.0, 0, True, np.zeros(0))
    I = np.array([e.i for e in edges])
    J = np.array([e.j for e in edges])
    Z_inv = sim3_inverse(np.stack([e.measurement for e in edges]))
    info = np.stack([np.asarray(e.information, dtype=np.float64) for e in edges])
    use_bias = bias_prior is not None and any(e.bias_map is not None for e in edges)
    nb = np.shape(bias_prior)[0] if use_bias else 0
    C = np.stack([e.bias_map if e.bias_map is not None else np.zeros((7, nb)) for e in edges])
    bias = np.zeros(nb) if bias_init is None or not use_bias else np.array(bias_init, dtype=np.float64)
    prior = np.asarray(bias_prior, dtype=np.float64) if use_bias else np.zeros((0, 0))

    free = np.ones(M, dtype=bool)
    free[list(fixed)] = False
    var_index = -np.ones(M, dtype=np.int64)
    var_index[free] = np.arange(int(free.sum()))
    n_pose = 7 * int(free.sum())
    n_var = n_pose + nb

    def evaluate(P, b):
        log_e = edge_residuals(P, I, J, Z_inv)
        r = log_e - np.einsum("eij,j->ei", C, b) if use_bias else log_e
        chi2 = np.einsum("ei,eij,ej->e", r, info, r)
        cost, weight = _kernel(chi2, config, kernel_width)
        return log_e, r, chi2, float(np.sum(cost) + b @ prior @ b), weight

    log_e, r, chi2, cost, weight = evaluate(poses, bias)
    initial_cost = cost
    lam = config.lambda_init
    converged = False
    iterations = 0
    if n_var == 0:
        return PoseGraphResult(poses, weight, chi2, cost, cost, 0, True, bias)

    ii, jj = np.meshgrid(np.arange(7), np.arange(7), indexing="ij")
    br = np.concatenate([I, I, J, J])
    bc = np.concatenate([I, J, I, J])
    keep = free[br] & free[bc]
    rows_pp = ((7 * var_index[br[keep]])[:, None, None] + ii).ravel()
    cols_pp = ((7 * var_index[bc[keep]])[:, None, None] + jj).ravel()

    for iterations in range(1, config.max_iterations + 1):
        Jj = sim3_right_jacobian_inverse(log_e) @ sim3_adjoint(sim3_inverse(poses[J]))  # (E, 7, 7)
        WO = weight[:, None, None] * info
        JtW_j = np.swapaxes(Jj, 1, 2) @ WO  # J_iᵀWΩ = −J_jᵀWΩ
        A_jj = JtW_j @ Jj
        H_blocks = np.concatenate([A_jj, -A_jj, -A_jj, A_jj])  # (I,I), (I,J), (J,I), (J,J)
        g_j = np.einsum("eij,ej->ei", JtW_j, r)
        g = np.zeros((M, 7))
        np.add.at(g, I, -g_j)
        np.add.at(g, J, g_j)
        rows, cols, vals = [rows_pp], [cols_pp], [H_blocks[keep].ravel()]
        g_free = g[free].ravel()
        if use_bias:
            # ∂r/∂b = −C: border blocks H_kb = J_kᵀWΩ(−C), H_bb = Σ CᵀWΩC + Ω_b.
            JtWC = JtW_j @ C  # (E, 7, nb)
            border = np.zeros((M, 7, nb))
            np.add.at(border, I, JtWC)
            np.add.at(border, J, -JtWC)
            H_bb = np.einsum("eki,ekl,elj->ij", C, WO, C) + prior
            g_b = -np.einsum("eki,ekl,el->i", C, WO, r) + prior @ bias
            fb = np.nonzero(free)[0]
            bi, bj = np.meshgrid(np.arange(7), np.arange(nb), indexing="ij")  # (7, nb)
            r_idx = ((7 * var_index[fb])[:, None, None] + bi).ravel()
            c_idx = (n_pose + bj[None].repeat(len(fb), 0)).ravel()
            qi, qj = np.meshgrid(np.arange(nb), np.arange(nb), indexing="ij")
            rows += [r_idx, c_idx, (n_pose + qi).ravel()]
            cols += [c_idx, r_idx, (n_pose + qj).ravel()]
            vals += [border[fb].ravel(), border[fb].ravel(), H_bb.ravel()]  # (k, b) and its mirror (b, k)
            g_free = np.concatenate([g_free, g_b])
        H = scipy.sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                    shape=(n_var, n_var)).tocsc()
        diag = H.diagonal()
        improved = False
        for _ in range(12):
            A = H + scipy.sparse.diags(lam * np.maximum(diag, 1e-12))
            try:
                delta = -scipy.sparse.linalg.spsolve(A.tocsc(), g_free)
            except RuntimeError:
                lam *= 10.0
                continue
            if not np.all(np.isfinite(delta)):
                lam *= 10.0
                continue
            step = np.zeros((M, 7))
            step[free] = delta[:n_pose].reshape(-1, 7)
            cand_poses = sim3_exp(step) @ poses
            cand_bias = bias + delta[n_pose:] if use_bias else bias
            new = evaluate(cand_poses, cand_bias)
            if new[3] <= cost:
                decrease = cost - new[3]
                prev_cost = cost
                poses, bias = cand_poses, cand_bias
                log_e, r, chi2, cost, weight = new
                lam = max(lam / 3.0, 1e-12)
                improved = True
                break
            lam *= 4.0
        if not improved:
            converged = True  # no damped step lowers the cost: a (local) minimum
            break
        if decrease <= config.relative_tolerance * max(prev_cost, 1e-300) or np.max(np.abs(delta)) < 1e-12:
            converged = True
            break
    return PoseGraphResult(poses=poses, edge_weights=weight, edge_chi2=chi2, initial_cost=initial_cost,
                           final_cost=cost, iterations=iterations, converged=converged, bias=bias)


def chain_poses(relative: Sequence[np.ndarray]) -> np.ndarray:
    """Compose relative similarities Z_{k,k+1} (k+1 → k) into poses (M, 4, 4) with S_0 = I."""
    poses = [np.eye(4)]
    for Z in relative:
        poses.append(poses[-1] @ Z)
    return np.stack(poses)
