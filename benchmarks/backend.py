"""Backend benchmark on simulated drives: alignment, loops, pose graph, fusion, memory, accuracy.

    python benchmarks/backend.py                  # everything below (several minutes on 2 cores)
    python benchmarks/backend.py drives --frames 1000
    python benchmarks/backend.py pair             # one chunk pair at 154×518
    python benchmarks/backend.py posegraph        # 100 chunks with ~70 loops
    python benchmarks/backend.py cases            # the kilometre-scale cases of issue 9

Ground truth is `scal3r.eval.simulate.road_scene` (an analytic road with box buildings); chunk
predictions come from `simulate_chunks` (75-frame chunks, 30 overlap, each chunk in its own random
Sim(3) frame, drift growing away from the reference row, depth noise, 2% outliers); loops from
simulated place descriptors → `find_loop_candidates` → `loop_chunk_frames` → `simulate_loop_chunk`.
"ours" is `BackendConfig()`, "release" is `BackendConfig.release()` (the release's alignment and
overlap split, with VGGT-Long's unit-weight Sim(3) graph and no robust kernel for loops).
Each drive runs in a fresh process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def _ranges(n, block=75, overlap=30):
    stride = block - overlap
    count = max(1, (n - overlap + stride - 1) // stride)
    return [(i * stride, min(i * stride + block, n)) for i in range(count)]


def _loops(gt, ranges, cfg, seed):
    from scal3r.eval.simulate import simulate_descriptors, simulate_loop_chunk
    from scal3r.geometry import LoopConfig, find_loop_candidates, loop_chunk_frames

    t0 = time.perf_counter()
    candidates = find_loop_candidates(simulate_descriptors(gt.c2w, seed=seed), LoopConfig())
    t_detect = time.perf_counter() - t0
    loops = []
    for k, c in enumerate(candidates):
        try:
            loops.append(simulate_loop_chunk(loop_chunk_frames(c, ranges), gt.c2w, gt.K, gt.depth, cfg, key=k))
        except Exception:  # both ends in one chunk: nothing to close
            pass
    return loops, t_detect


def drive(frames: int, revisit: float, scale_drift: float, seed: int, height: int, width: int) -> dict:
    """One drive: per-stage times, peak RSS and ATE with and without loops."""
    from scal3r.eval.simulate import SimulationConfig, road_scene, simulate_chunks
    from scal3r.eval.trajectory import ate_rmse
    from scal3r.geometry import BackendConfig, assemble, fuse_reconstruction
    from scal3r.geometry.fuse import FusionConfig

    ranges = _ranges(frames)
    gt = road_scene(frames, loop=True, height=height, width=width, seed=seed, revisit=revisit, colors=True)
    cfg = SimulationConfig(heading_drift_deg=0.005, scale_drift=scale_drift, drift_jitter=0.0, seed=seed)
    truth = []
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, cfg, truth=truth)
    loops, t_detect = _loops(gt, ranges, cfg, seed)
    stamps = {}

    def progress(stage, done, total):
        stamps[stage] = time.perf_counter()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = assemble(outs, ranges)
        t0 = time.perf_counter()
        closed = assemble(outs, ranges, loops=loops, progress=progress)
        release = assemble(outs, ranges, loops=loops, config=BackendConfig.release())
        release_seq = assemble(outs, ranges, config=BackendConfig.release())
        import numpy as np

        best = assemble(outs, ranges, chunk_poses=np.stack(truth))
    t_fuse0 = time.perf_counter()
    cloud = fuse_reconstruction(closed, colors=gt.colors, config=FusionConfig(voxel_size=0.25))
    t_fuse = time.perf_counter() - t_fuse0
    return {
        "frames": frames, "chunks": len(ranges), "path_m": round(gt.path_length), "depth_hw": f"{height}x{width}",
        "align_s": round(stamps["align"] - t0, 2),
        "loop_detect_s": round(t_detect, 3),
        "loop_align_s": round(stamps.get("loops", stamps["align"]) - stamps["align"], 2),
        "loops": f"{sum(r.accepted for r in closed.loops)}/{len(loops)}",
        "pose_graph_s": round(stamps.get("pose_graph", stamps["align"]) - stamps.get("loops", stamps["align"]), 2),
        "fuse_s": round(t_fuse, 2), "fused_points": int(cloud.points.shape[0]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "ate_seq_m": round(ate_rmse(base.c2w, gt.c2w), 3),
        "ate_loops_m": round(ate_rmse(closed.c2w, gt.c2w), 3),
        "release_ate_seq_m": round(ate_rmse(release_seq.c2w, gt.c2w), 3),
        "release_ate_loops_m": round(ate_rmse(release.c2w, gt.c2w), 3),
        "best_m": round(ate_rmse(best.c2w, gt.c2w), 3),
    }


def pair(height: int = 154, width: int = 518, repeats: int = 3) -> dict:
    """One chunk pair (75-frame chunks, 30 shared frames) at full resolution: alignment time."""
    from scal3r.eval.simulate import SimulationConfig, road_scene, simulate_chunks
    from scal3r.geometry import BackendConfig, assemble

    gt = road_scene(120, loop=False, height=height, width=width, seed=0)
    ranges = [(0, 75), (45, 120)]
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, SimulationConfig(seed=0))
    out = {"size": f"{height}x{width}", "overlap_frames": 30}
    for name, config in (("ours", BackendConfig()), ("release", BackendConfig.release())):
        times = []
        for _ in range(repeats):
            stamps = {}
            t0 = time.perf_counter()
            assemble(outs, ranges, config=config, progress=lambda s, d, t: stamps.__setitem__(s, time.perf_counter()))
            times.append(stamps["align"] - t0)
        out[f"{name}_pair_s"] = round(min(times), 3)
    return out


def posegraph(seed: int = 1) -> dict:
    """100 chunks with ~70 loops: time of the pose-graph stage (drift Jacobians, GNC, solves)."""

    from scal3r.eval.simulate import SimulationConfig, road_scene, simulate_chunks
    from scal3r.eval.trajectory import ate_rmse
    from scal3r.geometry import BackendConfig, assemble

    frames = 4530
    ranges = _ranges(frames)
    gt = road_scene(frames, loop=True, height=24, width=32, seed=seed, revisit=1.0)
    cfg = SimulationConfig(heading_drift_deg=0.005, scale_drift=0.00035, drift_jitter=0.0, seed=seed)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, cfg)
    loops, _ = _loops(gt, ranges, cfg, seed)
    out = {"chunks": len(ranges), "loops": len(loops)}
    for name, config in (("ours", BackendConfig()), ("release", BackendConfig.release())):
        stamps = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = assemble(outs, ranges, loops=loops, config=config,
                           progress=lambda s, d, t: stamps.__setitem__(s, time.perf_counter()))
        out[f"{name}_pose_graph_s"] = round(stamps["pose_graph"] - stamps["loops"], 3)
        out[f"{name}_ate_m"] = round(ate_rmse(rec.c2w, gt.c2w), 3)
    return out


def cases(seed: int = 1) -> list:
    """The kilometre-scale cases of issue 9: ATE of sequential alignment, loops, best possible."""
    import numpy as np

    from scal3r.eval.simulate import (SimulationConfig, road_scene, simulate_chunks, simulate_false_loop_chunk)
    from scal3r.eval.trajectory import ate_rmse
    from scal3r.geometry import BackendConfig, LoopCandidate, assemble, loop_chunk_frames

    rows = []
    long = road_scene(4530, loop=True, height=24, width=32, seed=seed, revisit=0.03)
    short = road_scene(1000, loop=True, height=24, width=32, seed=seed, revisit=0.3)
    for name, gt, scale_drift, false in (("4530 frames, revisits at the end", long, 0.0, False),
                                         ("same, ~9x scale drift", long, 0.00035, False),
                                         ("1000 frames, true loops", short, 0.00035, False),
                                         ("1000 frames, true loops + 1 false", short, 0.00035, True)):
        ranges = _ranges(gt.c2w.shape[0])
        cfg = SimulationConfig(heading_drift_deg=0.005, scale_drift=scale_drift, drift_jitter=0.0, seed=seed)
        truth = []
        outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, cfg, truth=truth)
        loops, _ = _loops(gt, ranges, cfg, seed)
        if false:
            frames = loop_chunk_frames(LoopCandidate(250, 600, 0.95), ranges)
            loops.append(simulate_false_loop_chunk(frames[:20], frames[20:], gt.c2w, gt.K, gt.depth, cfg, key=99))
        row = {"case": name, "loops": len(loops)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, config in (("release", BackendConfig.release()), ("ours", BackendConfig())):
                row[f"{label}_seq_m"] = round(ate_rmse(assemble(outs, ranges, config=config).c2w, gt.c2w), 2)
                rec = assemble(outs, ranges, loops=loops, config=config)
                row[f"{label}_loops_m"] = round(ate_rmse(rec.c2w, gt.c2w), 3)
                if label == "ours":
                    row["rejected"] = [r.index for r in rec.loops if not r.accepted]
            row["best_m"] = round(ate_rmse(assemble(outs, ranges, chunk_poses=np.stack(truth)).c2w, gt.c2w), 3)
        rows.append(row)
    return rows


def _table(rows, key_col):
    keys = [k for k in rows[0] if k != key_col]
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{str(r[key_col]):>14}" for r in rows))
    for k in keys:
        print(f"{k:{width}}  " + "  ".join(f"{str(r[k]):>14}" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", help="drives, pair, posegraph, cases (default: all)")
    parser.add_argument("--frames", type=int, nargs="*", default=[1000, 4530, 5000])
    parser.add_argument("--revisit", type=float, default=0.1)
    parser.add_argument("--scale-drift", type=float, default=0.00035)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.what = args.what or ["drives", "pair", "posegraph", "cases"]
    unknown = set(args.what) - {"drives", "pair", "posegraph", "cases", "_drive"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    if args.what == ["_drive"]:
        print(json.dumps(drive(args.frames[0], args.revisit, args.scale_drift, args.seed, args.height, args.width)))
        return
    if "drives" in args.what:
        rows = []
        for n in args.frames:  # a fresh process per drive: its own peak RSS
            cmd = [sys.executable, __file__, "_drive", "--frames", str(n), "--revisit", str(args.revisit),
                   "--scale-drift", str(args.scale_drift), "--seed", str(args.seed),
                   "--height", str(args.height), "--width", str(args.width)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        print(f"Drives (revisit of the first {args.revisit:.0%} at the end, heading drift 0.005°/frame, "
              f"scale drift {args.scale_drift:.3%}/frame):")
        _table(rows, "frames")
    if "pair" in args.what:
        print("\nOne chunk pair:", json.dumps(pair()))
    if "posegraph" in args.what:
        print("Pose graph:", json.dumps(posegraph(args.seed)))
    if "cases" in args.what:
        print("\nKilometre-scale cases (ATE in metres):")
        _table(cases(args.seed), "case")


if __name__ == "__main__":
    main()
