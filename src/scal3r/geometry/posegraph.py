"""Sim(3) pose graph over chunk transforms: Levenberg–Marquardt on the Lie algebra, robust kernel.

Nodes are chunk poses S_k (4×4 similarities mapping chunk k's frame into the world). An edge
(i, j, Z) says Z maps chunk j's frame into chunk i's frame; its residual is
r = log(Z⁻¹ S_i⁻¹ S_j) ∈ R⁷ (ρ, ω, σ), expressed at chunk j, with a 7×7 information Ω.
The cost is Σ ρ(rᵀ Ω r) with a robust kernel ρ; node updates are left perturbations
S_k ← exp(δ_k) S_k, which give the exact Jacobians J_j = Jr⁻¹(r)·Adj(S_j⁻¹) and J_i = −J_j.
Nodes in `fixed` (default: the first) hold the gauge.

The normal equations are block-sparse (7×7 blocks on the chain plus loop blocks) and solved with
scipy's sparse LU: a chain of a few hundred chunks solves in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

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


@dataclass
class PoseGraphResult:
    poses: np.ndarray  # (M, 4, 4) optimised node poses
    edge_weights: np.ndarray  # (E,) robust-kernel weight of each edge at the solution (1 = full)
    edge_chi2: np.ndarray  # (E,) rᵀΩr of each edge at the solution
    initial_cost: float
    final_cost: float
    iterations: int
    converged: bool


def _kernel(chi2: np.ndarray, config: PoseGraphConfig):
    """Robust cost ρ(χ²) and its derivative (the IRLS weight) per edge."""
    c2 = config.kernel_width ** 2
    if config.robust_kernel is None:
        return chi2, np.ones_like(chi2)
    if config.robust_kernel == "cauchy":
        return c2 * np.log1p(chi2 / c2), 1.0 / (1.0 + chi2 / c2)
    # Huber on the Mahalanobis norm.
    norm = np.sqrt(chi2)
    c = config.kernel_width
    cost = np.where(norm <= c, chi2, 2.0 * c * norm - c2)
    weight = np.where(norm <= c, 1.0, c / np.maximum(norm, 1e-300))
    return cost, weight


def edge_residuals(poses: np.ndarray, I: np.ndarray, J: np.ndarray, Z_inv: np.ndarray) -> np.ndarray:
    """(E, 7) residuals log(Z⁻¹ S_i⁻¹ S_j)."""
    return sim3_log(Z_inv @ sim3_inverse(poses[I]) @ poses[J])


def optimize_pose_graph(poses: np.ndarray, edges: Sequence[Sim3Edge], config: Optional[PoseGraphConfig] = None,
                        fixed: Sequence[int] = (0,)) -> PoseGraphResult:
    """Minimise Σ ρ(rᵀΩr) over the node poses (M, 4, 4), starting from `poses`."""
    config = config or PoseGraphConfig()
    poses = np.array(poses, dtype=np.float64)
    M = poses.shape[0]
    E = len(edges)
    if E == 0:
        return PoseGraphResult(poses, np.ones(0), np.zeros(0), 0.0, 0.0, 0, True)
    I = np.array([e.i for e in edges])
    J = np.array([e.j for e in edges])
    Z_inv = sim3_inverse(np.stack([e.measurement for e in edges]))
    info = np.stack([np.asarray(e.information, dtype=np.float64) for e in edges])

    free = np.ones(M, dtype=bool)
    free[list(fixed)] = False
    var_index = -np.ones(M, dtype=np.int64)
    var_index[free] = np.arange(int(free.sum()))
    n_var = 7 * int(free.sum())

    def robust_cost(P):
        r = edge_residuals(P, I, J, Z_inv)
        chi2 = np.einsum("ei,eij,ej->e", r, info, r)
        cost, weight = _kernel(chi2, config)
        return r, chi2, float(np.sum(cost)), weight

    r, chi2, cost, weight = robust_cost(poses)
    initial_cost = cost
    lam = config.lambda_init
    converged = False
    iterations = 0
    if n_var == 0:
        return PoseGraphResult(poses, weight, chi2, cost, cost, 0, True)

    # Sparsity pattern of the block normal equations (fixed per graph).
    blocks_r, blocks_c = [], []
    for a, b in [(I, I), (I, J), (J, I), (J, J)]:
        blocks_r.append(a)
        blocks_c.append(b)
    br = np.concatenate(blocks_r)
    bc = np.concatenate(blocks_c)
    ii, jj = np.meshgrid(np.arange(7), np.arange(7), indexing="ij")

    for iterations in range(1, config.max_iterations + 1):
        Jj = sim3_right_jacobian_inverse(r) @ sim3_adjoint(sim3_inverse(poses[J]))  # (E, 7, 7)
        Ji = -Jj
        WO = weight[:, None, None] * info
        # Blocks: H_aa = J_aᵀ W Ω J_a, etc.; g_a = J_aᵀ W Ω r
        JtW_i = np.swapaxes(Ji, 1, 2) @ WO
        JtW_j = np.swapaxes(Jj, 1, 2) @ WO
        H_blocks = np.concatenate([JtW_i @ Ji, JtW_i @ Jj, JtW_j @ Ji, JtW_j @ Jj])  # (4E, 7, 7)
        g = np.zeros(7 * M)
        np.add.at(g.reshape(M, 7), I, np.einsum("eij,ej->ei", JtW_i, r))
        np.add.at(g.reshape(M, 7), J, np.einsum("eij,ej->ei", JtW_j, r))

        keep = free[br] & free[bc]
        rows = (7 * var_index[br[keep]])[:, None, None] + ii
        cols = (7 * var_index[bc[keep]])[:, None, None] + jj
        H = scipy.sparse.coo_matrix((H_blocks[keep].ravel(), (rows.ravel(), cols.ravel())),
                                    shape=(n_var, n_var)).tocsc()
        g_free = g.reshape(M, 7)[free].ravel()
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
            step[free] = delta.reshape(-1, 7)
            candidate = sim3_exp(step) @ poses
            r_new, chi2_new, cost_new, weight_new = robust_cost(candidate)
            if cost_new <= cost:
                decrease = cost - cost_new
                poses, r, chi2, weight = candidate, r_new, chi2_new, weight_new
                prev_cost, cost = cost, cost_new
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
                           final_cost=cost, iterations=iterations, converged=converged)


def chain_poses(relative: Sequence[np.ndarray]) -> np.ndarray:
    """Compose relative similarities Z_{k,k+1} (k+1 → k) into poses (M, 4, 4) with S_0 = I."""
    poses = [np.eye(4)]
    for Z in relative:
        poses.append(poses[-1] @ Z)
    return np.stack(poses)
