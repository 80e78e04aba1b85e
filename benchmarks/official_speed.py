"""Speed, peak RSS and parity of our synced multi-chunk forward against the official release's (CPU).

    python benchmarks/official_speed.py --official-src DIR [--frames 60 120] [--threads 2] [--runs 3]
    python benchmarks/official_speed.py --official-src DIR --profile [--frames 60] [--threads 1]

DIR is a checkout of the official release (github.com/zju3dv/Scal3R, the folder holding its
`scal3r/` package and `configs/`). Nothing of it is copied here: it is imported from DIR in its own
process. It needs `einops` (pip install einops); `cv2` and `pypose` are imported by release modules
the multi-chunk forward does not use, and are stubbed in that process when they are missing.

Both sides run the same network on the same random weights and frames:
  - a release `sampler_cfg` (conv patch embed, embed 256, depth 8, 4 heads, memory after global
    blocks 5 and 7, heads reading layers 1/3/5/7, DPT features 64) is built by us
    (`Scal3R.from_release_config`), its weights perturbed so every part matters, and saved in the
    release checkpoint layout (`save_state_dict`); the release model (`scal3r.models.Scal3R`) loads
    that file with strict `load_state_dict`, as its `load_checkpoint` does;
  - frames: a smooth seeded pan, uint8-quantised, H×W = 140×252; chunks of 20 frames overlapping by
    10 (60 frames → 5 chunks, 120 → 11).
  - official: `scal3r.pipelines.backend.forward(model, batches, args)` under `torch.no_grad()`, the
    layer-synchronous loop of the release's `main` (memory synced across chunks by `apply_ttt`; all
    state in RAM: streaming_state/offload off), chunks built by its `build_image_only_block`;
  - ours: `scal3r.infer_chunks(model, images, ranges, sync=True)` (state in RAM).
Each side runs in its own fresh process (so peak RSS is its own), kept alive for all its runs: one
warm-up each, then `--runs` timed runs, the two sides' runs alternating (official, ours, official,
...) so that a load drifting in from other processes hits both alike. Printed: both medians, ratio
ours/official (and of the fastest runs), peak RSS (VmHWM) of each process and its growth during the
runs (above the RSS once model and inputs are loaded), max |Δ| of every output over all chunks, and
the load average (timings of a loaded machine are noisy; the ratio of alternating runs less so).

`--ours-src OTHER/src` runs another checkout of ours (before/after a change); `--ours-dtype bf16`
runs ours under CPU bf16 autocast (the release has no CPU autocast: its `--test_use_amp` is
CUDA-only), parity then approximate.

`--profile` instead times stages (patch embed, frame/global blocks, memory projection, gradient,
Newton–Schulz, apply, heads) on both sides with wall-clock timers around the modules/functions
(time of a nested stage is not counted in its parent), one run after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The release's `model_cfg.sampler_cfg` of the benchmarked network.
MEMORY = {"num_heads": 1, "inter_multi": 4, "base_lr": 0.01, "muon_update_steps": 5,
          "use_ddp_allreduce": True, "use_modulation": True}
SAMPLER_CFG = {
    "agg_regator_cfg": {
        "img_size": 518, "patch_size": 14, "embed_dim": 256, "depth": 8, "num_heads": 4,
        "patch_embed": "conv", "frame_use_ttt": False, "global_use_ttt": True, "ttt_layer_idx": [5, 7],
        "intermediate_layer_idx": [1, 3, 5, 7], "ttt_cfg": MEMORY, "num_global_tokens": 0,
    },
    "cam_decoder_cfg": {"dim_in": 512, "trunk_depth": 2, "num_heads": 8},
    "xyz_decoder_cfg": {"dim_in": 512, "output_dim": 4, "activation": "inv_log", "conf_activation": "expp1",
                        "features": 64, "out_channels": [32, 64, 128, 128]},
    "dpt_decoder_cfg": {"dim_in": 512, "output_dim": 2, "activation": "exp", "conf_activation": "expp1",
                        "features": 64, "out_channels": [32, 64, 128, 128]},
}
# official output key -> ours
KEYS = {"cam_map": "pose_enc", "dpt_map": "depth", "dpt_cnf": "depth_conf", "xyz_map": "world_points",
        "xyz_cnf": "world_points_conf"}


# -- helpers shared by the child processes -----------------------------------------------------------
def _status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _setup_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def _official_ranges(n: int, block: int, overlap: int):
    """The release `backend.load_data` chunk rule (checked against ours in the official process)."""
    n_blocks = (n - overlap + (block - overlap) - 1) // (block - overlap)
    if n_blocks == 0 or n <= block:
        return [(0, n)]
    return [(i * (block - overlap), min(i * (block - overlap) + block, n)) for i in range(n_blocks)]


def make_frames(n: int, height: int, width: int, seed: int = 0):
    """A smooth seeded panorama panned frame by frame, quantised to uint8 and back to [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pano_w = width + 4 * n + 64
    coarse = torch.rand(1, 3, 12, pano_w // 16 + 2, generator=g)
    pano = torch.nn.functional.interpolate(coarse, size=(height, pano_w), mode="bicubic", align_corners=False)
    pano = pano + 0.15 * torch.rand(1, 3, height, pano_w, generator=g)
    pano = (pano - pano.min()) / (pano.max() - pano.min())
    frames = torch.stack([pano[0, :, :, 4 * i: 4 * i + width] for i in range(n)])
    return (frames * 255).round().to(torch.uint8).float() / 255


# -- child: build weights and frames (ours) ---------------------------------------------------------------
def role_prepare(args) -> dict:
    import torch

    from scal3r import Scal3R
    from scal3r.model.checkpoint import save_state_dict

    torch.manual_seed(0)
    model = Scal3R.from_release_config(SAMPLER_CFG)
    g = torch.Generator().manual_seed(10000)
    state = model.state_dict()
    with torch.no_grad():
        for name, t in state.items():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.02)  # zero-initialised parts matter too
            if name.endswith((".ls1.gamma", ".ls2.gamma")):
                t.add_(0.1)  # LayerScale 0.01 would leave the attention/MLP at ~1% of the stream
    save_state_dict(model.state_dict(), Path(args.work) / "weights.pt", layout="scal3r")
    images = make_frames(max(args.frames), args.height, args.width)
    torch.save(images, Path(args.work) / "images.pt")
    return {"n_params": sum(p.numel() for p in model.parameters()), "n_tensors": len(state)}


# -- child: our side ---------------------------------------------------------------------------------
def role_ours(args) -> dict:
    import torch

    _setup_threads(args.threads)
    if args.ours_src:  # another checkout of ours (e.g. before a change), ahead of the installed one
        sys.path.insert(0, str(args.ours_src))
    from scal3r import Scal3R, infer_chunks
    from scal3r.chunks import chunk_ranges

    rss_imports = _status_mib("VmRSS")

    model = Scal3R.from_release_config(SAMPLER_CFG)
    notes = model.load_checkpoint(Path(args.work) / "weights.pt")
    assert notes == [], notes
    n = args.frames[0]
    images = torch.load(Path(args.work) / "images.pt", weights_only=True)[:n].contiguous()
    ranges = chunk_ranges(n, args.block, args.overlap)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[args.ours_dtype]
    run = lambda: infer_chunks(model, images, ranges, sync=True, dtype=dtype)  # noqa: E731
    if args.profile:
        return _profile(run, _ours_stages(model))
    def save(outs):
        out = {f"chunk{b:02d}/{k}": o[k] for b, o in enumerate(outs) for k in list(KEYS.values()) + ["frames"]}
        torch.save(out, Path(args.work) / f"ours_{n}.pt")

    import scal3r

    return _serve(run, save, {"ranges": ranges, "module": scal3r.__file__, "rss_imports_mib": rss_imports})


# -- child: the official release ----------------------------------------------------------------------
def _import_official(src: Path):
    """Import the release package `scal3r` from `src` (this process must not have imported ours)."""
    import importlib

    assert "scal3r" not in sys.modules
    sys.path.insert(0, str(src))
    for name in ("cv2", "pypose"):
        try:
            importlib.import_module(name)
        except ImportError:
            # Import-only stub: modules that `scal3r.pipelines.backend` imports at load time (image
            # I/O, loop closure, pose-graph optimisation) use these; the multi-chunk forward does not.
            # Any use raises.
            sys.modules[name] = _stub_module(name)
    import scal3r

    if Path(scal3r.__file__).resolve().parents[1] != src.resolve():
        raise SystemExit(f"imported scal3r from {scal3r.__file__}, not from {src}")
    from scal3r.models.scal3r import Scal3R
    from scal3r.pipelines import backend
    from scal3r.utils.base_utils import DotDict
    from scal3r.utils.image_utils import build_image_only_block

    return Scal3R, backend, DotDict, build_image_only_block


def _stub_module(name: str):
    import types

    class Missing:
        def __init__(self, path):
            self.path = path

        def __call__(self, *a, **k):
            raise RuntimeError(f"{self.path}: {name} is stubbed by benchmarks/official_speed.py (not installed)")

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return Missing(f"{self.path}.{attr}")

    module = types.ModuleType(name)

    def getattr_(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Missing(f"{name}.{attr}")

    module.__getattr__ = getattr_
    return module


def role_official(args) -> dict:
    import torch

    _setup_threads(args.threads)
    Scal3R, backend, DotDict, build_image_only_block = _import_official(Path(args.official_src))
    rss_imports = _status_mib("VmRSS")

    model = Scal3R(DotDict(json.loads(json.dumps(SAMPLER_CFG))))
    state = torch.load(Path(args.work) / "weights.pt", map_location="cpu", weights_only=True, mmap=True)
    model.load_state_dict(state, strict=True)  # as the release's load_checkpoint
    del state
    model.eval()
    n = args.frames[0]
    images = torch.load(Path(args.work) / "images.pt", weights_only=True)[:n].contiguous()
    H, W = images.shape[-2:]
    ranges = _official_ranges(n, args.block, args.overlap)
    if [list(r) for r in ranges] != [list(r) for r in args.expect_ranges]:
        raise SystemExit(f"chunk ranges differ: official {ranges} vs ours {args.expect_ranges}")
    # The release's sequence items hold rgb as (H*W, 3) in [0, 1] (image_utils.load_and_preprocess_images).
    sequence = [DotDict(rgb=f.permute(1, 2, 0).reshape(H * W, 3).contiguous(), msk=torch.ones(H * W, 1))
                for f in images]
    dataset_cfg = DotDict(cam_param_type="abs_quat_fov", use_world_coord=True)
    batches = [build_image_only_block(sequence, list(range(s, e)), H, W, args.overlap, dataset_cfg)
               for s, e in ranges]
    del sequence
    run_args = DotDict(device="cpu", streaming_state=0, offload_batches=0, offload_outputs=0)

    def run():
        with torch.no_grad():  # as backend.main
            return backend.forward(model, batches, run_args)

    if args.profile:
        return _profile(run, _official_stages(model, sys.modules["scal3r.utils.ttt_utils"]))
    def save(outs):
        # Rows in ascending frame order, shaped as ours.
        out = {}
        for b, (o, batch) in enumerate(zip(outs, batches)):
            order = torch.argsort(batch.src_inds[0])
            S = order.numel()
            out[f"chunk{b:02d}/pose_enc"] = o.cam_map[0][order]
            out[f"chunk{b:02d}/depth"] = o.dpt_map[0].reshape(S, H, W, 1)[order]
            out[f"chunk{b:02d}/depth_conf"] = o.dpt_cnf[0].reshape(S, H, W)[order]
            out[f"chunk{b:02d}/world_points"] = o.xyz_map[0].reshape(S, H, W, 3)[order]
            out[f"chunk{b:02d}/world_points_conf"] = o.xyz_cnf[0].reshape(S, H, W)[order]
            out[f"chunk{b:02d}/frames"] = batch.src_inds[0][order]
        torch.save(out, Path(args.work) / f"official_{n}.pt")

    return _serve(run, save, {"ranges": ranges, "rss_imports_mib": rss_imports})


def _serve(run, save, info) -> dict:
    """Worker loop: report readiness (RSS with model and inputs loaded), then on every stdin line
    `run` do one forward and report its wall time; on `finish` save the last outputs and return
    the peak RSS. The parent alternates the two sides' runs, so load drifts hit both alike."""
    print(json.dumps({"ready": True, "rss_loaded_mib": _status_mib("VmHWM")}), flush=True)
    outs = None
    for line in sys.stdin:
        if line.strip() == "run":
            outs = None
            t0 = time.perf_counter()
            outs = run()
            print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
        elif line.strip() == "finish":
            break
    save(outs)
    return dict(info, peak_rss_mib=_status_mib("VmHWM"))


# -- stage timers (--profile) -------------------------------------------------------------------------
class StageTimer:
    """Exclusive wall time per stage: time inside a nested stage is not counted in its parent."""

    def __init__(self):
        self.total = {}
        self.calls = {}
        self._stack = []  # [name, start, child time]

    def enter(self, name):
        self._stack.append([name, time.perf_counter(), 0.0])

    def leave(self):
        name, t0, child = self._stack.pop()
        dt = time.perf_counter() - t0
        self.total[name] = self.total.get(name, 0.0) + dt - child
        self.calls[name] = self.calls.get(name, 0) + 1
        if self._stack:
            self._stack[-1][2] += dt

    def wrap(self, name, fn):
        def wrapped(*a, **k):
            self.enter(name)
            try:
                return fn(*a, **k)
            finally:
                self.leave()
        return wrapped

    def module(self, name, m):
        m.forward = self.wrap(name, m.forward)


def _ours_stages(model):
    import scal3r.model.memory as memory

    def install(t: StageTimer):
        agg = model.agg_regator
        t.module("patch embed", agg.patch_embed)
        for b in agg.frame_blocks:
            t.module("frame blocks", b)
        for b in agg.global_blocks:
            t.module("global blocks", b)
        for layer in agg.memory_layers:
            m = agg.memory(layer)
            m.project = t.wrap("memory: projection (q,k,v,lr)", m.project)
            m.residual = t.wrap("memory: apply", m.residual)
        memory.swiglu_gradient = t.wrap("memory: gradient", memory.swiglu_gradient)
        memory.newton_schulz5 = t.wrap("memory: Newton-Schulz", memory.newton_schulz5)
        memory.orthogonal_update = t.wrap("memory: update (add, norm)", memory.orthogonal_update)
        t.module("camera head", model.cam_decoder)
        t.module("xyz DPT head", model.xyz_decoder)
        t.module("depth DPT head", model.dpt_decoder)
    return install


def _official_stages(model, ttt_utils):
    def install(t: StageTimer):
        agg = model.agg_regator
        t.module("patch embed", agg.patch_embed)
        for b in agg.frame_blocks:
            t.module("frame blocks", b)
        for i, b in enumerate(agg.global_blocks):
            # A global block's forward calls its own attention/MLP only (TTT disabled in forward_layer);
            # the memory runs through ttt.gradient / ttt.update / ttt.forward (= apply).
            if hasattr(b, "ttt"):
                b.ttt.gradient = t.wrap("memory: projection (q,k,v,lr)", b.ttt.gradient)
                b.ttt.update = t.wrap("memory: update (add, norm)", b.ttt.update)
                t.module("memory: projection (q,k,v,lr)", b.ttt)  # apply = projection + fast SwiGLU + output
            b.forward = t.wrap("global blocks", b.forward)
        # Fine stages inside the release's memory calls (looked up as module globals at call time).
        ttt_utils.fast_weight_swish_glu_weight_norm_mini_batch_gradient = t.wrap(
            "memory: gradient", ttt_utils.fast_weight_swish_glu_weight_norm_mini_batch_gradient)
        ttt_utils.zeropower_via_newtonschulz5 = t.wrap("memory: Newton-Schulz", ttt_utils.zeropower_via_newtonschulz5)
        ttt_utils.fast_weight_swish_glu_weight_norm_mini_batch_apply = t.wrap(
            "memory: apply", ttt_utils.fast_weight_swish_glu_weight_norm_mini_batch_apply)
        for b in agg.global_blocks:
            if hasattr(b, "ttt"):
                b.ttt._project_output = t.wrap("memory: apply", b.ttt._project_output)
                b.ttt._restore_patch_tokens = t.wrap("memory: apply", b.ttt._restore_patch_tokens)
        t.module("camera head", model.cam_decoder)
        t.module("xyz DPT head", model.xyz_decoder)
        t.module("depth DPT head", model.dpt_decoder)
    return install


def _profile(run, install) -> dict:
    run()  # warm-up, untimed
    t = StageTimer()
    install(t)
    t.enter("other (loop, stores, copies, cat)")
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    t.leave()
    return {"wall": wall, "stages": t.total, "calls": t.calls}


# -- parent ----------------------------------------------------------------------------------------------
def _command(role: str, args, frames: int, extra=()):
    cmd = [sys.executable, __file__, "--role", role, "--work", args.work, "--official-src", str(args.official_src),
           "--frames", str(frames), "--threads", str(args.threads), "--runs", str(args.runs),
           "--height", str(args.height), "--width", str(args.width), "--block", str(args.block),
           "--overlap", str(args.overlap), "--ours-dtype", args.ours_dtype, *extra]
    if args.ours_src:
        cmd += ["--ours-src", str(args.ours_src.resolve())]
    if args.profile:
        cmd.append("--profile")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TQDM_DISABLE="1")
    return cmd, env


def _child(role: str, args, frames: int, extra=()) -> dict:
    """Run a one-shot child (prepare, profile) and return its JSON answer."""
    cmd, env = _command(role, args, frames, extra)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-8000:])
        raise SystemExit(f"{role} process failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


class Worker:
    """A side (ours / official) in its own process, driven run by run over stdin/stdout."""

    def __init__(self, role: str, args, frames: int, extra=()):
        cmd, env = _command(role, args, frames, extra)
        self.role = role
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  env=env, cwd=ROOT)
        self.ready = self._answer()
        self.times = []

    def _answer(self) -> dict:
        while True:
            line = self.p.stdout.readline()
            if not line:
                self.p.wait()
                self.err.seek(0)
                sys.stderr.write(self.err.read()[-8000:])
                raise SystemExit(f"{self.role} process failed (exit {self.p.returncode})")
            if line.startswith("{"):
                return json.loads(line)

    def run(self) -> float:
        self.p.stdin.write("run\n")
        self.p.stdin.flush()
        return self._answer()["seconds"]

    def finish(self) -> dict:
        self.p.stdin.write("finish\n")
        self.p.stdin.flush()
        out = self._answer()
        self.p.wait()
        return dict(out, rss_loaded_mib=self.ready["rss_loaded_mib"], times=self.times)


