"""Device check: speed, memory and bf16 numerics of the chunked synced forward on a CUDA machine.

    python benchmarks/device_check.py --out device.json             # on a GPU box: the full check (bf16)
    python benchmarks/device_check.py --reduced --out device.json   # CPU only, tiny preset (the tests run this)

Needs this repository and a Python with torch and numpy; `src/` is put on the path, so no install
is needed and nothing is downloaded. Rendering the synthetic drive also needs scipy and moderngl
with a headless EGL; `--frames-from` needs pillow. Without the renderer the frames are seeded random
images, and the JSON says so.

Full mode (the default when CUDA is available):

1. frames: a synthetic city drive, 300 frames at 518x294, rendered here in a child process (so a
   failing EGL cannot take the check down) and cached under --work; a second run reuses it.
2. throughput: the `official` preset with RANDOM, seeded weights (no trained weights exist on the
   machine: the figures are speed, memory and numerics, not accuracy) over the 300 frames in chunks
   of 60 overlapping by 30 (9 chunks), synced memory, bf16 autocast, driven as `scal3r reconstruct`
   drives the engine. One warm-up on 2 chunks, then timed: frames/s, peak GPU memory
   (torch.cuda.max_memory_allocated), peak host RSS (getrusage), every output finite.
3. bf16_parity: the `small` preset on 24 frames at 224x126 (chunks of 8 overlapping by 4): CUDA
   bf16 outputs against the same model's CPU fp32 outputs, per output key, against `Tolerance`.
4. nccl: with 2 or more GPUs, 2 ranks (torch.multiprocessing.spawn, NCCL) split check 3's chunks;
   their outputs are compared with the one-process CUDA run. With 1 GPU: "skipped (1 GPU)".

Everything goes into one JSON (--out, also printed on stdout; progress goes to stderr) with the
device name, versions and each check's status; the exit code is 1 if any check fails.
Expected runtime on one H200: about 2-4 minutes, an estimate not yet measured on a GPU (building the
1.27B random weights on the CPU takes 25 s on one core, rendering 300 frames tens of seconds, the
timed forward a few tens of seconds); less with the frames cached; a 2-GPU check adds about 30 s.

Reduced mode (--reduced, automatic without CUDA): CPU only, the `tiny` preset, 8 frames at 112x56,
chunks of 4 overlapping by 2; check 3 compares CPU bf16 autocast with CPU fp32 (never fp16 on a
CPU); same JSON keys. Measured on one thread of a busy 2-core machine: 9 s (4 s with the frames
cached), 14 s with --cpu-ranks; most of it process start-up and building the synthetic world.
--cpu-ranks runs check 4 with 2 gloo ranks on the CPU, a stand-in for NCCL on the same code path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
# This repository's code is what is checked, even where another scal3r is installed.
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from scal3r.chunks import (OUTPUT_KEYS, chunk_ranges, frames_for_chunks, output_shapes,  # noqa: E402
                           reference_first_order)

Outputs = List[Dict[str, Tensor]]  # per chunk, as `infer_chunks` returns them
Report = Dict[str, Any]

WEIGHTS_NOTE = ("random weights, seeded (torch.manual_seed({seed})): no trained weights exist on this machine, so "
                "these figures are speed, memory and numerics, not reconstruction accuracy")
SOURCE_ASPECT = (294, 518)  # (H, W) of the synthetic drive; other widths keep this aspect
PERTURBATION = 0.1  # --perturb scales one candidate output by 1 + this: far outside the bf16 tolerance


@dataclass(frozen=True)
class Tolerance:
    """When a bf16 run agrees with an fp32 run of the same model (per output key).

    Error of one element: |cand - ref| / (|ref| + floor * rms(ref)). The floor stops elements that
    happen to be near zero (a translation component, a point near the camera centre) from dividing by
    their own tiny size: their bf16 error is inherited from the tensor's typical magnitude.

    Why these bounds: bf16 keeps 8 significant bits, so one rounding errs by at most u = 2^-8 = 3.9e-3
    relative (RMS about u / sqrt(3) = 2.3e-3). Roundings along the path from pixels to an output add
    up like a random walk, 2.3e-3 * sqrt(k) after k of them; each transformer layer rounds about 4
    times under autocast (its matmul inputs, the attention weights), so the 8-layer `small` preset's
    k ~ 32 predicts a median near 1.3e-2, which is what CPU bf16 against fp32 measured there (pose
    1.3e-2, the dense outputs 2e-4 to 2e-3; `tiny`: 1.1e-2). The median bound 3e-2 allows 4x as many
    roundings' worth (other kernels, the heads amplifying); the norm bound 6e-2 bounds the error's
    energy, so that a few wholly wrong frames fail (one wrong frame in 24 is about 0.2) even though
    the median would not see them. The maximum is reported, not bounded: single elements near zero
    or behind a flipped bf16 rounding in the memory's Newton-Schulz can be off by O(1) legitimately.
    """

    median_rel: float = 3e-2
    norm_rel: float = 6e-2
    floor: float = 0.1


@dataclass(frozen=True)
class Plan:
    """What one run does; `FULL` and `REDUCED` are the two modes, the CLI may override fields."""

    mode: str  # "full" | "reduced"
    device: str  # where the throughput run and the parity candidate run: "cuda" | "cpu"
    preset: str  # throughput model
    frames: int
    width: int
    block: int
    overlap: int
    dtype: str  # throughput dtype: "bf16" | "fp32"
    parity_preset: str
    parity_frames: int
    parity_width: int
    parity_block: int
    parity_overlap: int
    render_timeout_s: float

    @property
    def height(self) -> int:
        return aspect_height(self.width)


FULL = Plan("full", "cuda", "official", 300, 518, 60, 30, "bf16", "small", 24, 224, 8, 4, 900.0)
REDUCED = Plan("reduced", "cpu", "tiny", 8, 112, 4, 2, "fp32", "tiny", 8, 112, 4, 2, 120.0)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def aspect_height(width: int, aspect: Tuple[int, int] = SOURCE_ASPECT, patch: int = 14) -> int:
    """Height for `width` at the aspect (H, W), floored to a multiple of the patch size (as the
    release's preprocessing sizes frames): at the drive's aspect 518 -> 294, 224 -> 126, 112 -> 56."""
    return max(patch, int(width * aspect[0] / aspect[1]) // patch * patch)


def log(message: str) -> None:
    print(f"[device_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- frames ------------------------------------------------------------------------------------------

def render_drive(path: Path, n: int, width: int, height: int, seed: int) -> None:
    """Render `n` frames of a synthetic city drive into `path`: uint8 (n, 3, height, width) .npy.

    Runs in a child process (`--render`): an EGL driver that crashes takes only the child down."""
    from scal3r.data.synthetic import SynthConfig, build_world

    world = build_world(SynthConfig.preset("city", frames=n, seed=seed, trajectory="noloop", width=width,
                                           height=height))
    frames = np.empty((n, 3, height, width), np.uint8)
    with world.renderer() as renderer:
        for i in range(n):
            rgb, _ = world.render(renderer, i)
            frames[i] = rgb.transpose(2, 0, 1)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, frames)
    tmp.replace(path)  # a cache file is whole or absent


def random_frames(n: int, height: int, width: int, seed: int) -> Tensor:
    """uint8 (n, 3, height, width): smooth seeded noise plus grain, so that frames are not flat."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, height // 14), max(2, width // 14), generator=g)
    x = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    x = 0.85 * x + 0.15 * torch.rand(n, 3, height, width, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def rendered_frames(work: Path, n: int, width: int, height: int, seed: int,
                    timeout_s: float) -> Tuple[Optional[Tensor], Dict[str, Any]]:
    """The cached drive, rendering it first when missing; (None, info with the reason) on failure."""
    path = work / f"city_seed{seed}_{n}x{width}x{height}.npy"
    info: Dict[str, Any] = {"source": "synthetic city drive", "path": str(path)}
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        # llvmpipe (Mesa's CPU GL) would otherwise use every core, whatever torch was told.
        env = {**os.environ, "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", str(torch.get_num_threads()))}
        log(f"rendering {n} frames at {width}x{height} into {path}")
        t0 = time.perf_counter()
        try:
            child = subprocess.run([sys.executable, __file__, "--render", str(path), str(n), str(width), str(height),
                                    str(seed)], capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return None, {**info, "error": f"rendering took over {timeout_s:.0f} s"}
        if child.returncode != 0 or not path.is_file():
            last = (child.stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
            return None, {**info, "error": last[:300]}
        info["render_s"] = round(time.perf_counter() - t0, 2)
    else:
        info["cached"] = True
    frames = torch.from_numpy(np.load(path))
    if tuple(frames.shape) != (n, 3, height, width):
        return None, {**info, "error": f"cache holds {tuple(frames.shape)}; delete it to render again"}
    return frames, info


def folder_frames(path: str, n: int, width: int) -> Tuple[Tensor, Dict[str, Any]]:
    """Images (a folder, a list file or a video) through scal3r's own loader at `width`."""
    from scal3r.data.frames import FrameOptions, load_frames

    stack = load_frames(path, FrameOptions(resolution=width, max_frames=n))
    return stack.rgb8, {"source": "frames from disk", "path": str(path)}


def obtain_frames(plan: Plan, args: argparse.Namespace) -> Tuple[Tensor, Dict[str, Any]]:
    """uint8 (N, 3, H, W) frames for the throughput check, and a description for the report."""
    if args.frames_from:
        frames, info = folder_frames(args.frames_from, plan.frames, plan.width)
    else:
        frames, info = None, {}
        if not args.random_frames:
            frames, info = rendered_frames(Path(args.work), plan.frames, plan.width, plan.height, args.seed,
                                           plan.render_timeout_s)
        if frames is None:
            why = info.get("error", "--random-frames")
            info = {"source": "random", "note": f"seeded random images instead of a rendered drive ({why}); "
                                               "speed and memory do not depend on image content"}
            frames = random_frames(plan.frames, plan.height, plan.width, args.seed)
    n, _, h, w = frames.shape
    return frames, {**info, "count": int(n), "width": int(w), "height": int(h)}


def resized(frames: Tensor, width: int) -> Tensor:
    """uint8 (n, 3, H, W) -> float32 (n, 3, h, width) in [0, 1] at the same aspect (antialiased)."""
    height = aspect_height(width, (frames.shape[-2], frames.shape[-1]))
    x = frames.float() / 255
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


# --- running the engine ----------------------------------------------------------------------------

def build_model(preset: str, seed: int):
    """A `Scal3R` of `preset` with seeded random weights, on the CPU (as `scal3r reconstruct` builds it)."""
    from scal3r import Scal3R

    torch.manual_seed(seed)
    return Scal3R.from_preset(preset)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward(model, images: Tensor, ranges: Sequence[Tuple[int, int]], device: torch.device, dtype: torch.dtype,
            sync: bool = True) -> Outputs:
    """`infer_chunks` on `device`: images (N, 3, H, W) -> per chunk outputs, rows in frame order."""
    from scal3r.engine import infer_chunks

    return infer_chunks(model, images, ranges, sync=sync, device=device, dtype=dtype)


class OutputAudit:
    """Checks every chunk's outputs as they arrive (shapes, finiteness, which frames) and keeps
    none of them, so host memory is that of a reconstruct run, not of holding 300 frames' outputs."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.finite = {key: True for key in OUTPUT_KEYS}
        self.shapes_ok = True
        self.frames: set = set()

    def __call__(self, index: int, out: Dict[str, Tensor]) -> None:
        n = len(out["frames"])
        for key, shape in output_shapes(n, self.height, self.width).items():
            self.shapes_ok &= tuple(out[key].shape) == shape
            self.finite[key] &= bool(torch.isfinite(out[key]).all())
        self.frames.update(int(f) for f in out["frames"])


def check_throughput(plan: Plan, frames: Tensor, seed: int) -> Report:
    """Check 2: frames/s and peak memory of the synced chunked forward over all frames.

    frames: uint8 (N, 3, H, W). Driven like `scal3r reconstruct`: `run_chunks` on uint8 frames with
    the chunk state in device memory and every chunk's outputs handed over as soon as they exist."""
    from scal3r.engine import run_chunks

    device = torch.device(plan.device)
    dtype = DTYPES[plan.dtype]
    n, _, h, w = frames.shape
    ranges = chunk_ranges(n, plan.block, plan.overlap)
    chunks = [reference_first_order(s, e) for s, e in ranges]
    t0 = time.perf_counter()
    model = build_model(plan.preset, seed).to(device)
    build_s = time.perf_counter() - t0
    weights_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    warm = min(n, frames_for_chunks(2, plan.block, plan.overlap))  # two chunks: the sync path warms up too
    warm_chunks = [reference_first_order(s, e) for s, e in chunk_ranges(warm, plan.block, plan.overlap)]
    log(f"throughput: {plan.preset} preset built in {build_s:.1f} s; warm-up on {warm} frames")
    t0 = time.perf_counter()
    run_chunks(model, frames, warm_chunks, sync=True, device=device, dtype=dtype, on_output=lambda b, o: None)
    synchronize(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    log(f"throughput: timed run, {n} frames in {len(chunks)} chunks")
    audit = OutputAudit(h, w)
    t0 = time.perf_counter()
    run_chunks(model, frames, chunks, sync=True, device=device, dtype=dtype, on_output=audit)
    synchronize(device)
    seconds = time.perf_counter() - t0
    processed = sum(e - s for s, e in ranges)
    covered = audit.frames == set(range(n))
    result: Report = {
        "preset": plan.preset, "weights": "random (see top-level 'weights')", "frames": int(n),
        "resolution": f"{w}x{h}", "block": plan.block, "overlap": plan.overlap, "chunks": len(chunks),
        "frames_processed": processed, "device": str(device),
        "dtype": "bfloat16 autocast" if dtype == torch.bfloat16 else "float32", "sync": True,
        "model_build_s": round(build_s, 2), "warmup": {"frames": warm, "chunks": len(warm_chunks),
                                                         "seconds": round(warm_s, 3)},
        "seconds": round(seconds, 3), "input_frames_per_s": round(n / seconds, 3),
        "processed_frames_per_s": round(processed / seconds, 3), "weights_mib": round(weights_mib, 1),
        "peak_gpu_mib": None, "peak_gpu_reserved_mib": None,
        # ru_maxrss is KiB on Linux; it covers the whole process so far, building the fp32 weights included.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "finite": audit.finite, "shapes_ok": audit.shapes_ok, "frames_covered": covered,
    }
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    ok = all(audit.finite.values()) and audit.shapes_ok and covered
    return {"status": "pass" if ok else "fail", **result}


# --- comparing outputs -----------------------------------------------------------------------------

def sig(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant digits (errors span many decades: fixed decimals would zero them)."""
    return float(f"{x:.{digits}g}")


def stacked(outputs: Outputs, key: str) -> Tensor:
    """(rows, values per row) float64: all chunks' rows of `key` (a frame in two chunks is there twice)."""
    return torch.cat([o[key].reshape(o[key].shape[0], -1) for o in outputs]).double()


def relative_error(candidate: Tensor, reference: Tensor, floor: float) -> Tensor:
    """Elementwise |candidate - reference| / (|reference| + floor * rms(reference)), same shape."""
    scale = reference.pow(2).mean().sqrt()
    return (candidate - reference).abs() / (reference.abs() + floor * scale + torch.finfo(reference.dtype).tiny)


def compare_key(candidate: Tensor, reference: Tensor, tol: Tolerance) -> Report:
    """Statistics of one output key; candidate and reference: any same shape."""
    if candidate.shape != reference.shape:
        return {"status": "fail", "error": f"shape {tuple(candidate.shape)} != {tuple(reference.shape)}"}
    finite = bool(torch.isfinite(candidate).all() and torch.isfinite(reference).all())
    if not finite:
        return {"status": "fail", "finite": False}
    rel = relative_error(candidate, reference, tol.floor)
    norm_rel = float((candidate - reference).norm() / reference.norm().clamp_min(torch.finfo(torch.float64).tiny))
    median = float(rel.median())
    ok = median <= tol.median_rel and norm_rel <= tol.norm_rel
    return {"status": "pass" if ok else "fail", "median_rel": sig(median), "norm_rel": sig(norm_rel),
            "mean_rel": sig(float(rel.mean())), "max_rel": sig(float(rel.max())), "finite": True}


def compare_outputs(candidate: Outputs, reference: Outputs, tol: Tolerance) -> Report:
    """Check 3's verdict: every output key of `candidate` within `tol` of `reference`."""
    if len(candidate) != len(reference):
        return {"status": "fail", "error": f"{len(candidate)} chunks against {len(reference)}", "keys": {}}
    keys = {key: compare_key(stacked(candidate, key), stacked(reference, key), tol) for key in OUTPUT_KEYS}
    return {"status": "pass" if all(k["status"] == "pass" for k in keys.values()) else "fail", "keys": keys}


def perturbed(outputs: Outputs, key: str) -> Outputs:
    """A copy of `outputs` with `key` scaled by 1 + PERTURBATION (to prove the comparison can fail)."""
    return [{**o, key: o[key] * (1 + PERTURBATION)} for o in outputs]


# --- check 3: bf16 against fp32 ------------------------------------------------------------------

@dataclass
class ParityCase:
    """The model and frames shared by checks 3 and 4. images: float32 (n, 3, h, w) in [0, 1]."""

    model: Any
    images: Tensor
    ranges: List[Tuple[int, int]]
    device: torch.device
    dtype: torch.dtype


def parity_case(plan: Plan, frames: Tensor, seed: int) -> ParityCase:
    images = resized(frames[: plan.parity_frames], plan.parity_width).contiguous()
    ranges = chunk_ranges(images.shape[0], plan.parity_block, plan.parity_overlap)
    return ParityCase(build_model(plan.parity_preset, seed), images, ranges, torch.device(plan.device),
                      torch.bfloat16)


def check_parity(plan: Plan, case: ParityCase, tol: Tolerance, perturb: Optional[str]) -> Tuple[Report, Outputs]:
    """Check 3: the bf16 candidate against CPU fp32; returns the report and the candidate outputs."""
    cpu = torch.device("cpu")
    log(f"bf16_parity: {plan.parity_preset} preset, {len(case.images)} frames, CPU fp32 reference")
    reference = forward(case.model.to(cpu), case.images, case.ranges, cpu, torch.float32)
    log(f"bf16_parity: {case.device.type} bf16 candidate")
    candidate = forward(case.model.to(case.device), case.images, case.ranges, case.device, case.dtype)
    verdict = compare_outputs(perturbed(candidate, perturb) if perturb else candidate, reference, tol)
    if verdict["status"] == "pass" and all(k["max_rel"] == 0 for k in verdict["keys"].values()):
        # Bit-identical outputs mean nothing ran in bf16: the check would compare fp32 with itself.
        verdict = {**verdict, "status": "fail", "error": "the bf16 run equals the fp32 run bit for bit"}
    n, _, h, w = case.images.shape
    report = {
        "status": verdict["status"], "preset": plan.parity_preset, "frames": int(n), "resolution": f"{w}x{h}",
        "block": plan.parity_block, "overlap": plan.parity_overlap, "chunks": len(case.ranges),
        "reference": "cpu float32", "candidate": f"{case.device.type} bfloat16 autocast",
        "tolerance": {**asdict(tol), "error": "|cand - ref| / (|ref| + floor * rms(ref))",
                      "basis": "bf16 unit roundoff 2^-8 accumulated as a random walk; see Tolerance"},
        "perturbed": None if perturb is None else f"{perturb} x {1 + PERTURBATION} (testing: must fail)",
        **{k: v for k, v in verdict.items() if k != "status"},
    }
    return report, candidate


# --- check 4: ranks ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_worker(rank: int, world: int, port: int, job_path: str, device: str, threads: int) -> None:
    """One rank of check 4 (a torch.multiprocessing.spawn target): joins the group as torchrun would
    (RANK/WORLD_SIZE env, NCCL on CUDA, gloo on CPU), runs its block of chunks; rank 0 saves all."""
    from scal3r.engine.distributed import init_from_env, shutdown

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    rank_device = init_from_env(device, timeout_s=120)  # a dead peer fails the collective, no hang
    job = torch.load(job_path, weights_only=True)
    model = build_model(job["preset"], 0)
    model.load_state_dict(job["state"])  # the parent's weights, whatever this process's RNG made
    outputs = forward(model.to(rank_device), job["images"], [tuple(r) for r in job["ranges"]], rank_device,
                      DTYPES[job["dtype"]])
    if rank == 0:
        torch.save(outputs, job_path + ".outputs.pt")
    shutdown()


def spread(case: ParityCase, world: int) -> List[List[int]]:
    from scal3r.engine.runner import rank_chunks

    return [list(rank_chunks(len(case.ranges), r, world)) for r in range(world)]


def check_ranks(plan: Plan, case: ParityCase, single: Outputs, work: Path, backend: str,
                threads: int) -> Report:
    """Check 4: 2 ranks split the chunks; their outputs against the one-process run `single`.

    With the release's summation order the ranks should be bit-identical to one process. Where
    they are not (a non-deterministic kernel), each key's difference must stay under a tenth of what
    switching synchronisation off changes (`gcs_effect`): a dropped or doubled gradient contribution
    from a rank moves outputs by about that much, a rounding difference by far less."""
    import torch.multiprocessing as mp

    world = 2
    work.mkdir(parents=True, exist_ok=True)
    job_path = str(work / f"ranks_job_{os.getpid()}.pt")
    state = {k: v.detach().cpu() for k, v in case.model.state_dict().items()}
    torch.save({"preset": plan.parity_preset, "state": state, "images": case.images, "dtype": "bf16",
                "ranges": [list(r) for r in case.ranges]}, job_path)
    log(f"{backend}: {world} ranks over chunks {spread(case, world)}")
    try:
        mp.spawn(rank_worker, args=(world, free_port(), job_path, plan.device, threads), nprocs=world, join=True)
        ranked = torch.load(job_path + ".outputs.pt", weights_only=True)
    finally:
        for p in (job_path, job_path + ".outputs.pt"):
            Path(p).unlink(missing_ok=True)
    unsynced = forward(case.model.to(case.device), case.images, case.ranges, case.device, case.dtype, sync=False)
    keys: Report = {}
    identical = len(ranked) == len(single)
    for key in OUTPUT_KEYS:
        a, b, c = stacked(ranked, key), stacked(single, key), stacked(unsynced, key)
        if a.shape != b.shape:
            keys[key] = {"status": "fail", "error": f"shape {tuple(a.shape)} != {tuple(b.shape)}"}
            identical = False
            continue
        same = bool(torch.equal(a, b))
        identical &= same
        scale = b.norm().clamp_min(torch.finfo(b.dtype).tiny)
        diff, effect = float((a - b).norm() / scale), float((c - b).norm() / scale)
        ok = same or (diff <= 0.1 * effect and bool(torch.isfinite(a).all()))
        keys[key] = {"status": "pass" if ok else "fail", "identical": same, "norm_rel": sig(diff),
                     "max_abs": sig(float((a - b).abs().max())), "gcs_effect_norm_rel": sig(effect)}
    ok = all(k["status"] == "pass" for k in keys.values())
    return {"status": "pass" if ok else "fail", "backend": backend, "world": world,
            "chunks_per_rank": spread(case, world), "reference": f"one process on {case.device}",
            "dtype": "bfloat16 autocast", "identical": identical,
            "criterion": "bit-identical, or per key norm_rel <= 0.1 * gcs_effect_norm_rel (sync off)",
            "keys": keys}


# --- the report --------------------------------------------------------------------------------------

def environment(plan: Plan) -> Report:
    from scal3r import __version__

    env: Report = {"device": plan.device, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "python": platform.python_version(), "platform": platform.platform(), "scal3r": __version__,
                   "git_commit": git_commit(), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                   "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    if plan.device == "cuda":
        env["device_name"] = torch.cuda.get_device_name(0)
        env["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(env["gpus"])]
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
        env["cudnn"] = torch.backends.cudnn.version()
        env["nccl"] = nccl_version()
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def nccl_version() -> Optional[str]:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 - a build without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def git_commit() -> Optional[str]:
    """HEAD of the checkout, or None (the GPU box may have a copy of the tree without .git)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def guarded(name: str, fn: Callable[[], Report]) -> Report:
    """Run one check; an exception becomes a failed check (the other checks still run)."""
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - any failure of a check is that check's result
        result = {"status": "fail", "error": f"{type(e).__name__}: {str(e).strip()[:500]}",
                  "traceback": traceback.format_exc().strip().splitlines()[-6:]}
    result["check_s"] = round(time.perf_counter() - t0, 2)
    log(f"{name}: {result['status']} ({result['check_s']} s)")
    return result


def skipped(reason: str) -> Report:
    return {"status": "skipped", "reason": reason}


def choose_plan(args: argparse.Namespace, cuda: bool) -> Tuple[Plan, str]:
    if args.reduced:
        plan, why = REDUCED, "--reduced"
    elif not cuda:
        plan, why = REDUCED, "CUDA is not available"
    else:
        plan, why = FULL, "CUDA is available"
    overrides = {k: getattr(args, k) for k in ("preset", "frames", "width", "block", "overlap", "parity_preset",
                                               "parity_frames", "parity_width") if getattr(args, k) is not None}
    return replace(plan, **overrides), why


def run_checks(plan: Plan, args: argparse.Namespace, report: Report) -> None:
    """Fills report["frames"] and report["checks"] (throughput, bf16_parity, nccl)."""
    frames, report["frames"] = obtain_frames(plan, args)
    checks: Report = {}
    report["checks"] = checks
    log(f"frames: {report['frames']['source']}, {len(frames)} at {frames.shape[-1]}x{frames.shape[-2]}")
    if plan.device == "cuda" and not torch.cuda.is_bf16_supported():
        checks["throughput"] = checks["bf16_parity"] = {"status": "fail", "error": "this GPU has no bfloat16"}
        checks["nccl"] = skipped("no bfloat16")
        return
    checks["throughput"] = guarded("throughput", lambda: check_throughput(plan, frames, args.seed))
    if plan.device == "cuda":
        torch.cuda.empty_cache()
    case = parity_case(plan, frames, args.seed)
    single: List[Outputs] = []

    def parity() -> Report:
        result, candidate = check_parity(plan, case, Tolerance(), args.perturb)
        single.append(candidate)
        return result

    checks["bf16_parity"] = guarded("bf16_parity", parity)
    gpus = torch.cuda.device_count() if plan.device == "cuda" else 0
    if not single:
        checks["nccl"] = skipped("the one-process run of bf16_parity failed")
    elif plan.device == "cuda" and gpus >= 2:
        checks["nccl"] = guarded("nccl", lambda: check_ranks(plan, case, single[0], Path(args.work), "nccl", 1))
    elif plan.device == "cuda":
        checks["nccl"] = skipped("1 GPU")
    elif args.cpu_ranks:
        threads = max(1, torch.get_num_threads() // 2)
        checks["nccl"] = guarded("nccl (gloo stand-in)",
                                 lambda: check_ranks(plan, case, single[0], Path(args.work), "gloo", threads))
        checks["nccl"]["note"] = "gloo on the CPU standing in for NCCL: the same engine and spawn code path"
    else:
        checks["nccl"] = skipped("no CUDA (reduced mode); --cpu-ranks runs 2 gloo ranks on the CPU instead")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="JSON report (default: WORK/device.json)")
    p.add_argument("--work", default=str(REPO / "runs" / "device_check"),
                   help="cache of the rendered frames and scratch files (default: runs/device_check)")
    p.add_argument("--reduced", action="store_true", help="CPU only, tiny preset, seconds (automatic without CUDA)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--frames-from", default=None, metavar="PATH",
                     help="a folder of images, an image list or a video instead of the synthetic drive")
    src.add_argument("--random-frames", action="store_true", help="seeded random images instead of rendering")
    p.add_argument("--cpu-ranks", action="store_true",
                   help="reduced mode: run the 2-rank check with gloo on the CPU (a stand-in for NCCL)")
    p.add_argument("--seed", type=int, default=0, help="weights, frames and the synthetic world")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    for name, kind in (("preset", str), ("frames", int), ("width", int), ("block", int), ("overlap", int),
                       ("parity-preset", str), ("parity-frames", int), ("parity-width", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the mode's default")
    p.add_argument("--perturb", default=None, choices=OUTPUT_KEYS,
                   help=f"testing: scale this bf16 output by {1 + PERTURBATION} before the comparison (must fail)")
    p.add_argument("--render", nargs=5, default=None, help=argparse.SUPPRESS)  # child: PATH N W H SEED
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        path, n, w, h, seed = args.render
        render_drive(Path(path), int(n), int(w), int(h), int(seed))
        return 0
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan, why = choose_plan(args, torch.cuda.is_available())
    log(f"{plan.mode} mode ({why})")
    report: Report = {"script": "benchmarks/device_check.py", "mode": plan.mode, "mode_reason": why,
                      "environment": environment(plan), "weights": WEIGHTS_NOTE.format(seed=args.seed),
                      "plan": asdict(plan)}
    run_checks(plan, args, report)
    report["passed"] = all(c["status"] != "fail" for c in report["checks"].values())
    report["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(args.out) if args.out else Path(args.work) / "device.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
    log(f"{'all checks passed' if report['passed'] else 'FAILED'}; report in {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
