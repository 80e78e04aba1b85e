"""Time and peak RSS of the chunked network vs sequence length (small preset, CPU).

    python benchmarks/scaling.py [--frames 150 300 600 990] [--width 126 --height 70]

Frames live in a memory-mapped uint8 file and each chunk's outputs are handed off as soon as they
exist (as `scal3r reconstruct` does), so what grows with the sequence is the engine's own state:
every chunk's tokens and head features in RAM without offload, one chunk's with `--offload`.
Each run is a fresh process so that peak RSS is its own.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[150, 300, 600, 990])
    p.add_argument("--preset", default="small")
    p.add_argument("--width", type=int, default=126)
    p.add_argument("--height", type=int, default=70)
    p.add_argument("--block", type=int, default=60)
    p.add_argument("--overlap", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
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
