"""`assemble`: chunk outputs of any feed-forward model → one trajectory in one frame.

Steps: decode each chunk's cameras; Sim(3) between consecutive chunks from the point maps of
their shared frames; loop constraints from loop chunks (checked against the run's own sequential
fits, then each gated on its own by its χ² against the sequential chain between its two chunks,
with the chain's accumulated fit noise and drift — geometry.loops, "Chain-consistency gate" — so
that a false loop is rejected even when no other loop outvotes it); with loops, a Sim(3) pose
graph (without loops the chain of pairwise alignments is already the graph's optimum) that
- weighs every constraint by its alignment's own information, so metres, radians and log-scale
  compare;
- selects loops by graduated non-convexity of a Cauchy kernel, dropping the weakest loop at a time
  (a false loop is reported, not averaged in), then solves least squares on the loops it kept;
- estimates the systematic drift shared by all chunks (geometry.drift), which a loop closing only
  at the end of a long drive makes observable, and undoes it in every frame;
then every frame from the chunk where it is most central, moved into the first chunk's frame.
`BackendConfig.release()` reproduces the release's post-processing instead.

Memory: chunk outputs may be arrays or row sources (`geometry.framemaps`, e.g. the pipeline's
`NpyRows`, which read a depth row from its file when asked). With row sources nothing per pixel
is held: each alignment reads the rows of the frames its two chunks share, and the
reconstruction's depth and confidence are `FrameMaps`, computed on access from the owning chunk's
row and the frame's scale. What stays per frame is its camera, intrinsics and scale.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError
from scal3r.geometry.align import AlignConfig, ChunkView, Sim3Fit, align_views
from scal3r.chunks import reference_row
from scal3r.geometry.camera import as_numpy, decode_pose_encoding, invert_rigid
from scal3r.geometry.drift import DriftSample, canonical_frame, drift_jacobian, row_offsets, undistortion
from scal3r.geometry.framemaps import FrameMaps, SqueezedRows, is_row_source
from scal3r.geometry.loops import LoopConfig, LoopReport, chain_consistency, compose_loop_constraint, split_loop_ends
from scal3r.geometry.posegraph import PoseGraphConfig, Sim3Edge, chain_poses, optimize_pose_graph
from scal3r.geometry.sim3 import nearest_rotation, sim3_adjoint, sim3_inverse, sim3_split
from scal3r.progress import ProgressFn, report


@dataclass
class BackendConfig:
    """Settings of `assemble`. `BackendConfig()` is ours; `BackendConfig.release()` the release's."""

    align: AlignConfig = field(default_factory=AlignConfig)
    point_source: str = "depth"  # "depth": unproject depth with the decoded camera (release); "world_points"
    ownership: str = "central"  # "central": the chunk where the frame is most central; "halves" (release)
    loop: LoopConfig = field(default_factory=LoopConfig)
    pose_graph: PoseGraphConfig = field(default_factory=PoseGraphConfig)
    # A loop whose pose-graph weight ends below this is reported as rejected and removed.
    min_loop_weight: float = 0.1
    # Systematic error of the alignments, estimated with the poses when loops make it observable:
    # "drift" (geometry.drift: a drift rate per row shared by all chunks, which also corrects every
    # frame inside its chunk), "bias" (posegraph: one Sim(3) error shared by every sequential
    # alignment in the chunks' canonical frames), "drift+bias", or "none" (release).
    systematic: str = "drift"
    # Prior σ of the drift rate per row of (ρ in reference-depth units, ω in radians, σ in
    # log-scale): the size of drift expected from a network (a few thousandths of a degree and
    # a tenth of a percent per frame). It keeps directions that the loops hardly observe (with
    # revisits at one place only) from soaking up noise. The loop gate (geometry.loops) uses the
    # same prior, whatever `systematic` says, for the drift a chain accumulates between a loop's
    # ends: 1e-4 rad/row (0.0057°/frame) is ±0.17° of heading and 1e-3/row ±3 % of scale at the
    # ends of a 60-frame chunk, so one sequential alignment (30 frames of stride) drifts by ~0.17°
    # and ~3 % (1σ), and 10 chunks by up to ~1.7° and ~30 % when the drift keeps one sign. (The
    # figure models a network's chunk-level errors; it was not measured on a trained model here:
    # our simulations' drift of 0.01°/frame and 0.1 %/frame, ~6 m ATE over 330 m without loops as
    # in the report that motivated the gate, is 1–2σ of it.)
    drift_sigma: Tuple[float, float, float] = (1e-3, 1e-4, 1e-3)
    bias_sigma: Tuple[float, float, float] = (0.1, 0.05, 0.1)  # prior σ per alignment of (ρ, ω, σ)
    # Edge weights: "information" (each alignment's own uncertainty, so metres, radians and
    # log-scale compare) or "unit" (the release / VGGT-Long: every residual component weighs 1).
    loop_weighting: str = "information"

    def __post_init__(self):
        if self.point_source not in ("depth", "world_points"):
            raise ValueError(f"point_source must be 'depth' or 'world_points', got {self.point_source!r}")
        if self.loop_weighting not in ("information", "unit"):
            raise ValueError(f"loop_weighting must be 'information' or 'unit', got {self.loop_weighting!r}")
        if self.systematic not in ("drift+bias", "drift", "bias", "none"):
            raise ValueError(f"systematic must be 'drift+bias', 'drift', 'bias' or 'none', got {self.systematic!r}")
        if self.ownership not in ("halves", "central"):
            raise ValueError(f"ownership must be 'halves' or 'central', got {self.ownership!r}")

    @classmethod
    def release(cls) -> "BackendConfig":
        """The Scal3R release's post-processing (sim3_wet on depth points, overlap halves)."""
        return cls(align=AlignConfig.release(), point_source="depth", ownership="halves", systematic="none",
                   loop_weighting="unit", pose_graph=PoseGraphConfig(robust_kernel=None), min_loop_weight=0.0,
                   loop=LoopConfig(gate_quantile=None))


