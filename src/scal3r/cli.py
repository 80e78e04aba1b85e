"""The `scal3r` command line: the only module that talks to the terminal.

Each subcommand has an `_add_<name>(subparsers)` function that declares its arguments and sets
`func` to a `_run_<name>(args) -> int` function. `main` turns `Scal3RError` into one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Dict, Optional, Sequence

from scal3r import __version__
from scal3r.errors import Scal3RError


class TerminalProgress:
    """Renders `progress(stage, done, total)` calls as one updating line on stderr with rate and ETA."""

    def __init__(self, quiet: bool = False, min_interval: float = 0.2):
        self.quiet = quiet
        self.min_interval = min_interval
        self._stage: Optional[str] = None
        self._start = 0.0
        self._first_done = 0
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        """`stage` may carry a detail after " · " (e.g. the current loss), shown but not part of
        the stage's identity (the rate is measured over the whole stage, from the first count it
        reported: a resumed run that starts at 900 of 1800 has done 0 steps in this process)."""
        if self.quiet:
            return
        stage, _, detail = stage.partition(" · ")
        now = time.monotonic()
        if stage != self._stage:
            if self._stage is not None:
                sys.stderr.write("\n")
            self._stage, self._start, self._first_done, self._last = stage, now, done, 0.0
        finished = total > 0 and done >= total
        if not finished and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - self._start
        rate = (done - self._first_done) / elapsed if elapsed > 0 else 0.0
        if total > 0:
            eta_text = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
            line = f"{stage}: {done}/{total} ({rate:.2f}/s, ETA {eta_text})"
        else:
            line = f"{stage}: {done} ({rate:.2f}/s)"
        if detail:
            line += f" {detail}"
        sys.stderr.write("\r" + line.ljust(70))
        if finished:
            sys.stderr.write("\n")
            self._stage = None
        sys.stderr.flush()

    def interrupt(self) -> None:
        """End an unfinished progress line so that other output starts on a line of its own."""
        if self._stage is not None and not self.quiet:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._last = 0.0


# --- scal3r forward: a random- or loaded-weight network pass (until `demo` exists) -------------

def _add_forward(sub) -> None:
    p = sub.add_parser("forward", help="run the network on random frames (smoke test of the install)")
    p.add_argument("--preset", default="tiny", help="model preset (tiny, small, official)")
    p.add_argument("--weights", default=None, help="checkpoint (official Scal3R / VGGT layout, .pt or .safetensors)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--block-size", type=int, default=8)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_forward)


def _run_forward(args) -> int:
    import torch

    from scal3r import Scal3R
    from scal3r.chunks import chunk_ranges
    from scal3r.engine import infer_chunks
    from scal3r.engine.distributed import init_from_env, is_main_process, shutdown

    init_from_env("cpu")  # under torchrun: join the gloo group, chunks are spread over the ranks
    try:
        torch.manual_seed(args.seed)
        model = Scal3R.from_preset(args.preset)
        if args.weights:
            for note in model.load_checkpoint(args.weights):
                print(f"note: {note}", file=sys.stderr)
        elif is_main_process():
            print("note: random (untrained) weights; outputs are meaningless, this only checks the install")
        size = model.config.aggregator.img_size
        images = torch.rand(args.frames, 3, size * 2 // 3 // 14 * 14, size)
        ranges = chunk_ranges(args.frames, args.block_size, args.overlap)
        t0 = time.perf_counter()
        outs = infer_chunks(model, images, ranges, sync=True)
        dt = time.perf_counter() - t0
        if outs is not None:
            lo = min(float(o["depth"].min()) for o in outs)
            hi = max(float(o["depth"].max()) for o in outs)
            print(f"{len(ranges)} chunks, {args.frames} frames {tuple(images.shape[-2:])}: {dt:.2f}s "
                  f"({args.frames / dt:.1f} frames/s); depth range {lo:.3g}..{hi:.3g}")
    finally:
        shutdown()
    return 0


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="render a synthetic video with ground-truth poses, depth and points",
                       description="Render a procedural city drive or courtyard walk with exact ground truth: "
                                   "images/, depth/ (float32 metres, 0 = sky), poses_kitti.txt, poses_tum.txt, "
                                   "intrinsics.json, scene_points.ply, meta.json (and video.mp4 with --video).")
    p.add_argument("--scene", choices=("city", "walk"), default="city")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    traj = p.add_mutually_exclusive_group()
    traj.add_argument("--trajectory", choices=("loop", "figure8", "noloop"), default="loop",
                      help="loop: ends where it started; figure8: crosses itself; noloop: never returns")
    traj.add_argument("--loop", dest="trajectory", action="store_const", const="loop", help="same as --trajectory loop")
    traj.add_argument("--no-loop", dest="trajectory", action="store_const", const="noloop",
                      help="same as --trajectory noloop")
    p.add_argument("--width", type=int, default=518)
    p.add_argument("--height", type=int, default=294)
    p.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees (city 80, walk 75)")
    p.add_argument("--step", type=float, default=None, help="metres per frame (city 1.0, walk 0.15)")
    p.add_argument("--video", action="store_true", help="also write video.mp4 (H.264, needs PyAV)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from scal3r.data.synthetic import SynthConfig, generate

    overrides = {"frames": args.frames, "seed": args.seed, "trajectory": args.trajectory, "width": args.width,
                 "height": args.height}
    if args.fov is not None:
        overrides["fov_deg"] = args.fov
    if args.step is not None:
        overrides["step"] = args.step
    config = SynthConfig.preset(args.scene, **overrides)
    t0 = time.perf_counter()
    out = generate(config, args.out, video=args.video, overwrite=args.overwrite,
                   progress=TerminalProgress(quiet=args.quiet))
    dt = time.perf_counter() - t0
    print(f"{config.frames} frames of {config.scene} ({config.trajectory}) written to {out} in {dt:.1f}s "
          f"({config.frames / dt:.1f} frames/s)")
    return 0


# --- scal3r eval: metrics of a prediction against ground truth --------------------------------

def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="trajectory, point-cloud and depth metrics of a prediction against ground truth",
                       description="Compare a prediction (a `scal3r reconstruct` output folder, a folder in the "
                                   "`scal3r synth` layout, or a TUM/KITTI trajectory file) with ground truth in "
                                   "the `scal3r synth` layout: ATE/RPE/KITTI drift, "
                                   "accuracy/completeness/Chamfer/F1, depth AbsRel/δ<1.25.")
    p.add_argument("pred", help="prediction folder or trajectory file (TUM or KITTI)")
    p.add_argument("gt", help="ground-truth directory or trajectory file")
    p.add_argument("--align", choices=("sim3", "se3", "none"), default="sim3",
                   help="Umeyama alignment of the predicted camera centres (sim3 for monocular methods)")
    p.add_argument("--threshold", type=float, default=None,
                   help="precision/recall distance in metres (default 0.5, as reconstruct --gt)")
    p.add_argument("--voxel", type=float, default=None, help="voxel-downsample both clouds first (metres)")
    p.add_argument("--rpe-delta", type=int, default=1, help="frame step of the relative pose error")
    p.add_argument("--json", default=None, help="where to write the metrics (default: PRED/eval.json, "
                                                "or eval.json beside a PRED file)")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from pathlib import Path

    from scal3r.eval.sequence import EvalOptions, evaluate_sequence, format_report, write_json

    threshold = {} if args.threshold is None else {"threshold": args.threshold}
    options = EvalOptions(align=args.align, voxel=args.voxel, rpe_delta=args.rpe_delta, **threshold)
    result = evaluate_sequence(args.pred, args.gt, options)
    pred = Path(args.pred)
    out = Path(args.json) if args.json else (pred / "eval.json" if pred.is_dir() else pred.with_name("eval.json"))
    write_json(out, result)
    print(format_report(result))
    print(f"metrics written to {out}")
    return 0


# --- scal3r reconstruct / demo / view: a video or folder to poses, depth, points ---------------

UNTRAINED = ("running UNTRAINED (random) weights: poses, depth and points are meaningless; "
             "pass --weights scal3r.pt for a real reconstruction")


class _WarningLines:
    """Shows library warnings as one `scal3r: warning: ...` line each on stderr (at most `limit`
    distinct ones, then a count), instead of Python's file:line format."""

    def __init__(self, progress: TerminalProgress, limit: int = 8):
        self.progress, self.limit = progress, limit
        self.seen: set = set()
        self.hidden = 0

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).splitlines()[0] if str(message) else category.__name__
        if text in self.seen:
            return
        self.seen.add(text)
        if len(self.seen) > self.limit:
            self.hidden += 1
            return
        self.progress.interrupt()
        print(f"scal3r: warning: {text}", file=sys.stderr)

    def close(self) -> None:
        if self.hidden:
            print(f"scal3r: warning: {self.hidden} more warnings (all in summary.json)", file=sys.stderr)


