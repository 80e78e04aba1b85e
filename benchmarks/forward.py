"""Multi-chunk forward: frames/s and peak RSS of the layer-synchronous GCS loop (CPU).

    python benchmarks/forward.py [--preset small] [--width 252 --height 140] [--block 16 --overlap 8]

Each configuration runs in a fresh process so that peak RSS is its own. Random weights: speed and
memory do not depend on their values.
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(args) -> dict:
    import torch

    from scal3r import Scal3R, infer_chunks
    from scal3r.chunks import chunk_ranges

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    n_chunks = args.chunks[0]
    model = Scal3R.from_preset(args.preset)
    stride = args.block - args.overlap
    n_frames = args.block + stride * (n_chunks - 1)
    images = torch.rand(n_frames, 3, args.height, args.width)
    ranges = chunk_ranges(n_frames, args.block, args.overlap)
    assert len(ranges) == n_chunks
    infer_chunks(model, images[: args.block], [(0, args.block)])  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    infer_chunks(model, images, ranges, sync=True)
    dt = time.perf_counter() - t0
    frames_processed = sum(e - s for s, e in ranges)
    return {
        "chunks": n_chunks, "frames": n_frames, "frames_processed": frames_processed, "seconds": dt,
        "frames_per_s": frames_processed / dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--width", type=int, default=252)
    p.add_argument("--height", type=int, default=140)
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunks", type=int, nargs="+", default=[2, 8])
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    print(f"preset {args.preset}, {args.width}x{args.height}, block {args.block}, overlap {args.overlap}, "
          f"{args.threads} threads, fp32 CPU")
    print(f"{'chunks':>6} {'frames':>6} {'processed':>9} {'seconds':>8} {'frames/s':>9} {'peak RSS MiB':>13}")
    for n in args.chunks:
        cmd = [sys.executable, __file__, "--one", "--chunks", str(n)] + [
            f"--{k}={v}" for k, v in (("preset", args.preset), ("width", args.width), ("height", args.height),
                                      ("block", args.block), ("overlap", args.overlap), ("threads", args.threads))]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"{r['chunks']:>6} {r['frames']:>6} {r['frames_processed']:>9} {r['seconds']:>8.2f} "
              f"{r['frames_per_s']:>9.2f} {r['peak_rss_mib']:>13.0f}")


if __name__ == "__main__":
    main()