@dataclass
class Reconstruction:
    """Per-frame cameras and depths in the first chunk's frame (N frames, M chunks)."""

    c2w: np.ndarray  # (N, 4, 4) float64 rigid camera-to-world (rotation orthonormal)
    K: np.ndarray  # (N, 3, 3) float64 intrinsics
    # (N, H, W) float32 z-depth in world units (chunk depth × frame scale) and the owning chunk's
    # confidence: `FrameMaps` from `assemble` (depth[i] read and scaled on access; np.asarray
    # for the whole array), or arrays.
    depth: FrameMaps
    depth_conf: FrameMaps
    chunk_sim3: np.ndarray  # (M, 4, 4) [[sR, t], [0, 1]]: chunk frame → world
    src_chunk: np.ndarray  # (N,) chunk that supplied each frame
    src_row: np.ndarray  # (N,) row of the frame in that chunk (ascending order)
    frame_scale: np.ndarray  # (N,) chunk units → world units of each frame (its chunk's scale, times the
    #                          drift correction; without one, c2w·diag(s,s,s,1) is the release's c2w)
    pair_fits: List[Sim3Fit]  # (M−1) fits: chunk b+1 → chunk b
    loops: List[LoopReport]  # one per loop chunk given
    pose_graph_iterations: int = 0
    drift_rate: np.ndarray = field(default_factory=lambda: np.zeros(7))  # estimated drift per row (geometry.drift)

    @property
    def n_frames(self) -> int:
        return int(self.c2w.shape[0])

    def release_c2w(self) -> np.ndarray:
        """(N, 4, 4) the release's camera-to-world: chunk Sim(3) @ inverse(w2c), scale in the rotation block."""
        out = self.c2w.copy()
        out[:, :3, :3] *= self.frame_scale[:, None, None]
        return out


_KEYS = ("pose_enc", "depth", "depth_conf")
_MIN_FOV = 1e-3  # radians


