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

from typing import Callable, Sequence

import numpy as np

from scal3r.geometry.align import (AlignConfig, ChunkView, _huber_weights, _residual_norms, overlap_points,
                                   weighted_umeyama)
from scal3r.geometry.camera import invert_rigid, reference_row
from scal3r.geometry.sim3 import sim3_exp, sim3_inverse, sim3_log, sim3_matrix, sim3_split

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
    """One alignment's fixed point sample, refittable with any drift rate undone.

    The fit maps `source` into `target` (as `align_views`); the weights are the robust fit's final
    IRLS weights, kept fixed so that the refit is a smooth function of the rate.
    """

    def __init__(self, target: ChunkView, source: ChunkView, frames: Sequence[int], fit_matrix: np.ndarray,
                 config: AlignConfig, point_source: str, max_points: int = 4096):
        frames = [f for f in frames]
        self.ok = False
        if not frames:
            return
        per_frame = max(16, max_points // len(frames))
        cfg = AlignConfig(**{**config.__dict__, "max_points_per_frame": per_frame})
        src, tar, w, rows_src, rows_tar = [], [], [], [], []
        for f in frames:
            s, t, ww, _ = overlap_points(target, source, [f], cfg, point_source)
            src.append(s)
            tar.append(t)
            w.append(ww)
            rows_src.append(np.full(len(s), source.row_of(f)))
            rows_tar.append(np.full(len(s), target.row_of(f)))
        src, tar, w = np.concatenate(src), np.concatenate(tar), np.concatenate(w)
        if src.shape[0] < 16:
            return
        s, R, t = sim3_split(fit_matrix)
        res = _residual_norms(src, tar, float(s), R, t)
        self.src, self.tar = src, tar
        self.weights = w * _huber_weights(res, config.huber_delta)
        self.scale_estimator = config.scale_estimator
        self.rows_src, self.rows_tar = np.concatenate(rows_src), np.concatenate(rows_tar)
        self.k_src, self.k_tar = row_offsets(source), row_offsets(target)
        self.G_src, self.G_tar = canonical_frame(source), canonical_frame(target)
        self.ok = True

    @staticmethod
    def _undo(points, rows, k, G, rate):
        U = undistortion(k, G, rate)[rows]  # (P, 4, 4)
        return np.einsum("pij,pj->pi", U[:, :3, :3], points) + U[:, :3, 3]

    def fit(self, rate: np.ndarray) -> np.ndarray:
        """(4, 4) Sim(3) source → target fitted on the sample with drift rate `rate` undone."""
        src = self._undo(self.src, self.rows_src, self.k_src, self.G_src, rate)
        tar = self._undo(self.tar, self.rows_tar, self.k_tar, self.G_tar, rate)
        s, R, t = weighted_umeyama(src, tar, self.weights, self.scale_estimator)
        return sim3_matrix(np.float64(s), R, t)


def drift_jacobian(fit_of_rate: Callable[[np.ndarray], np.ndarray], step: float = _STEP) -> np.ndarray:
    """(7, 7) J with fit(d) ≈ fit(0)·exp(J·d), by central differences of a fit function."""
    Z0_inv = sim3_inverse(fit_of_rate(np.zeros(7)))
    J = np.zeros((7, 7))
    for i in range(7):
        e = np.zeros(7)
        e[i] = step
        J[:, i] = (sim3_log(Z0_inv @ fit_of_rate(e)) - sim3_log(Z0_inv @ fit_of_rate(-e))) / (2 * step)
    return J
