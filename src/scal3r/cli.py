"""The `scal3r` command line: the only module that talks to the terminal.

Each subcommand has an `_add_<name>(subparsers)` function that declares its arguments and sets
`func` to a `_run_<name>(args) -> int` function. `main` turns `Scal3RError` into one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from scal3r import __version__
from scal3r.errors import Scal3RError


class TerminalProgress:
    """Renders `progress(stage, done, total)` calls as one updating line on stderr with rate and ETA."""

    def __init__(self, quiet: bool = False, min_interval: float = 0.2):
        self.quiet = quiet
        self.min_interval = min_interval
        self._stage: Optional[str] = None
        self._start = 0.0
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if stage != self._stage:
            if self._stage is not None:
                sys.stderr.write("\n")
            self._stage, self._start, self._last = stage, now, 0.0
        finished = total > 0 and done >= total
        if not finished and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        if total > 0:
            eta = (total - done) / rate if rate > 0 else float("nan")
            line = f"{stage}: {done}/{total} ({rate:.2f}/s, ETA {eta:.0f}s)"
        else:
            line = f"{stage}: {done} ({rate:.2f}/s)"
        sys.stderr.write("\r" + line.ljust(70))
        if finished:
            sys.stderr.write("\n")
            self._stage = None
        sys.stderr.flush()


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
    from scal3r.engine.chunks import chunk_ranges

    torch.manual_seed(args.seed)
    model = Scal3R.from_preset(args.preset)
    if args.weights:
        model.load_checkpoint(args.weights)
    else:
        print("note: random (untrained) weights; outputs are meaningless, this only checks the install")
    model.eval()
    size = model.config.aggregator.img_size
    images = torch.rand(args.frames, 3, size * 2 // 3 // 14 * 14, size)
    ranges = chunk_ranges(args.frames, args.block_size, args.overlap)
    t0 = time.perf_counter()
    outs = model.infer_chunks(images, ranges, sync=True)
    dt = time.perf_counter() - t0
    print(f"{len(ranges)} chunks, {args.frames} frames {tuple(images.shape[-2:])}: {dt:.2f}s "
          f"({args.frames / dt:.1f} frames/s); depth range "
          f"{min(float(o['depth'].min()) for o in outs):.3g}..{max(float(o['depth'].max()) for o in outs):.3g}")
    return 0


# --- scal3r synth: a synthetic long video with exact ground truth ------------------------------

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
                       description="Compare a prediction directory (or trajectory file) with a ground-truth directory "
                                   "(or file) in the `scal3r synth` layout: ATE/RPE/KITTI drift, "
                                   "accuracy/completeness/Chamfer/F1, depth AbsRel/δ<1.25.")
    p.add_argument("pred", help="prediction directory or trajectory file (TUM or KITTI)")
    p.add_argument("gt", help="ground-truth directory or trajectory file")
    p.add_argument("--align", choices=("sim3", "se3", "none"), default="sim3",
                   help="Umeyama alignment of the predicted camera centres (sim3 for monocular methods)")
    p.add_argument("--threshold", type=float, default=0.25, help="precision/recall distance in metres")
    p.add_argument("--voxel", type=float, default=None, help="voxel-downsample both clouds first (metres)")
    p.add_argument("--rpe-delta", type=int, default=1, help="frame step of the relative pose error")
    p.add_argument("--json", default=None, help="where to write the metrics (default: PRED/eval.json, "
                                                "or eval.json beside a PRED file)")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from pathlib import Path

    from scal3r.eval.sequence import EvalOptions, evaluate_sequence, format_report, write_json

    options = EvalOptions(align=args.align, threshold=args.threshold, voxel=args.voxel, rpe_delta=args.rpe_delta)
    result = evaluate_sequence(args.pred, args.gt, options)
    pred = Path(args.pred)
    out = Path(args.json) if args.json else (pred / "eval.json" if pred.is_dir() else pred.with_name("eval.json"))
    write_json(out, result)
    print(format_report(result))
    print(f"metrics written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scal3r",
        description="Long-video 3D reconstruction with test-time-trained global memory "
                    "(zju3dv Scal3R, CVPR 2026).",
    )
    parser.add_argument("--version", action="version", version=f"scal3r {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_forward, _add_synth, _add_eval):
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except Scal3RError as e:
        print(f"scal3r: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scal3r: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