def _float_array(x) -> np.ndarray:
    a = as_numpy(x, dtype=None)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def _to_view(out: Mapping, frames: np.ndarray, label: str, need_points: bool,
             intrinsics: Optional[np.ndarray] = None) -> ChunkView:
    for key in _KEYS:
        if key not in out:
            raise InputError(f"{label} has no '{key}'")
    # Keep float64 when given (simulations); network outputs stay float32 to save memory. Row
    # sources (files read a row at a time) stay row sources.
    depth = _float_rows(out["depth"])
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = SqueezedRows(depth) if is_row_source(depth) else depth[..., 0]
    if depth.ndim != 3:
        raise InputError(f"{label}: depth must be (n, H, W) or (n, H, W, 1), got {tuple(depth.shape)}")
    n, H, W = depth.shape
    if n != len(frames):
        raise InputError(f"{label} has {n} depth rows for {len(frames)} frames")
    conf = _float_rows(out["depth_conf"])
    if conf.ndim == 4 and conf.shape[-1] == 1:
        conf = SqueezedRows(conf) if is_row_source(conf) else conf[..., 0]
    if tuple(conf.shape) != tuple(depth.shape):
        raise InputError(f"{label}: depth_conf shape {tuple(conf.shape)} differs from depth {tuple(depth.shape)}")
    pose_enc = as_numpy(out["pose_enc"])
    if pose_enc.shape != (n, 9):
        raise InputError(f"{label}: pose_enc must be ({n}, 9), got {tuple(pose_enc.shape)}")
    fov = pose_enc[:, 7:9]
    bad_fov = np.isfinite(fov).all(axis=1) & ~((fov > _MIN_FOV) & (fov < np.pi - _MIN_FOV)).all(axis=1)
    if bad_fov.any():
        # A field of view outside (0, π) has no pinhole camera (an untrained or failing camera
        # head gives 0): clamp it so the output stays finite, keep those frames out of every
        # alignment, and say so.
        warnings.warn(f"{label}: {int(bad_fov.sum())} of {n} frames have a field of view outside (0, π); "
                      "their intrinsics are clamped and they are left out of the alignment", RuntimeWarning,
                      stacklevel=3)
        pose_enc = pose_enc.copy()
        pose_enc[:, 7:9] = np.clip(fov, _MIN_FOV, np.pi - _MIN_FOV)
    try:
        w2c, K = decode_pose_encoding(pose_enc, H, W)
    except InputError as err:
        raise InputError(f"{label}: {err}") from None
    bad_share = _non_finite_share(depth, conf)
    if bad_share > 0:
        warnings.warn(f"{label}: {bad_share:.1%} of depth/confidence values are NaN or infinite; "
                      "they are ignored", RuntimeWarning, stacklevel=3)
    wp = wpc = None
    if need_points:
        if "world_points" not in out or "world_points_conf" not in out:
            raise InputError(f"{label} has no 'world_points'/'world_points_conf' (point_source='world_points')")
        wp = _float_array(out["world_points"])
        wpc = _float_array(out["world_points_conf"])
    usable = ~bad_fov
    if intrinsics is not None:
        # A known calibration replaces the predicted field of view wherever depth becomes points;
        # then a broken predicted FoV no longer keeps a frame out of the alignments.
        K = np.asarray(intrinsics, dtype=np.float64)[np.asarray(frames, dtype=np.int64)]
        usable = np.ones(n, dtype=bool)
    return ChunkView(frames=np.asarray(frames, dtype=np.int64), w2c=w2c, K=K, depth=depth, depth_conf=conf,
                     world_points=wp, world_points_conf=wpc, usable=usable)


def _float_rows(x):
    """`_float_array`, except that a float32/float64 row source stays one (read when used)."""
    if is_row_source(x):
        if np.dtype(x.dtype) not in (np.float32, np.float64):
            raise InputError(f"chunk outputs of dtype {x.dtype}: expected float32 or float64")
        return x
    return _float_array(x)


def _non_finite_share(depth, conf) -> float:
    """Share of depth/confidence pixels where either is NaN or infinite (a few rows at a time
    for row sources, so a chunk is never all in memory)."""
    if not is_row_source(depth) and not is_row_source(conf):
        bad = ~np.isfinite(depth) | ~np.isfinite(conf)
        return float(bad.mean()) if bad.any() else 0.0
    n = int(depth.shape[0])
    count = 0
    for start in range(0, n, 8):
        rows = slice(start, min(start + 8, n))
        count += int(np.count_nonzero(~np.isfinite(np.asarray(depth[rows])) | ~np.isfinite(np.asarray(conf[rows]))))
    return count / float(np.prod(depth.shape)) if count else 0.0


def _check_ranges(chunk_ranges, n_outputs: int) -> List[Tuple[int, int]]:
    ranges = [(int(a), int(b)) for a, b in as_numpy(chunk_ranges, dtype=np.int64).reshape(-1, 2)]
    if len(ranges) != n_outputs:
        raise InputError(f"{n_outputs} chunk outputs for {len(ranges)} chunk ranges")
    if not ranges:
        raise InputError("no chunks to assemble")
    if ranges[0][0] != 0:
        raise InputError(f"the first chunk must start at frame 0, got {ranges[0][0]}")
    for b, (s, e) in enumerate(ranges):
        if e <= s:
            raise InputError(f"chunk {b} has an empty range [{s}, {e})")
        if b > 0:
            ps, pe = ranges[b - 1]
            if s <= ps or e <= pe:
                raise InputError(f"chunk ranges must increase: chunk {b - 1} [{ps}, {pe}), chunk {b} [{s}, {e})")
            if s >= pe:
                raise InputError(f"chunks {b - 1} [{ps}, {pe}) and {b} [{s}, {e}) share no frame; "
                                 "consecutive chunks must overlap to be aligned")
            if pe - s == 1:
                warnings.warn(f"chunks {b - 1} and {b} share a single frame; their alignment rests on "
                              "one depth map and may be poorly constrained", RuntimeWarning, stacklevel=3)
    return ranges


