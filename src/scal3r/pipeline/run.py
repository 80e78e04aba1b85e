"""`reconstruct(config)`: frames → chunks (+ loop chunks) → network → backend → fusion → exports.

Memory stays bounded by the frames (uint8 at the network size, 3·H·W bytes each; with offload in a
file, read a chunk at a time) plus about one chunk's outputs: the network streams every chunk's
outputs to `.npy` files in a work folder as soon as they exist (only what the backend reads: pose
encoding, depth, confidence), the backend reads them back a chunk pair at a time and keeps per
frame only cameras and a scale (`Reconstruction.depth` is computed on access from the owning
chunk's file), and fusion and export go one frame at a time (with offload the voxel grid also
spills to the work folder beyond `FusionConfig.max_voxels`, and the fused cloud is read back from
there a block at a time). Files are read with positioned reads, not memory maps: touched pages of
a map count in the resident set as long as it lives. Everything is written inside a temporary
sibling of the output directory, renamed into place at the very end (see
`scal3r.io.export.AtomicDirectory`).

Stages report progress as `progress(stage, done, total)` with stages "decode", "loop detection",
"network", "align", "loops", "pose_graph", "fuse", "export", "evaluate".
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from scal3r import __version__
from scal3r.errors import InputError, MissingDependencyError
from scal3r.io import export
from scal3r.pipeline.chunkstore import BACKEND_KEYS, ChunkOutputStore, NpyRows, NpyRowWriter
from scal3r.pipeline.config import ReconstructConfig, resolve_device, resolve_dtype
from scal3r.pipeline.monitor import StageMonitor
from scal3r.progress import ProgressFn, report

WORK_DIR = ".work"  # inside the temporary output directory; removed before the rename
UNTRAINED = ("running UNTRAINED (random) weights: poses, depth and points are meaningless; "
             "pass --weights scal3r.pt for a real reconstruction")


class UntrainedWeightsWarning(UserWarning):
    """The network has random weights (no --weights): the run checks the machinery only."""


@dataclass
class ReconstructResult:
    out_dir: Path
    frames: int
    chunks: int
    loop_chunks: int
    loops_accepted: int
    points: int
    seconds: float
    peak_rss_mib: Optional[float]
    trained: bool  # False: random weights, geometry meaningless
    notes: List[str] = field(default_factory=list)
    metrics: Optional[Dict[str, Any]] = None
    summary: Dict[str, Any] = field(default_factory=dict)


# --- model -----------------------------------------------------------------------------------

def load_release_config(path) -> Dict[str, Any]:
    """A release-style model config (YAML or JSON) → its `model_cfg.sampler_cfg` dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise MissingDependencyError("reading a YAML model config needs PyYAML: pip install pyyaml "
                                         "(or give the same config as JSON)") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"--config {path}: expected a mapping with model_cfg.sampler_cfg")
    cfg = doc.get("model_cfg", doc)
    cfg = cfg.get("sampler_cfg", cfg) if isinstance(cfg, dict) else None
    if not isinstance(cfg, dict):
        raise InputError(f"--config {path}: no model_cfg.sampler_cfg mapping in it")
    return cfg


@dataclass
class ResolvedModel:
    """Which network a run uses, and the settings it implies when the user gave none.

    weights: the file to load (None: random weights); source: "given", "bundled" or "random";
    block_size / overlap / resolution / pose_refinement: the user's, else what the weights file was
    trained for, else the release's 60 / 30 / the model's img_size / none."""

    config: Any
    weights: Optional[Path]
    source: str
    block_size: int
    overlap: int
    resolution: int
    pose_refinement: str
    note: Optional[str] = None


# The release's chunking: what the official weights were trained and evaluated with.
RELEASE_BLOCK, RELEASE_OVERLAP = 60, 30