def _add_frame_options(p) -> None:
    p.add_argument("--stride", type=int, default=1, metavar="K", help="keep every k-th frame")
    p.add_argument("--fps", type=float, default=None, help="videos: sample at this many frames per second")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="keep at most this many frames")
    p.add_argument("--strict", action="store_true", help="fail on an undecodable frame instead of skipping it")


def _add_model_options(p, preset_default: Optional[str]) -> None:
    p.add_argument("--weights", default=None, metavar="PATH", help="checkpoint: the official scal3r.pt, VGGT-1B, or ours")
    p.add_argument("--preset", default=preset_default,
                   help="model size: compact, official, small, tiny, vggt (default: the configuration stored in "
                        "--weights, else official with --weights; without --weights the bundled trained model)")
    p.add_argument("--config", default=None, metavar="PATH", help="release-style model config (YAML/JSON with model_cfg.sampler_cfg)")
    p.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="network input width in pixels (default: the model's, 518 for the official model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--offload", action="store_true",
                   help="keep the network's per-chunk state on disk (bounded RAM for very long videos)")
    p.add_argument("--seed", type=int, default=0, help="seed for random (untrained) weights and sampling")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _add_chunk_options(p) -> None:
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="frames per chunk (default: what the weights were trained for, else 60)")
    p.add_argument("--overlap", type=int, default=None, metavar="N",
                   help="frames shared by consecutive chunks (default: likewise, else 30)")
    p.add_argument("--no-sync", dest="sync", action="store_false", default=True,
                   help="each chunk updates its memory from its own gradient only (the paper's ablation)")
    from scal3r.pipeline.config import POSE_REFINEMENTS

    p.add_argument("--pose-refinement", choices=POSE_REFINEMENTS, default=None,
                   help="photometric: refine each chunk's poses by direct alignment through the reference "
                        "frame's predicted depth; none: the camera head's poses (default: what the weights "
                        "were trained for — photometric for models from `scal3r train`, none otherwise)")
    p.add_argument("--loop", dest="loop", action="store_true", default=True, help="detect and close loops (default)")
    p.add_argument("--no-loop", dest="loop", action="store_false", help="no loop detection")


