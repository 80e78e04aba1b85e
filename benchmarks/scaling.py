"""Time and peak RSS of the chunked network vs sequence length (small preset, CPU).

    python benchmarks/scaling.py [--frames 150 300 600 990] [--width 126 --height 70]

Frames live in a memory-mapped uint8 file and each chunk's outputs are handed off as soon as they
exist (as `scal3r reconstruct` does), so what grows with the sequence is the engine's own state:
every chunk's tokens and head features in RAM without offload, one chunk's with `--offload`.
Each run is a fresh process so that peak RSS is its own.

End to end (`--e2e`): the whole `scal3r reconstruct --offload` on a rendered city drive, per stage:

    python benchmarks/scaling.py --e2e --frames 1000 2000 [--width 126 --height 70] [--work DIR]
                                 [--src OTHER/src] [--json results.json]

renders `scal3r synth --scene city --frames N --width W --height H` once per size (kept in
--work), runs `scal3r reconstruct IMAGES --offload --preset tiny --resolution W` in a fresh process
(`--src`: another source tree on PYTHONPATH, e.g. the code before a change), and reports the
per-stage peaks of summary.json `stages` and the process's peak read from outside (VmRSS of
/proc/<pid>/status every 0.1 s), the ratio of each to the smallest size, and the network's time
per chunk-frame with the 10,000-frame time it predicts.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def run_one(frames: int, offload: bool, a) -> dict:
    import numpy as np
    import torch

    from scal3r import Scal3R
    from scal3r.chunks import chunk_ranges, reference_first_order
    from scal3r.engine.runner import run_chunks
    from scal3r.engine.state import DiskStore, MemoryStore

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = Scal3R.from_preset(a.preset)
    with tempfile.TemporaryDirectory() as tmp:
        shape = (frames, 3, a.height, a.width)
        mm = np.memmap(os.path.join(tmp, "frames.u8"), dtype=np.uint8, mode="w+", shape=shape)
        rng = np.random.default_rng(0)
        for i in range(frames):  # written frame by frame: never the whole video in RAM
            mm[i] = rng.integers(0, 256, size=shape[1:], dtype=np.uint8)
        mm.flush()
        del mm
        images = np.memmap(os.path.join(tmp, "frames.u8"), dtype=np.uint8, mode="r", shape=shape)
        ranges = chunk_ranges(frames, a.block, a.overlap)
        fed = [reference_first_order(s, e) for s, e in ranges]
        run_chunks(model, images, fed[:1])  # warm-up
        store = DiskStore(os.path.join(tmp, "state")) if offload else MemoryStore()
        count = [0]
        t0 = time.perf_counter()
        run_chunks(model, images, fed, store=store, on_output=lambda b, out: count.__setitem__(0, count[0] + 1))
        seconds = time.perf_counter() - t0
    assert count[0] == len(fed)
    return {"frames": frames, "chunks": len(fed), "offload": offload, "seconds": seconds,
            "ms_per_frame": 1000 * seconds / frames,
            # Chunks overlap, so a frame is processed ~2x; the share of chunk-frames per frame grows from
            # 1.6 (150 frames) to 1.94 (990) with block 60 / overlap 30: per chunk-frame is the engine's own cost.
            "ms_per_chunk_frame": 1000 * seconds / sum(len(c) for c in fed),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --- end to end ---------------------------------------------------------------------------------

STAGES = ("model", "decode", "loop detection", "network", "backend", "fusion", "export", "plot")


def _vmrss_kib(pid: int):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _env(src):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    if src:
        env["PYTHONPATH"] = os.path.abspath(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def render(frames: int, a) -> str:
    """The city drive of `frames` frames at W×H under --work (rendered once)."""
    world = os.path.join(a.work, f"city-{a.width}x{a.height}-{frames}")
    if not os.path.isfile(os.path.join(world, "meta.json")):
        subprocess.run([sys.executable, "-m", "scal3r", "synth", "--scene", "city", "--frames", str(frames),
                        "--width", str(a.width), "--height", str(a.height), "--out", world, "--overwrite",
                        "--quiet"], check=True, env=_env(a.src))
    return world


def _chunk_frames(summary: dict) -> int:
    """Frames the network ran: every chunk's plus every loop chunk's."""
    from scal3r.geometry import LoopCandidate, LoopConfig, loop_chunk_frames

    ranges = [tuple(r) for r in summary["chunk_ranges"]]
    total = sum(e - s for s, e in ranges)
    window = LoopConfig().window
    for e in summary["loops"]["edges"]:
        total += len(loop_chunk_frames(LoopCandidate(e["frame_a"], e["frame_b"], e["similarity"]), ranges, window))
    return total


def run_e2e(frames: int, a) -> dict:
    world = render(frames, a)
    out = os.path.join(a.work, f"out-{a.label}-{a.width}x{a.height}-{frames}")
    if os.path.exists(out):
        import shutil

        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "scal3r", "reconstruct", os.path.join(world, "images"), "--out", out, "--offload",
           "--preset", a.preset, "--resolution", str(a.width), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(a.src), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        kib = _vmrss_kib(proc.pid)
        if kib is not None:
            peak = max(peak, kib)
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"reconstruct of {frames} frames failed ({proc.returncode}):\n{stderr[-3000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    stages = {k: {"seconds": v["seconds"], "peak_rss_mib": v["peak_rss_mib"]} for k, v in summary["stages"].items()}
    cf = _chunk_frames(summary)
    return {"frames": frames, "size": summary["size"], "chunks": summary["chunks"],
            "network_chunks": summary["network_chunks"], "chunk_frames": cf, "points": summary["points"],
            "wall_seconds": round(wall, 1), "external_peak_rss_mib": round(peak / 1024, 1),
            "summary_peak_rss_mib": summary["peak_rss_mib"], "stages": stages,
            "network_ms_per_chunk_frame": round(1000 * stages["network"]["seconds"] / cf, 2), "out": out,
            "ranges": summary["chunk_ranges"]}


def _predict_chunk_frames(frames: int, block: int, overlap: int, loops: int, loop_frames: float) -> int:
    from scal3r.chunks import chunk_ranges

    return sum(e - s for s, e in chunk_ranges(frames, block, overlap)) + int(round(loops * loop_frames))


def main_e2e(a) -> None:
    os.makedirs(a.work, exist_ok=True)
    rows = []
    for n in a.frames:
        r = run_e2e(n, a)
        rows.append(r)
        print(f"{n} frames: {r['wall_seconds']} s, external peak {r['external_peak_rss_mib']} MiB, "
              f"{r['points']} points, network {r['network_ms_per_chunk_frame']} ms/chunk-frame", flush=True)
    base = rows[0]
    w, h = base["size"]
    print(f"\nscal3r reconstruct --offload --preset {a.preset} --resolution {a.width} ({w}x{h}), city drive, "
          f"{a.label}: peak RSS MiB per stage (summary.json) and from outside (/proc VmRSS every 0.1 s)")
    head = f"{'stage':<16}" + "".join(f"{r['frames']:>9}" for r in rows) + "".join(
        f"{'x ' + str(r['frames']) + '/' + str(base['frames']):>14}" for r in rows[1:])
    print(head)
    names = [s for s in STAGES if s in base["stages"]] + [s for s in base["stages"] if s not in STAGES]
    worst = 0.0
    for s in names + ["(outside)", "(seconds)"]:
        def val(r):
            if s == "(outside)":
                return r["external_peak_rss_mib"]
            if s == "(seconds)":
                return r["wall_seconds"]
            return r["stages"].get(s, {}).get("peak_rss_mib")
        vals = [val(r) for r in rows]
        line = f"{s:<16}" + "".join(f"{v:>9.0f}" if v is not None else f"{'-':>9}" for v in vals)
        for v in vals[1:]:
            ratio = v / vals[0] if v is not None and vals[0] else None
            line += f"{ratio:>14.3f}" if ratio is not None else f"{'-':>14}"
            if ratio is not None and s != "(seconds)":
                worst = max(worst, ratio)
        print(line)
    print(f"largest peak ratio (any stage or outside): x{worst:.3f} (target <= 1.3)")
    # Network time per chunk-frame, and the 10,000-frame prediction from it.
    last = rows[-1]
    per_cf = last["stages"]["network"]["seconds"] / last["chunk_frames"]
    loops = last["network_chunks"] - last["chunks"]
    loop_frames = (last["chunk_frames"] - sum(e - s for s, e in _ranges(last))) / loops if loops else 0.0
    cf10k = _predict_chunk_frames(10_000, a.block, a.overlap, loops, loop_frames)
    other = sum(v["seconds"] for k, v in last["stages"].items() if k != "network") / last["frames"]
    print(f"network: {1000 * per_cf:.1f} ms per chunk-frame at {last['frames']} frames "
          f"({last['chunk_frames']} chunk-frames); 10,000 frames ≈ {cf10k} chunk-frames → predicted "
          f"{per_cf * cf10k:.0f} s network + {other * 10_000:.0f} s other stages "
          + ("(prediction; 10,000 frames measured above)" if last["frames"] == 10_000
             else "(PREDICTED, not measured)"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"label": a.label, "width": a.width, "height": a.height, "preset": a.preset, "rows": rows,
                       "network_s_per_chunk_frame": per_cf, "predicted_10000": {
                           "chunk_frames": cf10k, "network_seconds": per_cf * cf10k,
                           "other_seconds": other * 10_000}}, f, indent=1)


def _ranges(row: dict):
    return [tuple(r) for r in row["ranges"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--e2e", action="store_true", help="the whole `scal3r reconstruct --offload` per stage (see above)")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "scal3r-scaling"),
                   help="--e2e: rendered drives and outputs")
    p.add_argument("--src", default=None,
                   help="--e2e: source tree to run (PYTHONPATH), e.g. a checkout before a change")
    p.add_argument("--label", default="current", help="--e2e: name of this run in the table and output folders")
    p.add_argument("--json", default=None, help="--e2e: write the measurements here")
    p.add_argument("--frames", type=int, nargs="+", default=None)
    p.add_argument("--preset", default=None, help="model preset (default: small; tiny with --e2e)")
    p.add_argument("--width", type=int, default=126)
    p.add_argument("--height", type=int, default=70)
    p.add_argument("--block", type=int, default=60)
    p.add_argument("--overlap", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.e2e:
        a.frames = a.frames or [1000, 2000]
        a.preset = a.preset or "tiny"
        main_e2e(a)
        return
    a.frames = a.frames or [150, 300, 600, 990]
    a.preset = a.preset or "small"
    if a.one:
        print(json.dumps(run_one(int(a.one[0]), a.one[1] == "1", a)))
        return
    print(f"preset {a.preset}, {a.width}x{a.height}, block {a.block}/overlap {a.overlap}, {a.threads} threads, "
          "fp32 CPU, synchronised memory")
    print(f"{'offload':>7} {'frames':>6} {'chunks':>6} {'seconds':>8} {'ms/frame':>9} {'ms/chunk-frame':>15} "
          f"{'peak RSS MiB':>13}")
    rows = {}
    for offload in (False, True):
        for n in a.frames:
            cmd = [sys.executable, __file__, "--one", str(n), "1" if offload else "0", f"--preset={a.preset}",
                   f"--width={a.width}", f"--height={a.height}", f"--block={a.block}", f"--overlap={a.overlap}",
                   f"--threads={a.threads}"]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows[(offload, n)] = r
            print(f"{str(offload):>7} {n:>6} {r['chunks']:>6} {r['seconds']:>8.1f} {r['ms_per_frame']:>9.1f} "
                  f"{r['ms_per_chunk_frame']:>15.1f} {r['peak_rss_mib']:>13.0f}", flush=True)
    lo, hi = min(a.frames), max(a.frames)
    for offload in (False, True):
        t = rows[(offload, hi)]["ms_per_frame"] / rows[(offload, lo)]["ms_per_frame"]
        c = rows[(offload, hi)]["ms_per_chunk_frame"] / rows[(offload, lo)]["ms_per_chunk_frame"]
        m = rows[(offload, hi)]["peak_rss_mib"] / rows[(offload, lo)]["peak_rss_mib"]
        print(f"offload={offload}: per-frame time {hi} vs {lo} frames: x{t:.3f} (target <= 1.15), per chunk-frame x{c:.3f}; "
              f"peak RSS x{m:.2f}" + (" (target <= 1.3)" if offload else ""))


if __name__ == "__main__":
    main()