def resolve_model(config: ReconstructConfig) -> ResolvedModel:
    """--weights / --preset / --config / the bundled model → ResolvedModel (cheap: no weights loaded).

    No --weights, --preset or --config: the bundled model (`scal3r.model.bundled`). --weights with
    a file that stores its configuration (ours): that configuration unless --preset/--config is
    given; other files (the official scal3r.pt, VGGT): --preset, default official."""
    from scal3r.config import ModelConfig
    from scal3r.model.bundled import bundled_available, bundled_path, read_stored_model

    weights = Path(config.weights).expanduser() if config.weights else None
    if weights is not None:
        if weights.is_dir():
            raise InputError(f"--weights {weights}: is a directory, not a checkpoint file")
        if not weights.is_file():
            raise InputError(f"--weights {weights}: no such file")
    source, note = ("given" if weights else "random"), None
    if weights is None and not config.preset and not config.model_config:
        if bundled_available():
            weights, source = bundled_path(), "bundled"
            note = f"using the bundled model {weights.name} (trained here on synthetic worlds; see models/README.md)"
        else:
            note = f"the bundled model {bundled_path()} is missing; running random weights"
    stored = read_stored_model(weights) if weights is not None else None
    if config.model_config:
        model_cfg = ModelConfig.from_release(load_release_config(config.model_config))
    elif config.preset:
        model_cfg = ModelConfig.preset(config.preset)
    elif stored is not None and stored.config is not None:
        model_cfg = stored.config
    else:
        model_cfg = ModelConfig.preset("official" if weights is not None else "small")
    trained_for = stored.inference if stored is not None and stored.config is not None else {}
    block = config.block_size or int(trained_for.get("block_size", RELEASE_BLOCK))
    overlap = config.overlap or int(trained_for.get("overlap", RELEASE_OVERLAP))
    if config.block_size and not config.overlap:
        overlap = min(overlap, block // 2)  # a user block size with the default overlap ratio
    resolution = config.resolution or int(trained_for.get("resolution", model_cfg.aggregator.img_size))
    refinement = config.pose_refinement or str(trained_for.get("pose_refinement", "none"))
    return ResolvedModel(model_cfg, weights, source, block, overlap, resolution, refinement, note)


def build_model(resolved: ResolvedModel):
    """→ (model on CPU in eval mode, notes for the user, trained?). Raises CheckpointError when
    the weights do not fit the model."""
    from scal3r import Scal3R

    model = Scal3R(resolved.config)
    notes: List[str] = []
    if resolved.weights is not None:
        notes += model.load_checkpoint(resolved.weights)
    model.eval()
    return model, notes, resolved.weights is not None


# --- frames ----------------------------------------------------------------------------------

@dataclass
class DecodedFrames:
    """The kept frames at the network size. rgb8: uint8 (N, 3, H, W), a numpy array in RAM or,
    with offload, `NpyRows` of a file (each access reads the frames it asks for; nothing stays
    resident)."""

    rgb8: Any
    names: List[str]
    source_indices: List[int]
    transforms: list
    times: List[Optional[float]]
    skipped: List[str]

    def __len__(self) -> int:
        return int(self.rgb8.shape[0])

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.rgb8.shape[2]), int(self.rgb8.shape[3])

    def hwc(self, i: int) -> np.ndarray:
        """Frame i as uint8 (H, W, 3)."""
        return np.ascontiguousarray(self.rgb8[i].transpose(1, 2, 0))


def decode_frames(source, progress: Optional[ProgressFn] = None, path: Optional[Path] = None) -> DecodedFrames:
    """Decode a `FrameSource` once into uint8 frames, in RAM or (path given) in a `.npy` file
    written a frame at a time and read back as `NpyRows`."""
    h, w = source.size
    shape = (len(source), 3, h, w)
    sink = NpyRowWriter(path, shape, np.uint8) if path else None
    rgb8 = None if sink else np.empty(shape, np.uint8)
    names, indices, transforms, times = [], [], [], []
    try:
        for frame in source.frames(progress):
            if sink is not None:
                sink.write(frame.index, frame.rgb8.numpy())
            else:
                rgb8[frame.index] = frame.rgb8.numpy()
            names.append(frame.name)
            indices.append(frame.source_index)
            transforms.append(frame.transform)
            times.append(frame.time)
    finally:
        if sink is not None:
            sink.close()
    n = len(names)
    return DecodedFrames(rgb8=NpyRows(path, n) if sink else rgb8[:n], names=names, source_indices=indices,
                         transforms=transforms, times=times, skipped=list(source.skipped))