def _add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="camera poses, intrinsics, depth and a fused point cloud from a video or images",
                       description="Reconstruct INPUT (a folder of images, a video file, or a text file listing "
                                   "images) into DIR: trajectory_tum.txt, trajectory_kitti.txt, mat.txt, "
                                   "intrinsics.json, depth/, confidence/, points.ply, colmap/, trajectory.png, "
                                   "summary.json. DIR is written atomically.")
    p.add_argument("input", help="image folder, video file (mp4/mov/avi/mkv) or text file of image paths")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist unless --overwrite)")
    _add_model_options(p, None)
    _add_chunk_options(p)
    _add_frame_options(p)
    p.add_argument("--gt", default=None, metavar="PATH", help="ground truth: a synthetic-world folder or a TUM/KITTI trajectory file")
    p.add_argument("--intrinsics", default=None, metavar="FILE",
                   help="known calibration: intrinsics JSON, a 3×3 K as text (or one per frame), or a KITTI "
                        "calib.txt; used instead of the predicted field of view wherever depth becomes points")
    p.add_argument("--output-resolution", choices=("network", "input"), default="network",
                   help="input: depth/, confidence/ and colmap/ (cameras and images) at the original frame size, "
                        "intrinsics rescaled with them")
    p.add_argument("--resumable", action="store_true",
                   help="work in DIR.partial/ and keep it if the run is interrupted or fails (chunk state per "
                        "network layer on disk), so that --resume can continue it")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted --resumable run in DIR.partial/ (same input and settings)")
    p.set_defaults(func=_run_reconstruct)