def _parity(work: Path, n: int) -> dict:
    import torch

    ours = torch.load(work / f"ours_{n}.pt", weights_only=True)
    theirs = torch.load(work / f"official_{n}.pt", weights_only=True)
    assert ours.keys() == theirs.keys()
    out = {}
    for key in ours:
        if key.endswith("/frames"):
            assert torch.equal(ours[key], theirs[key]), key
            continue
        name = key.split("/", 1)[1]
        d = (ours[key].double() - theirs[key].double()).abs().max().item()
        out[name] = max(out.get(name, 0.0), d)
    return out


def _load_note(threads: int) -> str:
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return ""
    busy = load1 > threads + 0.75  # this benchmark's own runs account for about `threads`
    return f"1-min load average {load1:.2f} on {os.cpu_count() or 1} cores" + (
        " — other processes compete for the CPUs: timings are noisy, compare the ratio" if busy else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official-src", type=Path, required=True, help="checkout of github.com/zju3dv/Scal3R")
    p.add_argument("--frames", type=int, nargs="+", default=[60, 120])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--height", type=int, default=140)
    p.add_argument("--width", type=int, default=252)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--overlap", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="per-stage times of both sides instead")
    p.add_argument("--ours-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: run our transformer under CPU bf16 autocast (the release has no CPU autocast; "
                        "parity is then approximate)")
    p.add_argument("--ours-src", type=Path, help="import our `scal3r` from this folder (another checkout's src/)")
    p.add_argument("--keep", type=Path, help="keep weights, frames and outputs in this folder")
    p.add_argument("--role", choices=["prepare", "ours", "official"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--expect-ranges", type=json.loads, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        fn = {"prepare": role_prepare, "ours": role_ours, "official": role_official}[args.role]
        print(json.dumps(fn(args)))
        return
    src = args.official_src
    if not (src / "scal3r" / "pipelines" / "backend.py").is_file():
        raise SystemExit(f"{src} is not a checkout of the official release (no scal3r/pipelines/backend.py)")

    with tempfile.TemporaryDirectory(prefix="scal3r-official-speed-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        args.work = str(work)
        info = _child("prepare", args, max(args.frames))
        if args.ours_src:
            print(f"ours imported from {args.ours_src}")
        print(f"release sampler_cfg: conv embed 256, depth 8, 4 heads, memory after global blocks 5 and 7, "
              f"DPT features 64 ({info['n_params'] / 1e6:.1f}M parameters, random weights)")
        print(f"{args.height}x{args.width} frames, block {args.block} / overlap {args.overlap}, "
              f"{args.threads} thread(s), CPU, official fp32, ours {args.ours_dtype}, fresh process per side; "
              f"{_load_note(args.threads)}")
        if args.profile:
            _print_profile(args)
            return
        print(f"{args.runs} timed runs after 1 warm-up each, the two sides' runs alternating; RSS = peak VmHWM "
              f"of the process (own: above its RSS right after its imports, i.e. model + inputs + runs; the "
              f"release's modules import more libraries)")
        print(f"{'frames':>6} {'chunks':>6} {'official s':>10} {'ours s':>8} {'ours/official':>13} "
              f"{'official RSS MiB':>19} {'ours RSS MiB':>19}  parity max|Δ|")
        for n in args.frames:
            ranges = _official_ranges(n, args.block, args.overlap)
            workers = [Worker("official", args, n, ["--expect-ranges", json.dumps(ranges)]),
                       Worker("ours", args, n)]
            for w in workers:  # warm-up
                w.run()
            for _ in range(args.runs):  # alternating: official, ours, official, ours, ...
                for w in workers:
                    w.times.append(w.run())
            official, ours = (w.finish() for w in workers)
            if args.ours_src and not Path(ours["module"]).resolve().is_relative_to(args.ours_src.resolve()):
                raise SystemExit(f"ours was imported from {ours['module']}, not from {args.ours_src}")
            if [list(r) for r in ours["ranges"]] != [list(r) for r in ranges]:
                raise SystemExit(f"chunk ranges differ: official {ranges} vs ours {ours['ranges']}")
            delta = _parity(work, n)
            mo, mt = statistics.median(ours["times"]), statistics.median(official["times"])
            rss = lambda r: f"{r['peak_rss_mib']:.0f} (own {r['peak_rss_mib'] - r['rss_imports_mib']:.0f})"  # noqa: E731
            par = ", ".join(f"{k} {v:.2g}" for k, v in delta.items())
            print(f"{n:>6} {len(ranges):>6} {mt:>10.2f} {mo:>8.2f} {mo / mt:>13.3f} "
                  f"{rss(official):>19} {rss(ours):>19}  {par}")
            print(f"{'':>14}runs: official {', '.join(f'{t:.2f}' for t in official['times'])}; "
                  f"ours {', '.join(f'{t:.2f}' for t in ours['times'])}; "
                  f"ratio of the fastest runs {min(ours['times']) / min(official['times']):.3f}", flush=True)
        print(_load_note(args.threads))


def _print_profile(args) -> None:
    n = args.frames[0]
    ours = _child("ours", args, n, ["--expect-ranges", "[]"])
    ranges = _official_ranges(n, args.block, args.overlap)
    official = _child("official", args, n, ["--expect-ranges", json.dumps(ranges)])
    names = ["patch embed", "frame blocks", "global blocks", "memory: projection (q,k,v,lr)", "memory: gradient",
             "memory: Newton-Schulz", "memory: update (add, norm)", "memory: apply", "camera head",
             "xyz DPT head", "depth DPT head", "other (loop, stores, copies, cat)"]
    print(f"stage times, {n} frames ({len(ranges)} chunks), one run after a warm-up (exclusive wall seconds)")
    print(f"{'stage':<36} {'official s':>10} {'calls':>6} {'ours s':>8} {'calls':>6} {'ours−official':>13}")
    for name in names:
        a, b = official["stages"].get(name, 0.0), ours["stages"].get(name, 0.0)
        print(f"{name:<36} {a:>10.3f} {official['calls'].get(name, 0):>6} {b:>8.3f} "
              f"{ours['calls'].get(name, 0):>6} {b - a:>+13.3f}")
    print(f"{'wall':<36} {official['wall']:>10.3f} {'':>6} {ours['wall']:>8.3f} {'':>6} "
          f"{ours['wall'] - official['wall']:>+13.3f}")
    print("official 'memory: projection' = the q/k/v/lr projections inside ttt.gradient and ttt.forward (apply) "
          "— the release computes them twice per chunk and memory layer; ours once (q kept for apply)")


if __name__ == "__main__":
    main()