class _TorchFrames:
    """`NpyRows` of uint8 frames as the engine takes them: `frames[[i, j, …]]` → a uint8 tensor."""

    def __init__(self, rows: NpyRows):
        self.rows = rows
        self.shape = rows.shape
        self.ndim = rows.ndim
        self.dtype = rows.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.rows[key]))


def _photometric_writer(write, rgb8, K_given, n_sequential: int, loop_candidates):
    """`write(chunk index, outputs)` with each chunk's poses first refined by direct alignment
    (`scal3r.geometry.photometric`) on the frames the network saw. Chunks from `n_sequential` on
    are loop chunks, one per candidate: their two ends are joined on one time line at the
    revisit (`loop_chunk_times`), so each end's first frame starts from its partner's pose, and
    every frame is aligned against the revisit frame (`frame_a`), which both ends lie near
    (against the network's reference, the middle of the sorted frames, the far edge of one end
    would be a whole window plus the other end away)."""
    import torch

    from scal3r.geometry.loops import loop_chunk_times
    from scal3r.geometry.photometric import refine_pose_encoding

    def refined(b: int, out):
        frames = [int(i) for i in out["frames"]]
        times, anchor = frames, 0
        if b >= n_sequential:
            candidate = loop_candidates[b - n_sequential]
            times, anchor = loop_chunk_times(candidate, frames).tolist(), frames.index(candidate.frame_a)
        images = torch.from_numpy(np.ascontiguousarray(rgb8[frames]))
        K = torch.from_numpy(K_given[frames[0]]).float() if K_given is not None else None
        out = dict(out, pose_enc=refine_pose_encoding(images, out["pose_enc"], out["depth"], out.get("depth_conf"),
                                                      times, K, anchor=anchor))
        return write(b, out)

    return refined


def _engine_frames(rgb8):
    return _TorchFrames(rgb8) if isinstance(rgb8, NpyRows) else rgb8


class _FrameColors:
    """Lazy per-frame colours (H, W, 3) float32 in [0, 1] for fusion."""

    def __init__(self, frames: DecodedFrames):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.frames.hwc(i).astype(np.float32) / 255.0


def frame_timestamps(times: Sequence[Optional[float]], names: Sequence[str],
                     source_indices: Sequence[int]) -> Tuple[np.ndarray, bool]:
    """Per-frame timestamps → (seconds (N,), real?). Video frame times when known; else numbers
    in timestamp-like file names (TUM RGB-D's `1305031102.175304.png`) when they all parse and
    increase; else the source frame number (not real time)."""
    if times and all(t is not None for t in times):
        return np.asarray(times, dtype=np.float64), True
    try:
        stems = [os.path.splitext(n)[0] for n in names]
        values = np.array([float(s) for s in stems], dtype=np.float64)
        if all("." in s for s in stems) and np.all(np.diff(values) > 0):
            return values, True
    except ValueError:
        pass
    return np.asarray(source_indices, dtype=np.float64), False


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, quality=95)


# --- the run -----------------------------------------------------------------------------------

def reconstruct(config: ReconstructConfig, progress: Optional[ProgressFn] = None) -> ReconstructResult:
    """Run a whole reconstruction into `config.out` (see `scal3r.io.export` for the layout).

    Raises `Scal3RError` subclasses for what a user can fix; the output directory then does not
    exist (or, with `overwrite`, is the old one, untouched)."""
    caught: List[str] = []
    with recording_warnings(caught):
        return _reconstruct(config, progress, caught)