def _reconstruct_config(args, **overrides):
    from scal3r.pipeline import ReconstructConfig

    values = dict(input=getattr(args, "input", None), out=args.out, weights=args.weights, preset=args.preset,
                  model_config=args.config, block_size=args.block_size, overlap=args.overlap, sync=args.sync,
                  pose_refinement=getattr(args, "pose_refinement", None), loop=args.loop,
                  device=args.device, dtype=args.dtype, resolution=args.resolution, offload=args.offload,
                  seed=args.seed, stride=getattr(args, "stride", 1), fps=getattr(args, "fps", None),
                  max_frames=getattr(args, "max_frames", None), strict=getattr(args, "strict", False),
                  overwrite=args.overwrite, gt=getattr(args, "gt", None),
                  resumable=getattr(args, "resumable", False), resume=getattr(args, "resume", False),
                  output_resolution=getattr(args, "output_resolution", "network"),
                  intrinsics=getattr(args, "intrinsics", None))
    values.update(overrides)
    return ReconstructConfig(**values)


def _format_metrics(m: dict) -> str:
    def f(key, spec=".3f"):
        v = m.get(key)
        return "n/a" if v is None or v != v else format(v, spec)

    line = (f"ATE {f('ate')} m over a {f('path_length', '.1f')} m path, RPE {f('rpe_trans')} m / "
            f"{f('rpe_rot_deg', '.2f')}° per frame")
    if "chamfer" in m:
        line += f", Chamfer {f('chamfer')} m, F1 {f('f1')} (at {f('f1_threshold', 'g')} m)"
    return line


def _reconstruct_with_terminal(config, quiet: bool):
    import warnings

    from scal3r.pipeline import reconstruct
    from scal3r.pipeline.run import resolve_model

    from scal3r.engine.distributed import is_main_process

    note = resolve_model(config).note  # which model runs: one line before the run (even --quiet)
    if note and is_main_process():
        print(f"scal3r: {note}", file=sys.stderr)
    progress = TerminalProgress(quiet=quiet)
    lines = _WarningLines(progress)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lines
        try:
            return reconstruct(config, progress=progress)
        finally:
            progress.interrupt()
            lines.close()


def _print_result(result) -> None:
    for note in result.notes:
        print(f"note: {note}")
    peak = f", peak RAM {result.peak_rss_mib:.0f} MiB" if result.peak_rss_mib else ""
    print(f"reconstructed {result.frames} frames ({result.chunks} chunks, {result.loop_chunks} loop chunks, "
          f"{result.loops_accepted} loops closed, {result.points} points) in {result.seconds:.1f}s{peak} "
          f"→ {result.out_dir}")
    if result.metrics:
        print(f"vs ground truth: {_format_metrics(result.metrics)}")


def _run_reconstruct(args) -> int:
    from scal3r.engine.distributed import init_from_env, is_main_process, shutdown

    # Under torchrun: join the process group (gloo on CPU, NCCL on CUDA); only rank 0 reports.
    init_from_env("cuda" if args.device == "cuda" else "cpu")
    main = is_main_process()
    config = _reconstruct_config(args)
    try:
        result = _reconstruct_with_terminal(config, args.quiet or not main)
    except KeyboardInterrupt as e:
        from scal3r.io.export import partial_directory

        partial = partial_directory(config.out)
        if (config.resumable or config.resume) and partial.is_dir():
            e.resume_hint = f"progress kept in {partial}; continue with the same command and --resume"
        raise
    finally:
        shutdown()
    if not main or result.out_dir is None:
        return 0
    _print_result(result)
    if not result.trained:
        print(f"note: {UNTRAINED}")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="reconstruct and evaluate every sequence of a dataset (KITTI, TUM, ...)",
                       description="Run `reconstruct` on each sequence of DATASET (as distributed under --root) into "
                                   "OUT/<sequence>/, evaluate each with `scal3r eval`'s protocol (docs/benchmarks.md) "
                                   "and write OUT/results.json and OUT/results.md. Finished sequences are kept, so "
                                   "running the same command again continues an interrupted benchmark.")
    p.add_argument("dataset", help="kitti, vkitti2, tum, eth3d, oxford-spires or generic")
    p.add_argument("--root", required=True, metavar="DIR", help="the dataset's folder, in the layout it ships in")
    p.add_argument("--sequences", nargs="+", default=None, metavar="NAME", help="sequences to run (default: all)")
    p.add_argument("--out", required=True, metavar="OUT", help="benchmark folder (created; reused to continue)")
    p.add_argument("--intrinsics", dest="bench_intrinsics", choices=("auto", "none"), default="auto",
                   help="auto: the dataset's calibration is used where depth becomes points; none: the predicted one")
    p.add_argument("--camera", default=None, help="dataset camera (KITTI image_2 / image_0, VKITTI2 Camera_0, ...)")
    _add_model_options(p, None)
    _add_chunk_options(p)
    _add_frame_options(p)
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    import dataclasses

    from scal3r.pipeline.bench import BenchConfig, results_table, run_bench

    config = _reconstruct_config(args, input="", out="")
    defaults = type(config)(input="", out="")
    keep = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in ("input", "out", "gt", "overwrite", "resumable", "resume")
            and getattr(config, f.name) != getattr(defaults, f.name)}
    bench = BenchConfig(dataset=args.dataset, root=args.root, out=args.out, sequences=args.sequences,
                        reconstruct=keep, intrinsics=args.bench_intrinsics,
                        dataset_options={"camera": args.camera} if args.camera else {})
    progress = TerminalProgress(quiet=args.quiet)
    try:
        results = run_bench(bench, progress=progress)
    finally:
        progress.interrupt()
    print(results_table(results))
    print(f"results written to {args.out}/results.json and results.md")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="render a synthetic city drive with a loop, reconstruct it, and evaluate",
                       description="Render a synthetic city drive that closes a loop (with exact ground truth), "
                                   "reconstruct it and compare with the ground truth. Without --weights it runs the "
                                   "bundled model (trained here on synthetic worlds of seeds below 100000; the "
                                   "default --seed 100000 is a world it never saw).")
    p.add_argument("--frames", type=int, default=240, help="frames of the synthetic drive")
    p.add_argument("--out", default="scal3r-demo", metavar="DIR", help="output folder (world/ and reconstruction/ inside)")
    _add_model_options(p, None)
    _add_chunk_options(p)
    p.set_defaults(func=_run_demo, seed=DEMO_SEED)