def frame_owners(chunk_ranges: Sequence[Tuple[int, int]], ownership: str = "halves") -> Tuple[np.ndarray, np.ndarray]:
    """Which chunk supplies each frame. → (src_chunk (N,), src_row (N,)).

    "halves" (release): the frames two consecutive chunks share go, first half (⌊n/2⌋ frames) to
    the earlier chunk, the rest to the later one. "central": the chunk in which the frame's row
    is closest to the chunk's reference row (relative to the chunk length), ties to the earlier.
    """
    N = max(e for _, e in chunk_ranges)
    src_chunk = -np.ones(N, dtype=np.int64)
    if ownership == "halves":
        for b, (s, e) in enumerate(chunk_ranges):
            src_chunk[s:e] = np.where(src_chunk[s:e] < 0, b, src_chunk[s:e])
        for b in range(len(chunk_ranges) - 1):
            s_next = chunk_ranges[b + 1][0]
            e_prev = chunk_ranges[b][1]
            shared = np.arange(s_next, e_prev)
            src_chunk[shared[: len(shared) // 2]] = b
            src_chunk[shared[len(shared) // 2:]] = b + 1
    else:
        best = np.full(N, np.inf)
        for b, (s, e) in enumerate(chunk_ranges):
            n = e - s
            rows = np.arange(n)
            dist = np.abs(rows - reference_row(n)) / n
            frames = np.arange(s, e)
            better = dist < best[frames] - 1e-12
            src_chunk[frames[better]] = b
            best[frames[better]] = dist[better]
    if np.any(src_chunk < 0):
        missing = np.nonzero(src_chunk < 0)[0]
        raise InputError(f"frames {missing[:5].tolist()}… are in no chunk")
    starts = np.array([s for s, _ in chunk_ranges])
    return src_chunk, np.arange(N) - starts[src_chunk]


def _loop_edge(k: int, loop: Mapping, views: List[ChunkView], ranges, seq_scales: np.ndarray, seq_ratios: np.ndarray,
               config: BackendConfig, intrinsics: Optional[np.ndarray] = None) -> Tuple[Optional[tuple], LoopReport]:
    """Loop chunk → ((edge between its two chunks, its two alignments), report); None when rejected."""
    if "frames" not in loop:
        raise InputError(f"loop {k} has no 'frames'")
    frames = as_numpy(loop["frames"], dtype=np.int64).reshape(-1)
    end_a, end_b = split_loop_ends(frames)
    label = f"loop {k}"
    def reject(reason, chunks=(-1, -1), **kw):
        warnings.warn(f"{label} (frames {int(end_a[0])}…{int(end_b[0])}) dropped: {reason}", RuntimeWarning, stacklevel=3)
        return None, LoopReport(index=k, frames=(int(end_a[0]), int(end_b[0])), chunks=chunks, accepted=False,
                                reason=reason, **kw)

    def best_chunk(end):
        counts = [(np.isin(end, v.frames).sum(), -b) for b, v in enumerate(views)]
        n, neg_b = max(counts)
        return (-neg_b if n > 0 else -1), end[np.isin(end, views[-neg_b].frames)] if n > 0 else end[:0]

    ca, shared_a = best_chunk(end_a)
    cb, shared_b = best_chunk(end_b)
    if ca < 0 or cb < 0:
        return reject("it shares no frame with a chunk at one end")
    if ca == cb:
        return reject(f"both ends lie in chunk {ca}", (ca, cb))
    if ca > cb:
        ca, cb, shared_a, shared_b = cb, ca, shared_b, shared_a
    try:
        view = _to_view(loop, frames, label, config.point_source == "world_points", intrinsics)
    except InputError as err:
        return reject(str(err), (ca, cb))
    cfg = config.align
    from scal3r.geometry.align import overlap_points, robust_sim3

    fits = []
    for c, shared in ((ca, shared_a), (cb, shared_b)):
        ids: list = []
        src, tar, w, used = overlap_points(views[c], view, shared, cfg, config.point_source, frame_ids=ids)
        if src.shape[0] < max(config.loop.min_points, cfg.min_points):
            return reject(f"only {src.shape[0]} confident points shared with chunk {c}", (ca, cb))
        try:
            fits.append(robust_sim3(src, tar, w, cfg, n_frames=used, frame_ids=np.concatenate(ids)))
        except InputError as err:
            return reject(str(err), (ca, cb))
    # Checks calibrated on the sequential alignments of the same run: a loop side may not fit much
    # worse, nor at a scale far outside the spread of the pair scales.
    ratio = max(f.rms_residual / max(f.spread, 1e-300) for f in fits)
    max_ratio = config.loop.max_residual_ratio
    if seq_ratios.size:
        max_ratio = max(max_ratio, config.loop.residual_factor * float(np.median(seq_ratios)))
    log_seq = np.log(seq_scales) if seq_scales.size else np.zeros(1)
    ref_log = float(np.median(log_seq))
    spread_log = 1.4826 * float(np.median(np.abs(log_seq - ref_log)))
    max_log = max(np.log(config.loop.max_scale_ratio), 4.0 * spread_log)
    worst_scale = max(abs(np.log(f.scale) - ref_log) for f in fits)
    Z, info = compose_loop_constraint(fits[0].matrix, fits[1].matrix, fits[0].information, fits[1].information)
    z_scale = float(sim3_split(Z)[0])
    if ratio > max_ratio:
        return reject(f"alignment residual {ratio:.3f} of the point spread exceeds {max_ratio:.3f}",
                      (ca, cb), scale=z_scale, residual_ratio=ratio)
    if worst_scale > max_log:
        return reject(f"implausible scale: a side's scale is {np.exp(worst_scale):.2f}× the typical pair scale "
                      f"(limit {np.exp(max_log):.2f}×)", (ca, cb), scale=z_scale, residual_ratio=ratio)
    edge = Sim3Edge(i=ca, j=cb, measurement=Z, information=info, kind="loop")
    # What the drift model needs to refit this constraint: per end (chunk view, loop view, frames, fit).
    sides = ((views[ca], view, fits[0]), (views[cb], view, fits[1]))
    return (edge, sides), LoopReport(index=k, frames=(int(end_a[0]), int(end_b[0])), chunks=(ca, cb), accepted=True,
                            scale=z_scale, residual_ratio=ratio)


def assemble(chunk_outputs: Sequence[Mapping], chunk_ranges, loops: Optional[Sequence[Mapping]] = None,
             config: Optional[BackendConfig] = None, progress: Optional[ProgressFn] = None,
             chunk_poses: Optional[np.ndarray] = None, intrinsics: Optional[np.ndarray] = None) -> Reconstruction:
    """Chunk outputs → per-frame cameras and depths in the first chunk's frame.

    chunk_outputs[b]: dict with rows in ascending frame order chunk_ranges[b][0] … [1]−1:
      "pose_enc" (n, 9), "depth" (n, H, W[, 1]), "depth_conf" (n, H, W) and, for
      point_source="world_points", "world_points" (n, H, W, 3), "world_points_conf" (n, H, W).
    chunk_ranges: (M, 2) half-open frame ranges, increasing, consecutive chunks overlapping.
    loops: optional loop chunks, each a dict with "frames" (n,) (global frame of each row) and the
      same per-row keys; each gives a constraint between the chunks holding its two ends.
    chunk_poses: optional (M, 4, 4) chunk → world Sim(3)s to use instead of estimating them
      (e.g. an oracle in simulations); they are re-expressed in the first chunk's frame.
    intrinsics: optional (N, 3, 3) known K of every frame at the depth maps' size (pixel centres
      at +0.5, the geometry's convention), used instead of the predicted field of view.
    """
    config = config or BackendConfig()
    ranges = _check_ranges(chunk_ranges, len(chunk_outputs))
    M = len(ranges)
    need_points = config.point_source == "world_points"
    if intrinsics is not None:
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        n_frames = int(ranges[-1][1])
        if intrinsics.shape != (n_frames, 3, 3):
            raise InputError(f"intrinsics must be ({n_frames}, 3, 3) for {n_frames} frames, got {intrinsics.shape}")
    views = [_to_view(out, np.arange(s, e), f"chunk {b}", need_points, intrinsics) for b, (out, (s, e)) in
             enumerate(zip(chunk_outputs, ranges))]
    H, W = views[0].depth.shape[-2:]
    for b, v in enumerate(views):
        if v.depth.shape[-2:] != (H, W):
            raise InputError(f"chunk {b} has {v.depth.shape[-2:]} depth maps, chunk 0 has {(H, W)}")

    fits: List[Sim3Fit] = []
    reports: List[LoopReport] = []
    iterations = 0
    drift_rate = np.zeros(7)
    if chunk_poses is not None:
        poses = np.asarray(chunk_poses, dtype=np.float64)
        if poses.shape != (M, 4, 4):
            raise InputError(f"chunk_poses must be ({M}, 4, 4), got {poses.shape}")
        poses = sim3_inverse(poses[0]) @ poses
    else:
        fits = _align_sequence(views, ranges, config, progress)
        poses = chain_poses([f.matrix for f in fits])
        loop_edges, reports = _loop_edges(loops or [], views, ranges, fits, config, progress, intrinsics)
        if loop_edges:
            seq_maps, seq_sides, loop_maps, loop_sides = _drift_maps(views, fits, loop_edges, config)
            loop_edges = _gate_loops(loop_edges, reports, fits, seq_sides, loop_sides, config)
        if loop_edges:
            poses, drift_rate, iterations = _solve_pose_graph(poses, fits, loop_edges, reports, config, views,
                                                              seq_maps, loop_maps)
            report(progress, "pose_graph", 1, 1)
    return _compose_frames(views, ranges, poses, fits, reports, iterations, config, drift_rate)


def _align_sequence(views, ranges, config: BackendConfig, progress) -> List[Sim3Fit]:
    """Fit b maps chunk b+1 into chunk b, from the frames they share."""
    fits = []
    for b in range(len(views) - 1):
        shared = range(ranges[b + 1][0], ranges[b][1])
        fits.append(align_views(views[b], views[b + 1], shared, config.align, config.point_source,
                                label=f"chunks {b} and {b + 1}"))
        report(progress, "align", b + 1, len(views) - 1)
    return fits


def _loop_edges(loops, views, ranges, fits, config: BackendConfig, progress, intrinsics=None):
    reports: List[LoopReport] = []
    edges: List[Tuple[int, Sim3Edge, tuple]] = []  # (loop index, edge, its two alignments)
    seq_scales = np.array([f.scale for f in fits if f.method == "points"])
    seq_ratios = np.array([f.rms_residual / max(f.spread, 1e-300) for f in fits if f.method == "points"])
    for k, loop in enumerate(loops):
        found, rep = _loop_edge(k, loop, views, ranges, seq_scales, seq_ratios, config, intrinsics)
        reports.append(rep)
        if found is not None:
            edges.append((k, *found))
        report(progress, "loops", k + 1, len(loops))
    return edges, reports


def _drift_maps(views, fits, loop_edges, config: BackendConfig):
    """Drift Jacobians (geometry.drift) of every constraint → (seq, seq_sides, loops, loop_sides):
    seq [J (7, 7)] per sequential fit for one rate shared by all chunks (the pose graph's drift
    model), seq_sides [(Jᵗ, Jˢ)] for the rates of its target and its source chunk alone, loops
    {loop index: J} and loop_sides {loop index: (Jᵃ, Jᵇ, Jᴸ)} for the rates of chunk a, chunk b and
    the loop chunk (the gate's model, geometry.loops). Zero where a fit keeps no point sample
    (camera fallbacks), and everywhere when neither the gate nor the drift model needs them."""
    zero = np.zeros((7, 7))
    want_gate = config.loop.gate_quantile is not None and bool(loop_edges)
    want_drift = "drift" in config.systematic
    seq, seq_sides = [zero] * len(fits), [(zero, zero)] * len(fits)
    loops = {k: zero for k, _, _ in loop_edges}
    loop_sides = {k: (zero, zero, zero) for k, _, _ in loop_edges}
    if not (want_gate or want_drift):
        return seq, seq_sides, loops, loop_sides
    est = config.align.scale_estimator
    for b, f in enumerate(fits):
        if f.method != "points":
            continue
        sample = DriftSample(views[b], views[b + 1], f, est)
        if not sample.ok:
            continue
        if want_drift:
            seq[b] = drift_jacobian(sample.fits)
        if want_gate:
            seq_sides[b] = (drift_jacobian(lambda r: sample.fits(r, "target")),
                            drift_jacobian(lambda r: sample.fits(r, "source")))
    for k, _, (side_a, side_b) in loop_edges:
        sa = DriftSample(*side_a, est)
        sb = DriftSample(*side_b, est)
        if not (sa.ok and sb.ok):
            continue
        if want_drift:
            loops[k] = drift_jacobian(lambda r: sa.fits(r) @ sim3_inverse(sb.fits(r)))
        if want_gate:
            # Each side maps the loop chunk (source) into its end's chunk (target).
            fa, fb = sa.fits(np.zeros(7))[0], sb.fits(np.zeros(7))[0]
            loop_sides[k] = (drift_jacobian(lambda r: sa.fits(r, "target") @ sim3_inverse(fb)),
                             drift_jacobian(lambda r: fa @ sim3_inverse(sb.fits(r, "target"))),
                             drift_jacobian(lambda r: sa.fits(r, "source") @ sim3_inverse(sb.fits(r, "source"))))
    return seq, seq_sides, loops, loop_sides


def _drift_covariance(config: BackendConfig) -> np.ndarray:
    """(7, 7) prior covariance of the drift rate per row, (ρ, ω, σ), from `drift_sigma`."""
    sr, sw, ss = config.drift_sigma
    return np.diag(np.array([sr] * 3 + [sw] * 3 + [ss]) ** 2)


def _gate_loops(loop_edges, reports, fits, seq_sides, loop_sides, config: BackendConfig):
    """Chain-consistency gate (geometry.loops): each loop's χ² against the sequential fits between
    its chunks; loops above the χ²₇ quantile are rejected (and reported). → the loops kept."""
    if config.loop.gate_quantile is None:
        return loop_edges
    threshold = config.loop.gate_threshold()
    Sd = _drift_covariance(config)
    kept = []
    for k, e, sides in loop_edges:
        chain = range(e.i, e.j)
        chi2, _, _ = chain_consistency(e.measurement, e.information, loop_sides[k], [fits[b].matrix for b in chain],
                                       [fits[b].information for b in chain], [seq_sides[b] for b in chain], Sd)
        reports[k].chi2, reports[k].chi2_threshold = chi2, threshold
        if chi2 > threshold:
            reports[k].accepted = False
            reports[k].reason = (f"inconsistent with the sequential chain between chunks {e.i} and {e.j} "
                                 f"(frames {reports[k].frames[0]}…{reports[k].frames[1]}): χ² {chi2:.1f} > "
                                 f"{threshold:.1f} (χ²₇ {100 * config.loop.gate_quantile:g} %)")
            warnings.warn(f"loop {k} dropped: {reports[k].reason}", RuntimeWarning, stacklevel=3)
            continue
        kept.append((k, e, sides))
    return kept


def _solve_pose_graph(poses, fits, loop_edges, reports, config: BackendConfig, views, seq_maps, loop_maps):
    """Sequential + loop edges → (optimised chunk poses, drift rate (7,), iterations); loops the
    solution disowns are dropped (and reported)."""
    seq = [Sim3Edge(b, b + 1, f.matrix, _information(f.information, config), "sequential") for b, f in enumerate(fits)]
    loops = [(k, dataclasses.replace(e, information=_information(e.information, config))) for k, e, _ in loop_edges]
    use_drift = "drift" in config.systematic
    use_bias = "bias" in config.systematic
    sigmas = []
    if use_drift:
        sigmas += [config.drift_sigma[0]] * 3 + [config.drift_sigma[1]] * 3 + [config.drift_sigma[2]]
    if use_bias:
        sigmas += [config.bias_sigma[0]] * 3 + [config.bias_sigma[1]] * 3 + [config.bias_sigma[2]]
    if not sigmas:
        poses, iterations, _ = _robust_solve(poses, seq, loops, reports, config, None)
        return poses, np.zeros(7), iterations
    prior = np.diag(1.0 / np.array(sigmas) ** 2)
    for b, e in enumerate(seq):
        maps = []
        if use_drift:
            maps.append(seq_maps[b])
        if use_bias:
            maps.append(sim3_adjoint(canonical_frame(views[e.j])))
        e.bias_map = np.concatenate(maps, axis=1)
    for k, e in loops:
        maps = []
        if use_drift:
            maps.append(loop_maps[k])
        if use_bias:
            maps.append(np.zeros((7, 7)))  # a loop is not a sequential alignment
        e.bias_map = np.concatenate(maps, axis=1)
    poses, iterations, shared = _robust_solve(poses, seq, loops, reports, config, prior)
    return poses, (shared[:7] if use_drift and shared.size else np.zeros(7)), iterations


def _information(info: np.ndarray, config: BackendConfig) -> np.ndarray:
    return info if config.loop_weighting == "information" else np.eye(7)


# Graduated non-convexity: the robust kernel's width shrinks from wide (nearly least squares, so
# the solver is not trapped by the drifted start) to its final value.
_GNC_WIDTHS = (100.0, 30.0, 10.0, 3.0, 1.0)


def _robust_solve(chain, seq_edges, loop_edges, reports, config: BackendConfig, prior):
    """Least squares from the chain, then the robust kernel by graduated non-convexity; while the
    weakest loop ends below `min_loop_weight` it is dropped (one at a time, so a false loop's pull
    on its neighbours does not take them down with it) and the graph is solved again; the loops
    that remain get a final least-squares solve. → (poses, iterations, shared bias)

    The kernel width is in units of the loops' own spread: multiplied by √(median loop χ² / 6.35)
    (the median of χ²₇) when that exceeds 1, so constraints whose information is optimistic by a
    common factor are not all taken for outliers.

    The kernel is a vote among loops. With the chain-consistency gate on, a single loop left has
    nothing to be outvoted by: the gate has already judged it against the chain, with the chain's
    drift, which the graph's sequential information (fit noise only) does not carry — there the
    kernel would only let go of a loop because the chain's noise looks smaller than its drift.
    So one remaining loop is solved by least squares, not dropped.
    """
    active = list(loop_edges)
    iterations = 0
    l2 = dataclasses.replace(config.pose_graph, robust_kernel=None)
    gated = config.loop.gate_quantile is not None
    while True:
        edges = seq_edges + [e for _, e in active]
        start = optimize_pose_graph(chain, edges, l2, bias_prior=prior)
        iterations += start.iterations
        if config.pose_graph.robust_kernel is None or not active or (gated and len(active) == 1):
            for k, _ in active:
                reports[k].weight = 1.0
            return start.poses, iterations, start.bias
        loop_chi2 = start.edge_chi2[len(seq_edges):]
        inflation = float(np.sqrt(max(1.0, np.median(loop_chi2) / 6.35)))
        poses, bias = start.poses, start.bias
        for factor in _GNC_WIDTHS:
            # Intermediate widths only need to move the solution along; the last one converges.
            stage = config.pose_graph if factor == _GNC_WIDTHS[-1] else \
                dataclasses.replace(config.pose_graph, relative_tolerance=1e-6)
            result = optimize_pose_graph(poses, edges, stage, bias_prior=prior, bias_init=bias,
                                         kernel_width=config.pose_graph.kernel_width * factor * inflation)
            poses, bias = result.poses, result.bias
            iterations += result.iterations
        weights = result.edge_weights[len(seq_edges):]
        for (k, _), w in zip(active, weights):
            reports[k].weight = float(w)
        worst = int(np.argmin(weights))
        if weights[worst] >= config.min_loop_weight:
            # The kernel chose the loops; least squares on them gives the estimate (a kernel that
            # keeps down-weighting good loops a little only weakens their correction).
            final = optimize_pose_graph(poses, edges, l2, bias_prior=prior, bias_init=bias)
            return final.poses, iterations + final.iterations, final.bias
        k = active[worst][0]
        reports[k].accepted = False
        reports[k].reason = (f"inconsistent with the other constraints (pose-graph weight "
                             f"{weights[worst]:.3f} < {config.min_loop_weight})")
        warnings.warn(f"loop {k} dropped: {reports[k].reason}", RuntimeWarning, stacklevel=4)
        del active[worst]


def _compose_frames(views, ranges, poses, fits, reports, iterations, config: BackendConfig,
                    drift_rate: np.ndarray) -> Reconstruction:
    """Every frame from its owning chunk, with the chunk's drift undone, moved into the world frame."""
    H, W = views[0].depth.shape[-2:]
    src_chunk, src_row = frame_owners(ranges, config.ownership)
    N = src_chunk.shape[0]
    scales, rotations, translations = sim3_split(poses)
    rotations = nearest_rotation(rotations)  # float32 SVDs (release mode) leave ~1e-7 non-orthogonality
    c2w = np.zeros((N, 4, 4))
    K = np.zeros((N, 3, 3))
    scale_of_frame = np.ones(N)
    for b, v in enumerate(views):
        frames = np.nonzero(src_chunk == b)[0]
        if frames.size == 0:
            continue
        rows = src_row[frames]
        local = invert_rigid(v.w2c[rows])
        frame_scale = np.full(len(rows), scales[b])
        if np.any(drift_rate):
            U = undistortion(row_offsets(v)[rows], canonical_frame(v), drift_rate)  # (n, 4, 4) similarities
            local = U @ local
            u_scale = np.cbrt(np.linalg.det(U[:, :3, :3]))
            local[:, :3, :3] = nearest_rotation(local[:, :3, :3] / u_scale[:, None, None])
            frame_scale = frame_scale * u_scale
        c2w[frames, :3, :3] = rotations[b] @ local[:, :3, :3]
        c2w[frames, :3, 3] = scales[b] * local[:, :3, 3] @ rotations[b].T + translations[b]
        c2w[frames, 3, 3] = 1.0
        K[frames] = v.K[rows]
        scale_of_frame[frames] = frame_scale
    # Depth and confidence stay in the chunk outputs: frame i is read (and scaled) on access.
    depth = FrameMaps([v.depth for v in views], src_chunk, src_row, (H, W), scale=scale_of_frame)
    depth_conf = FrameMaps([v.depth_conf for v in views], src_chunk, src_row, (H, W))
    return Reconstruction(c2w=c2w, K=K, depth=depth, depth_conf=depth_conf, chunk_sim3=poses, src_chunk=src_chunk,
                          src_row=src_row, frame_scale=scale_of_frame, pair_fits=fits, loops=reports,
                          pose_graph_iterations=iterations, drift_rate=drift_rate)