def _reconstruct(config: ReconstructConfig, progress: Optional[ProgressFn], caught: List[str]) -> ReconstructResult:
    import torch

    from scal3r.chunks import chunk_ranges, feed_order, reference_first_order
    from scal3r.data.frames import FrameOptions, open_frames
    from scal3r.engine.runner import run_chunks
    from scal3r.geometry import BackendConfig, FusionConfig, assemble, fuse_reconstruction
    from scal3r.pipeline.groundtruth import evaluate, load_ground_truth
    from scal3r.pipeline.loops import LoopPlan, loop_config, plan_loops

    from scal3r.engine.distributed import is_main_process

    config.validate()
    resumable = config.resumable or config.resume
    out = export.AtomicDirectory(config.out, config.overwrite, resumable=resumable, resume=config.resume)
    out.check()  # before any work: an existing output is refused at once
    device = resolve_device(config.device)
    # Under torchrun (the CLI joins the process group) every rank decodes the same frames and plans
    # the same chunks; the engine spreads the chunks over the ranks and hands all outputs to rank 0,
    # which alone runs the backend and writes the output folder.
    main = is_main_process()
    if main:
        out.check_partial()  # likewise a resume without a kept run, or a fresh one over it
    rank_device = _rank_device(device)
    dtype = resolve_dtype(config.dtype, device)
    gt = load_ground_truth(config.gt) if config.gt else None

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    monitor = StageMonitor()

    # Cheap checks first (input headers, then the checkpoint), so that bad input fails at once.
    resolved = resolve_model(config)
    agg_cfg = resolved.config.aggregator
    resolution = resolved.resolution
    options = FrameOptions(resolution=resolution, align=agg_cfg.patch_size, stride=config.stride, fps=config.fps,
                           max_frames=config.max_frames, strict=config.strict)
    source = open_frames(config.input, options)
    with monitor.stage("model"):
        model, notes, trained = build_model(resolved)
        model.to(rank_device)

    with (out if main else _rank_directory(config, resumable)) as tmp:
        work = tmp / WORK_DIR
        work.mkdir(exist_ok=config.resume or not main)
        manifest = None
        if resumable:
            from scal3r.pipeline.resume import Manifest, input_fingerprint, settings_fingerprint

            manifest = Manifest(work, tmp)
            # A rank other than 0 that never got as far as writing its manifest starts afresh:
            # nothing it skips could have been shared before its first memory layer.
            manifest.start(settings_fingerprint(config, resolved),
                           resume=config.resume and (main or (work / "manifest.json").is_file()))
        with monitor.stage("decode"):
            # With offload the frames live in a file too: resident memory then no longer grows
            # with the video's length through them.
            frames = decode_frames(source, progress, work / "frames.npy" if config.offload else None)
        if manifest is not None:
            manifest.check_input(input_fingerprint(frames.rgb8, frames.names))
        n = len(frames)
        monitor.set_items("decode", n)
        K_given = _given_intrinsics(config, frames) if config.intrinsics else None
        H, W = frames.size
        if not 0 < resolved.overlap < resolved.block_size:
            raise InputError(f"overlap {resolved.overlap} must be in [1, block size {resolved.block_size})")
        ranges = chunk_ranges(n, resolved.block_size, resolved.overlap)

        plan = LoopPlan([], [])
        if config.loop:
            with monitor.stage("loop detection"):
                plan = plan_loops(frames.rgb8, ranges, loop_config(config.loop_threshold, config.loop_min_gap),
                                  config.max_loops, progress)
        chunks = [reference_first_order(s, e) for s, e in ranges] + [feed_order(f) for f in plan.frames]

        if not trained:
            warnings.warn(UNTRAINED, UntrainedWeightsWarning, stacklevel=2)
        store = ChunkOutputStore(work / "chunks", BACKEND_KEYS)
        state = None
        if config.offload or resumable:
            from scal3r.engine.state import DiskStore

            # Inside the temporary output: removed with it (or, resumable, kept with it until the
            # whole output is written, so a later --resume finds every rank's state).
            state = DiskStore(work / "state", keep_on_failure=resumable, resume=config.resume,
                              remove_on_success=not resumable)
        from scal3r.engine.distributed import all_ranks_agree

        network_done = manifest is not None and all_ranks_agree(manifest.done("network"), rank_device)
        with monitor.stage("network", items=len(chunks)):
            if not network_done:
                write = store.write
                if resolved.pose_refinement == "photometric":
                    write = _photometric_writer(store.write, frames.rgb8, K_given, len(ranges), plan.candidates)
                run_chunks(model, _engine_frames(frames.rgb8), chunks, sync=config.sync, store=state,
                           device=rank_device, dtype=dtype, progress=progress, on_output=write)
                if manifest is not None:
                    manifest.finish("network")
        del model
        if not main:  # this rank's chunks went to rank 0
            return ReconstructResult(out_dir=None, frames=n, chunks=len(ranges), loop_chunks=len(plan.frames),
                                     loops_accepted=0, points=0, seconds=monitor.total_seconds,
                                     peak_rss_mib=monitor.peak_rss_mib, trained=trained, notes=notes)
        if device == "cuda":
            torch.cuda.empty_cache()

        m = len(ranges)
        with monitor.stage("backend"):
            # Row readers, not arrays: the backend reads a chunk pair at a time, and the
            # reconstruction's depth maps are read again from these files on access.
            rec = assemble([store.rows(b) for b in range(m)], ranges,
                           loops=[store.rows(m + k) for k in range(len(plan.frames))],
                           config=BackendConfig(), progress=progress, intrinsics=K_given)

        with monitor.stage("fusion"):
            # With offload the voxel grid keeps at most FusionConfig.max_voxels in memory and the
            # fused cloud lives in the work folder (exports read it a block at a time).
            cloud = fuse_reconstruction(rec, colors=_FrameColors(frames),
                                        config=FusionConfig(conf_ratio=config.conf_ratio, voxel_size=config.voxel_size,
                                                            spill_dir=str(work / "fusion") if config.offload else None),
                                        progress=progress)

        timestamps, real_times = frame_timestamps(frames.times, frames.names, frames.source_indices)
        K_input = np.stack([frames.transforms[i].intrinsics_to_input(torch.from_numpy(rec.K[i])).numpy()
                            for i in range(n)])
        with monitor.stage("export", items=n):
            _export(tmp, config, rec, cloud, frames, timestamps, K_input, progress, source)

        evaluation = None
        if gt is not None:
            with monitor.stage("evaluate"):
                report(progress, "evaluate", 0, 1)
                evaluation = evaluate(gt, rec.c2w, frames.source_indices, timestamps if real_times else None,
                                      cloud.points, config.eval_threshold, config.eval_voxel)
                report(progress, "evaluate", 1, 1)

        loop_edges = _loop_edges(rec, plan)
        if config.plot:
            from scal3r.viz.plots import LoopEdge, plot_trajectory

            with monitor.stage("plot"):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # matplotlib's font-cache chatter
                        plot_trajectory(tmp / "trajectory.png", rec.c2w,
                                        [LoopEdge(a, b, ok) for a, b, ok in loop_edges],
                                        gt_c2w=None if evaluation is None else evaluation.gt_in_pred,
                                        title=f"{_input_label(config.input)}: {n} frames, {m} chunks, "
                                              f"{sum(ok for *_, ok in loop_edges)} loops closed")
                except MissingDependencyError as err:
                    warnings.warn(f"trajectory.png not written: {err}", RuntimeWarning, stacklevel=2)
        if evaluation is not None:  # the GT path in the prediction's frame, for `scal3r view`
            from scal3r.io.trajectory import write_kitti

            write_kitti(tmp / "gt_trajectory_kitti.txt", evaluation.gt_in_pred)

        shutil.rmtree(work)
        if resumable:  # the other ranks' kept state (see _rank_directory)
            for d in out.target.parent.glob(f"{out.target.name}.partial-rank*"):
                shutil.rmtree(d, ignore_errors=True)
        accepted = sum(1 for r in rec.loops if r.accepted)
        summary = _summary(config, resolved, device, dtype, source, frames, ranges, plan, rec, cloud, monitor, notes, trained,
                           resolution, caught, loop_edges, real_times, n_chunks_run=len(chunks))
        if evaluation is not None:
            summary["metrics"] = evaluation.metrics
        export.write_json(tmp / "summary.json", summary)

    return ReconstructResult(out_dir=out.target, frames=n, chunks=m, loop_chunks=len(plan.frames),
                             loops_accepted=accepted, points=int(cloud.points.shape[0]),
                             seconds=monitor.total_seconds, peak_rss_mib=monitor.peak_rss_mib, trained=trained,
                             notes=notes, metrics=None if evaluation is None else evaluation.metrics,
                             summary=summary)