# Evaluation worlds use seeds ≥ 100 000: the bundled model was trained on seeds below it.
DEMO_SEED = 100_000
# Without any trained weights (no bundled model, no --weights) the demo runs a small random
# network at a low resolution, so that it still finishes in a few minutes on 2 CPU cores.
DEMO_UNTRAINED = {"preset": "small", "resolution": 224}


def _run_demo(args) -> int:
    from pathlib import Path

    from scal3r.data.synthetic import SynthConfig, drivable_city_trajectory, generate
    from scal3r.errors import InputError
    from scal3r.pipeline.run import resolve_model

    root = Path(args.out).expanduser()
    if root.exists() and not args.overwrite:
        raise InputError(f"output directory {root} already exists (choose another --out or pass --overwrite)")
    if args.frames < 60:
        raise InputError(f"--frames must be at least 60 (a few chunks), got {args.frames}")
    config = _reconstruct_config(args, input="", out=str(root / "reconstruction"))
    resolved = resolve_model(config)
    if resolved.weights is None and not args.preset:
        if resolved.note:
            print(f"scal3r demo: {resolved.note}", file=sys.stderr)
        config = _reconstruct_config(args, input="", out=config.out, preset=DEMO_UNTRAINED["preset"],
                                     resolution=args.resolution or DEMO_UNTRAINED["resolution"])
        resolved = resolve_model(config)
    trained = resolved.weights is not None
    if not trained:
        print(f"scal3r demo: {UNTRAINED}; the demo exercises the whole pipeline (preset "
              f"{config.preset}, {resolved.resolution} px) and reports metrics that mean nothing.", file=sys.stderr)
    t0 = time.perf_counter()
    world = root / "world"
    # Frames rendered at the network size (KITTI-like aspect): the reconstruction needs no resize.
    width = resolved.resolution
    height = max(14, int(round(width * 294 / 518 / 14)) * 14)
    base = SynthConfig.preset("city")
    trajectory = drivable_city_trajectory(args.frames, base.step)
    synth = dataclasses.replace(base, frames=args.frames, seed=args.seed, trajectory=trajectory, width=width,
                                height=height)
    generate(synth, world, overwrite=args.overwrite, progress=TerminalProgress(quiet=args.quiet))
    kind = "loop" if trajectory == "loop" else "open drive"
    print(f"rendered {args.frames} frames of a synthetic city {kind} (seed {args.seed}, {width}×{height}) in "
          f"{time.perf_counter() - t0:.1f}s → {world}")
    config = dataclasses.replace(config, input=str(world / "images"), gt=str(world))
    result = _reconstruct_with_terminal(config, args.quiet)
    _print_result(result)
    print(f"demo finished in {time.perf_counter() - t0:.1f}s.")
    print(f"  synthetic world and ground truth: {world}")
    print(f"  reconstruction:                   {result.out_dir}  (summary.json, trajectory.png, points.ply, colmap/)")
    print(f"  look at it:                       scal3r view {result.out_dir}")
    if not trained:
        print(f"note: {UNTRAINED}; the metrics above only show the pipeline ran.")
    return 0


