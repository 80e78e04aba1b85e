"""Backend benchmark: alignment, loop detection, pose graph and fusion on simulated drives.

    python benchmarks/backend.py                 # 1000 and 5000 frames, each in a fresh process
    python benchmarks/backend.py --frames 1000   # one size, in this process

Ground truth is `scal3r.eval.simulate.road_scene` (a closed road driven once round plus 10%, so
the end revisits the start), chunk predictions come from `simulate_chunks` with per-chunk drift,
loops from simulated place descriptors → `find_loop_candidates` → `loop_chunk_frames` →
`simulate_loop_chunk`. Times are wall-clock on this machine; peak RSS is the process maximum.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def run(frames: int, height: int, width: int, block: int, overlap: int, seed: int) -> dict:
    import numpy as np

    from scal3r.eval.simulate import (SimulationConfig, road_scene, simulate_chunks, simulate_descriptors,
                                      simulate_loop_chunk)
    from scal3r.eval.trajectory import ate_rmse
    from scal3r.geometry import LoopConfig, assemble, find_loop_candidates, fuse_reconstruction, loop_chunk_frames
    from scal3r.geometry.fuse import FusionConfig

    # Chunking rule of the release (the engine's): chunk i = [i(B−O), min(i(B−O)+B, N)).
    stride = block - overlap
    count = max(1, (frames - overlap + stride - 1) // stride)
    ranges = [(i * stride, min(i * stride + block, frames)) for i in range(count)]

    t0 = time.perf_counter()
    gt = road_scene(frames, loop=True, height=height, width=width, seed=seed, revisit=0.1, colors=True)
    cfg = SimulationConfig(heading_drift_deg=0.01, scale_drift=0.001, seed=seed)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, cfg)
    t_sim = time.perf_counter() - t0

    stamps = {}

    def progress(stage, done, total):
        stamps[stage] = time.perf_counter()

    t0 = time.perf_counter()
    base = assemble(outs, ranges, progress=progress)
    t_align = stamps["align"] - t0 if "align" in stamps else 0.0

    t0 = time.perf_counter()
    candidates = find_loop_candidates(simulate_descriptors(gt.c2w, seed=seed), LoopConfig())
    t_detect = time.perf_counter() - t0
    loops = []
    for k, c in enumerate(candidates):
        try:
            loops.append(simulate_loop_chunk(loop_chunk_frames(c, ranges), gt.c2w, gt.K, gt.depth, cfg, key=k))
        except Exception:  # both ends in one chunk: nothing to close
            pass

    stamps.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        closed = assemble(outs, ranges, loops=loops, progress=progress)
        t_end = time.perf_counter()
    t_loop_align = stamps.get("loops", stamps["align"]) - stamps["align"]
    t_pgo = stamps.get("pose_graph", stamps.get("loops", t_end)) - stamps.get("loops", stamps["align"])

    t0 = time.perf_counter()
    cloud = fuse_reconstruction(closed, colors=gt.colors, config=FusionConfig(voxel_size=0.25))
    t_fuse = time.perf_counter() - t0

    return {
        "frames": frames, "size": f"{height}x{width}", "chunks": len(ranges), "path_m": round(gt.path_length, 1),
        "simulate_s": round(t_sim, 2),
        "align_s": round(t_align, 3), "align_per_pair_ms": round(1000 * t_align / max(len(ranges) - 1, 1), 2),
        "loop_detect_s": round(t_detect, 3), "loop_align_s": round(t_loop_align, 3),
        "loops_found": len(candidates), "loops_accepted": sum(r.accepted for r in closed.loops),
        "pose_graph_s": round(t_pgo, 3), "pose_graph_iters": closed.pose_graph_iterations,
        "fuse_s": round(t_fuse, 3), "fused_points": int(cloud.points.shape[0]),
        "ate_no_loops_m": round(ate_rmse(base.c2w, gt.c2w), 3),
        "ate_loops_m": round(ate_rmse(closed.c2w, gt.c2w), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--block", type=int, default=60)
    parser.add_argument("--overlap", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line per size")
    args = parser.parse_args()
    if len(args.frames) == 1:
        result = run(args.frames[0], args.height, args.width, args.block, args.overlap, args.seed)
        print(json.dumps(result))
        return
    rows = []
    for n in args.frames:  # a fresh process per size, so peak RSS is that size's own
        cmd = [sys.executable, __file__, "--frames", str(n), "--height", str(args.height), "--width", str(args.width),
               "--block", str(args.block), "--overlap", str(args.overlap), "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        if args.json:
            print(out)
    if args.json:
        return
    keys = list(rows[0].keys())
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{r['frames']:>12}" for r in rows))
    for k in keys[1:]:
        print(f"{k:{width}}  " + "  ".join(f"{str(r[k]):>12}" for r in rows))


if __name__ == "__main__":
    main()