def _given_intrinsics(config: ReconstructConfig, frames) -> np.ndarray:
    """--intrinsics → K (N, 3, 3) at the network size, in the geometry's convention (pixel centres
    at +0.5; the file's are OpenCV's, at integers), through each frame's resize and crop."""
    import re

    import torch

    from scal3r.io.intrinsics import read_known_intrinsics

    h, w = frames.transforms[0].input_hw
    # A KITTI calib.txt holds P0..P3: the camera is the one whose image_N folder is the input.
    match = re.search(r"image_(\d)", str(config.input))
    K = read_known_intrinsics(config.intrinsics, len(frames), (w, h), camera=int(match.group(1)) if match else 2)
    K = K.copy()
    K[:, 0, 2] += 0.5
    K[:, 1, 2] += 0.5
    return np.stack([frames.transforms[i].intrinsics_to_output(torch.from_numpy(K[i])).numpy()
                     for i in range(len(frames))])


def _rank_device(device: str):
    """This rank's torch device: cuda:LOCAL_RANK under a NCCL process group, else `device`."""
    import os

    import torch
    import torch.distributed as dist

    if device == "cuda" and dist.is_available() and dist.is_initialized():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return torch.device(device)


@contextlib.contextmanager
def _rank_directory(config: ReconstructConfig, resumable: bool) -> Iterator[Path]:
    """The work folder of a rank other than 0 (it writes no output): private and temporary, or,
    resumable, `<out>.partial-rank<r>/` beside the output, kept until rank 0 has written the
    output (rank 0 removes it then), so that a resumed group finds every rank's state."""
    if not resumable:
        with _scratch_directory() as d:
            yield d
        return
    import torch.distributed as dist

    path = export.partial_directory(config.out)
    path = path.parent / f"{path.name}-rank{dist.get_rank()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path


