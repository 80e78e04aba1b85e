"""Systematic drift of chunk predictions: errors that grow with the distance from the reference row.

A feed-forward model predicts a chunk relative to its reference frame (row r = ceil(n/2) − 1), and
its errors grow with the distance from that row: a little heading and a little scale per row,
with the same sign chunk after chunk. Aligning consecutive chunks on their overlap (rows well
after the reference in one chunk, well before it in the next) turns that into a Sim(3) error of
every sequential alignment that the alignment's own residuals cannot show; summed over a hundred
chunks it is the tens of metres and the "9× scale drift" of long monocular runs. Its size depends
on the geometry of each overlap (where the overlap lies relative to the two reference cameras),
so it is not one constant error per alignment.

Model: chunk c's prediction of its row k (k = row − r) is the truth moved by
    D_c(k) = G_c · exp(k·d) · G_c⁻¹,
with G_c the chunk's canonical frame (its reference camera, one unit = the reference frame's
median depth) and d ∈ R⁷ (ρ, ω, σ) a drift rate per row shared by all chunks. An alignment fitted
on drifted points is, to first order in d, the alignment of the undrifted points times
exp(−J·d); `DriftSample` + `drift_jacobian` measure J by refitting one fixed point sample with
the drift undone. The pose graph estimates d with the chunk poses when loops make it observable
(posegraph's shared bias, with J as the edge's bias map), and `undistortion` then also corrects
every frame inside its chunk.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from scal3r.geometry.align import ChunkView, Sim3Fit
from scal3r.chunks import reference_row
from scal3r.geometry.camera import invert_rigid
from scal3r.geometry.sim3 import hat, sim3_exp, sim3_inverse, sim3_log, sim3_matrix

_STEP = 1e-4  # finite-difference step of the drift rate per row: k·step ≲ 1e-2 for chunks ≤ 200 rows


def canonical_frame(view: ChunkView) -> np.ndarray:
    """(4, 4) similarity from a chunk's canonical frame into its own frame: the reference camera,
    with one unit = the median depth of the reference frame. Chunk frames of different models (or
    of one model at different scales) agree in this frame, and so do their systematic errors."""
    ref = reference_row(len(view.frames))
    G = invert_rigid(view.w2c[ref])
    d = np.asarray(view.depth[ref])
    ok = np.isfinite(d) & (d > 0)
    G[:3, :3] *= float(np.median(d[ok])) if ok.any() else 1.0
    return G


def row_offsets(view: ChunkView) -> np.ndarray:
    """(n,) k = row − reference row of each row."""
    n = len(view.frames)
    return np.arange(n) - reference_row(n)


def undistortion(k: np.ndarray, G: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """(n, 4, 4) similarities U_k = G exp(−k·rate) G⁻¹ that undo the drift of rows k (chunk frame)."""
    k = np.asarray(k, dtype=np.float64)
    return G @ sim3_exp(-k[:, None] * np.asarray(rate, dtype=np.float64)) @ sim3_inverse(G)


class DriftSample:
    """An alignment's kept point sample (`Sim3Fit.sample`), refittable with a drift rate undone.

    The fit maps `source` into `target` (as `align_views`); the weights are the robust fit's final
    IRLS weights, kept fixed so that the refit is a smooth function of the rate.
    """

    def __init__(self, target: ChunkView, source: ChunkView, fit: Sim3Fit, scale_estimator: str = "rms"):
        self.ok = fit.sample is not None and fit.sample[0].shape[0] >= 16
        if not self.ok:
            return
        self.src, self.tar, self.weights, ids = fit.sample
        row_src = {int(f): source.row_of(int(f)) for f in np.unique(ids)}
        row_tar = {int(f): target.row_of(int(f)) for f in np.unique(ids)}
        self.rows_src = np.array([row_src[int(f)] for f in ids])
        self.rows_tar = np.array([row_tar[int(f)] for f in ids])
        self.scale_estimator = scale_estimator
        self.k_src, self.k_tar = row_offsets(source), row_offsets(target)
        self.G_src, self.G_tar = canonical_frame(source), canonical_frame(target)

    @staticmethod
    def _undo(points, rows, k, G, rates):
        """points (P, 3) → (B, P, 3) with each of the rates (B, 7) undone, to first order:
        p − k·(G ξ^ G⁻¹) p — exact for the derivative at 0, which is all drift_jacobian takes,
        and far cheaper than an exponential per row."""
        A = G @ np.stack([_algebra(r) for r in rates]) @ sim3_inverse(G)  # (B, 4, 4)
        # (B, P, 3) = A₃ₓ₃ p + a, written as three broadcasts (einsum/matmul are slow at this shape).
        moved = (points[None, :, 0:1] * A[:, None, :3, 0] + points[None, :, 1:2] * A[:, None, :3, 1]
                 + points[None, :, 2:3] * A[:, None, :3, 2] + A[:, None, :3, 3])
        return points - k[rows][None, :, None] * moved

    def fits(self, rates: np.ndarray, side: str = "both") -> np.ndarray:
        """(B, 4, 4) Sim(3)s source → target fitted on the sample with each drift rate (B, 7) undone.

        side: undo the rate in both chunks ("both", one rate shared by all chunks), or in the
        "source" or "target" chunk only (that chunk's own rate, for drift independent per chunk).
        """
        if side not in ("both", "source", "target"):
            raise ValueError(f"side must be 'both', 'source' or 'target', got {side!r}")
        rates = np.atleast_2d(rates)
        src = self._undo(self.src, self.rows_src, self.k_src, self.G_src, rates) if side != "target" else \
            np.broadcast_to(self.src, (rates.shape[0],) + self.src.shape)
        tar = self._undo(self.tar, self.rows_tar, self.k_tar, self.G_tar, rates) if side != "source" else \
            np.broadcast_to(self.tar, (rates.shape[0],) + self.tar.shape)
        return _batched_umeyama(src, tar, self.weights, self.scale_estimator)


def _batched_umeyama(src: np.ndarray, tar: np.ndarray, weights: np.ndarray, scale_estimator: str) -> np.ndarray:
    """weighted_umeyama over a batch: src, tar (B, P, 3), weights (P,) → (B, 4, 4)."""
    w = weights / np.sum(weights)
    src_c = np.einsum("p,bpi->bi", w, src)
    tar_c = np.einsum("p,bpi->bi", w, tar)
    src0 = src - src_c[:, None]
    tar0 = tar - tar_c[:, None]
    src_var = np.einsum("p,bpi,bpi->b", w, src0, src0)
    tar_var = np.einsum("p,bpi,bpi->b", w, tar0, tar0)
    H = np.einsum("bpi,bpj->bij", src0 * w[None, :, None], tar0, optimize=True)
    U, S, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, 1, 2) @ np.swapaxes(U, 1, 2)))
    d = np.where(d == 0, 1.0, d)
    D = np.zeros_like(H)
    D[:, 0, 0] = 1.0
    D[:, 1, 1] = 1.0
    D[:, 2, 2] = d
    R = np.swapaxes(Vt, 1, 2) @ D @ np.swapaxes(U, 1, 2)
    if scale_estimator == "rms":
        s = np.sqrt(tar_var / src_var)
    else:
        s = (S[:, 0] + S[:, 1] + d * S[:, 2]) / src_var
    t = tar_c - s[:, None] * np.einsum("bij,bj->bi", R, src_c)
    return sim3_matrix(s, R, t)


def _algebra(xi: np.ndarray) -> np.ndarray:
    """(7,) tangent (ρ, ω, σ) → (4, 4) matrix ξ^ = [[ω× + σI, ρ], [0, 0]]."""
    A = np.zeros((4, 4))
    A[:3, :3] = hat(xi[3:6]) + xi[6] * np.eye(3)
    A[:3, 3] = xi[0:3]
    return A


def drift_jacobian(fits_of_rates: Callable[[np.ndarray], np.ndarray], step: float = _STEP) -> np.ndarray:
    """(7, 7) J with fit(d) ≈ fit(0)·exp(J·d), by forward differences of a batched fit function
    (rates (B, 7) → Sim(3)s (B, 4, 4)).

    Forward differences suffice: the fit is smooth in the rate and the drift itself is first
    order (k·step ≲ 1e-2), so the O(step) truncation is far below the noise of any alignment.
    """
    rates = np.concatenate([np.zeros((1, 7)), step * np.eye(7)])
    Z = fits_of_rates(rates)
    return (sim3_log(sim3_inverse(Z[0]) @ Z[1:]) / step).T