def _add_view(sub) -> None:
    p = sub.add_parser("view", help="web viewer of a reconstruction (point cloud, cameras, path, time slider)",
                       description="Serve a viser web viewer of a `scal3r reconstruct` output folder and open "
                                   "http://HOST:PORT in a browser. Ctrl-C stops it.")
    p.add_argument("dir", help="a reconstruction folder")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-points", type=int, default=300_000, help="points sent to the browser (random subset)")
    p.add_argument("--max-cameras", type=int, default=300, help="camera frustums drawn")
    p.set_defaults(func=_run_view)


def _run_view(args) -> int:
    from scal3r.viz.viewer import load_scene, start_viewer

    scene = load_scene(args.dir, max_points=args.max_points)
    server = start_viewer(scene, host=args.host, port=args.port, max_frustums=args.max_cameras)
    print(f"viewing {args.dir}: {len(scene.c2w)} cameras, {len(scene.points)} points at "
          f"http://{args.host}:{server.get_port()} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on long synthetic (or your own) sequences with synchronised memory",
                       description="Train on long sequences cut into K overlapping chunks whose memory gradients "
                                   "are summed (Global Context Synchronization), as at test time. Writes "
                                   "OUT/checkpoint.pt (resume point), OUT/model.safetensors (loads with "
                                   "`scal3r reconstruct --weights`), OUT/log.csv and OUT/loss.png. Under "
                                   "`torchrun --nproc_per_node=N -m scal3r train ...` the chunks of a step are "
                                   "spread over the ranks.")
    p.add_argument("--preset", default="compact", help="model preset: compact (the shipped model's), tiny, small, official")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log, curves)")
    p.add_argument("--data", default="synthetic", metavar="synthetic|FOLDER",
                   help="'synthetic' renders fresh worlds (training seeds 0..99999); or a folder of sequences in "
                        "the synthetic layout (images/, depth/*.npy, poses_kitti.txt, intrinsics.json)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the preset's)")
    p.add_argument("--init", default=None, metavar="CKPT", help="start from these weights (ours, official Scal3R or VGGT)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, exactly")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (with a checkpoint) after N more steps; the schedule still spans --steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample sequence (step s draws from (seed, s))")
    p.add_argument("--max-chunks", type=int, default=None, help="K is drawn per step from 1..this")
    p.add_argument("--block-size", type=int, default=None, help="frames per training chunk")
    p.add_argument("--overlap", type=int, default=None, help="frames shared by consecutive chunks")
    p.add_argument("--resolution", type=int, nargs=2, default=None, metavar=("W", "H"), help="training image size (multiples of 14)")
    p.add_argument("--lr-memory", type=float, default=None, help="peak learning rate of the memory units")
    p.add_argument("--lr-rest", type=float, default=None, help="peak learning rate of everything else")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps")
    p.add_argument("--camera-weight", type=float, default=None, help="weight of the camera loss against depth + points")
    p.add_argument("--match-weight", type=float, default=None,
                   help="weight of the correlation embedding's matching term (presets with one; 0 turns it off)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N", help="steps between checkpoints")
    p.add_argument("--freeze", nargs="*", default=(), metavar="PREFIX", help="parameter-name prefixes to keep fixed")
    p.add_argument("--no-sync", action="store_true", help="each chunk updates its memory alone (ablation)")
    p.add_argument("--no-activation-checkpointing", action="store_true",
                   help="keep every activation (faster, several times the memory)")
    p.add_argument("--no-memory", action="store_true", help="the preset without memory units (ablation)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    import dataclasses

    import torch

    from scal3r.engine.distributed import init_from_env, is_main_process, shutdown
    from scal3r.errors import InputError
    from scal3r.pipeline.config import resolve_device, resolve_dtype
    from scal3r.train.trainer import Trainer, TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cfg = TrainConfig.preset_for(args.preset)
    over = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("lr_memory", args.lr_memory),
                              ("lr_rest", args.lr_rest), ("warmup_steps", args.warmup),
                              ("checkpoint_every", args.checkpoint_every)) if v is not None}
    if args.freeze:
        over["freeze"] = tuple(args.freeze)
    if args.no_sync:
        over["sync"] = False
    if args.no_memory:
        over["memory"] = False
    if args.no_activation_checkpointing:
        over["activation_checkpointing"] = False
    data = {k: v for k, v in (("max_chunks", args.max_chunks), ("block_size", args.block_size),
                              ("overlap", args.overlap)) if v is not None}
    if args.resolution:
        data["width"], data["height"] = args.resolution
    if data:
        over["data"] = dataclasses.replace(cfg.data, **data)
    loss_over = {k: v for k, v in (("camera_weight", args.camera_weight), ("match_weight", args.match_weight)) if v is not None}
    if loss_over:
        over["loss"] = dataclasses.replace(cfg.loss, **loss_over)
    cfg = dataclasses.replace(cfg, **over)
    if cfg.steps < 1:
        raise InputError(f"--steps must be at least 1, got {cfg.steps}")
    for flag, value in (("--camera-weight", cfg.loss.camera_weight), ("--match-weight", cfg.loss.match_weight)):
        if not value >= 0:
            raise InputError(f"{flag} must be a number ≥ 0, got {value}")
    cfg.data.validate()
    device_obj = init_from_env("cuda" if device == "cuda" else "cpu")
    main = is_main_process()
    progress = TerminalProgress(quiet=args.quiet or not main)
    try:
        trainer = Trainer(cfg, args.out, data_folder=None if args.data == "synthetic" else args.data, init=args.init,
                          resume=args.resume, resume_steps=args.steps, device=str(device_obj or device), dtype=None if dtype == torch.float32 else dtype,
                          progress=progress)
        if main and not args.quiet:
            print(f"scal3r train: preset {trainer.cfg.preset}, {sum(p.numel() for p in trainer.model.parameters()):,} "
                  f"parameters, steps {trainer.step} → {trainer.cfg.steps}, out {args.out}", file=sys.stderr)
        try:
            out = trainer.run(stop_after=args.stop_after)
        except KeyboardInterrupt as e:
            progress.interrupt()
            step = trainer.saved_step
            e.resume_hint = (f"the last checkpoint (step {step}) is in {args.out}; continue with the same command "
                             "and --resume" if step is not None else f"no checkpoint was written to {args.out} yet")
            raise
    finally:
        progress.interrupt()
        shutdown()
    if main:
        print(f"trained to step {trainer.step}: weights {out / 'model.safetensors'}, log {out / 'log.csv'}, "
              f"curve {out / 'loss.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scal3r",
        description="Long-video 3D reconstruction with test-time-trained global memory "
                    "(zju3dv Scal3R, CVPR 2026).",
    )
    parser.add_argument("--version", action="version", version=f"scal3r {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_forward, _add_synth, _add_eval, _add_reconstruct, _add_bench, _add_demo, _add_train, _add_view):
        add(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP turned into the same unwinding as Ctrl-C (temporary outputs removed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _catch_termination() -> Dict[int, object]:
    """What `timeout`, SLURM, Kubernetes and systemd send (SIGTERM) and a closed terminal (SIGHUP)
    unwind like Ctrl-C: every `finally` and atomic-output cleanup runs, then exit 128 + signal.
    Python runs the handler between bytecodes, so a long torch kernel finishes first (seconds).
    Returns the handlers it replaced, for `main` to put back: an in-process caller (a notebook,
    pytest) keeps its own behaviour for signals that arrive after the command."""
    import signal
    import threading

    previous: Dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signum = getattr(signal, name)
            previous[signum] = signal.signal(signum, _raise_terminated)
    return previous


def main(argv: Optional[Sequence[str]] = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    previous = _catch_termination()
    try:
        return int(args.func(args) or 0)
    except Scal3RError as e:
        print(f"scal3r: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Terminated) else int(signal.SIGINT)
        hint = getattr(e, "resume_hint", None) or "nothing written"
        print(f"scal3r: interrupted by {signal.Signals(signum).name}; {hint}", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