@contextlib.contextmanager
def _scratch_directory() -> Iterator[Path]:
    """A private work folder for ranks other than 0 (they write no output)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="scal3r-rank-") as d:
        yield Path(d)


@contextlib.contextmanager
def recording_warnings(sink: List[str]) -> Iterator[None]:
    """Warnings are shown as usual (by whatever `warnings.showwarning` is in force) and their texts
    also appended to `sink`, for summary.json."""
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            sink.append(str(message))
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _input_label(path) -> str:
    """A short name for plot titles: the folder or file name (the parent's for a generic `images`)."""
    p = Path(path).expanduser()
    return f"{p.parent.name}/{p.name}" if p.name in ("images", "frames", "rgb", "image") and p.parent.name else p.name


def _loop_edges(rec, plan) -> List[Tuple[int, int, bool]]:
    """(frame_a, frame_b, accepted) per loop chunk, at the detected pair's frames."""
    edges = []
    for report_, cand in zip(rec.loops, plan.candidates):
        edges.append((int(cand.frame_a), int(cand.frame_b), bool(report_.accepted)))
    return edges


def to_input_size(image: np.ndarray, transform) -> np.ndarray:
    """A network-size map (h, w) back on the frame's original pixel grid (H_in, W_in), nearest
    neighbour through the frame's resize and crop; 0 where the crop cut the frame."""
    h_in, w_in = transform.input_hw
    sx, sy = transform.scale_xy
    top, left = transform.crop_tl
    h, w = image.shape[:2]
    # Input pixel centre (u + 0.5) lands at (u + 0.5)·s − crop in network pixels (corner coordinates).
    cols = np.floor((np.arange(w_in) + 0.5) * sx).astype(np.int64) - left
    rows = np.floor((np.arange(h_in) + 0.5) * sy).astype(np.int64) - top
    ok_c, ok_r = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
    out = np.zeros((h_in, w_in) + image.shape[2:], dtype=image.dtype)
    out[np.ix_(ok_r, ok_c)] = image[np.ix_(rows[ok_r], cols[ok_c])]
    return out


def _original_frames(source, frames) -> Iterator[Tuple[int, np.ndarray]]:
    """(frame index, uint8 (H_in, W_in, 3) as decoded) for every kept frame, decoded again."""
    wanted = {int(s): i for i, s in enumerate(frames.source_indices)}
    for source_index, _, rgb, _ in source._decoded():
        if int(source_index) in wanted and not isinstance(rgb, str):
            yield wanted[int(source_index)], rgb


def _take_sorted(rows, keep: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """rows[keep] for sorted indices, reading a block of rows at a time (rows: an array or a row
    source such as a spilled cloud's `NpyRows`)."""
    if isinstance(rows, np.ndarray):
        return rows[keep]
    parts = []
    for start in range(0, int(rows.shape[0]), block):
        lo, hi = np.searchsorted(keep, [start, start + block])
        if hi > lo:
            parts.append(rows[start:start + block][keep[lo:hi] - start])
    return np.concatenate(parts) if parts else np.zeros((0,) + tuple(rows.shape[1:]), rows.dtype)


def _export(tmp: Path, config: ReconstructConfig, rec, cloud, frames, timestamps, K_input, progress,
            source=None) -> None:
    n = rec.n_frames
    H, W = frames.size
    at_input = config.output_resolution == "input"
    export.write_trajectories(tmp, rec.c2w, timestamps)
    export.write_release_mat(tmp / "mat.txt", rec.release_c2w())
    export.write_intrinsics_json(tmp / "intrinsics.json", rec.K, W, H, K_input=K_input,
                                 input_sizes=[(t.input_hw[1], t.input_hw[0]) for t in frames.transforms])
    export.write_frame_list(tmp / "frames.txt", frames.source_indices, frames.names, timestamps)
    export.write_points(tmp / "points.ply", cloud.points, cloud.colors)
    # Per-frame files: one pass over the frames, progress per frame.
    steps = n * (int(config.save_depth) + int(config.colmap and config.colmap_images))
    done = 0
    if config.save_depth:
        for folder in ("depth", "confidence"):
            (tmp / folder).mkdir()
        for i in range(n):
            depth, conf = np.asarray(rec.depth[i], np.float32), np.asarray(rec.depth_conf[i], np.float32)
            if at_input:
                depth, conf = to_input_size(depth, frames.transforms[i]), to_input_size(conf, frames.transforms[i])
            np.save(tmp / "depth" / export.frame_file(i), np.ascontiguousarray(depth))
            np.save(tmp / "confidence" / export.frame_file(i), np.ascontiguousarray(conf))
            done += 1
            report(progress, "export", done, steps)
    if config.colmap:
        names = [f"{i:06d}.jpg" for i in range(n)]
        points, colors = cloud.points, cloud.colors
        if points.shape[0] > config.colmap_max_points:
            keep = np.sort(np.random.default_rng(config.seed).choice(points.shape[0], config.colmap_max_points,
                                                                      replace=False))
            points, colors = _take_sorted(points, keep), None if colors is None else _take_sorted(colors, keep)
        if at_input:
            sizes = {t.input_hw for t in frames.transforms}
            if len(sizes) > 1:
                raise InputError("--output-resolution input with COLMAP output needs frames of one size; "
                                 f"these have {len(sizes)} sizes")
            h_in, w_in = sizes.pop()
            export.write_colmap(tmp / "colmap", rec.c2w, K_input, w_in, h_in, names, points, colors)
        else:
            export.write_colmap(tmp / "colmap", rec.c2w, rec.K, W, H, names, points, colors)
        if config.colmap_images:
            (tmp / "colmap" / "images").mkdir()
            images = _original_frames(source, frames) if at_input else ((i, frames.hwc(i)) for i in range(n))
            for i, rgb in images:
                _save_jpeg(tmp / "colmap" / "images" / names[i], rgb)
                done += 1
                report(progress, "export", done, steps)


def _versions() -> Dict[str, str]:
    import torch

    return {"scal3r": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def _device_info(device: str, dtype) -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {"device": device, "dtype": str(dtype).replace("torch.", ""),
                            "threads": torch.get_num_threads()}
    if device == "cuda":
        info["name"] = torch.cuda.get_device_name()
    else:
        info["name"] = platform.processor() or platform.machine()
        info["cpus"] = os.cpu_count()
    return info


def _summary(config, resolved, device, dtype, source, frames, ranges, plan, rec, cloud, monitor, notes, trained, resolution,
             caught, loop_edges, real_times, n_chunks_run) -> Dict[str, Any]:
    H, W = frames.size
    return {
        "scal3r": __version__,
        "input": {"path": str(config.input), "kind": getattr(source, "kind", "frames"),
                  "description": source.description, "planned_frames": len(source),
                  "skipped": list(frames.skipped), "input_size": [int(source.input_size[1]), int(source.input_size[0])],
                  "timestamps": "real" if real_times else "source frame numbers"},
        "frames": rec.n_frames,
        "size": [W, H],
        # The width the network ran at: the requested one rounded to the patch size.
        "resolution": W,
        "requested_resolution": resolution,
        "chunks": len(ranges),
        "chunk_ranges": [list(r) for r in ranges],
        "network_chunks": n_chunks_run,
        "loops": {
            "enabled": bool(config.loop),
            "candidates": len(plan.candidates),
            "loop_chunks": len(plan.frames),
            "accepted": sum(1 for r in rec.loops if r.accepted),
            "edges": [{"frame_a": a, "frame_b": b, "accepted": ok,
                       "similarity": float(c.similarity), **{k: v for k, v in asdict(r).items() if k != "index"}}
                      for (a, b, ok), c, r in zip(loop_edges, plan.candidates, rec.loops)],
        },
        "backend": {"pose_graph_iterations": rec.pose_graph_iterations,
                    "pair_scales": [f.scale for f in rec.pair_fits],
                    "pair_methods": [f.method for f in rec.pair_fits]},
        "points": int(cloud.points.shape[0]),
        "voxel_size": cloud.voxel_size,
        "intrinsics_source": "given" if config.intrinsics else "predicted",
        "model": {"preset": None if config.model_config else config.preset, "config": config.model_config,
                  "weights": str(resolved.weights) if resolved.weights else None, "source": resolved.source,
                  "sync": bool(config.sync), "block_size": resolved.block_size, "overlap": resolved.overlap,
                  "pose_refinement": resolved.pose_refinement, "trained": trained, "notes": notes},
        "device": _device_info(device, dtype),
        "versions": _versions(),
        "settings": config.to_dict(),
        "stages": monitor.to_dict(),
        "seconds": monitor.total_seconds,
        "peak_rss_mib": monitor.peak_rss_mib,
        "warnings": caught,
    }
