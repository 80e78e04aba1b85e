"""Training-step speed and memory: steps/s, frames/s and peak RSS at K = 1, 2, 4 chunks.

    .venv/bin/python benchmarks/train.py [--preset compact] [--chunks 1 2 4] [--steps 3] [--threads 2]

Each K runs in a fresh subprocess (so peak RSS is that K's alone): one warm-up step, then
`--steps` timed steps of `Trainer.forward_backward` + the optimizer step on rendered synthetic
sequences (rendering excluded from the step time, reported apart). Prints one row per K.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _one(preset: str, chunks: int, steps: int, threads: int, checkpointing: bool) -> dict:
    import dataclasses
    import resource
    import tempfile

    import numpy as np
    import torch

    from scal3r.train.trainer import Trainer, TrainConfig

    torch.set_num_threads(threads)
    cfg = TrainConfig.preset_for(preset)
    cfg = dataclasses.replace(cfg, activation_checkpointing=checkpointing,
                              data=dataclasses.replace(cfg.data, max_chunks=chunks))
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="scal3r-bench-train-"))
    # Steps whose draw is exactly K chunks.
    wanted = [s for s in range(10_000) if np.random.default_rng([cfg.seed, s]).integers(1, chunks + 1) == chunks]
    render, step_times = [], []
    for i, s in enumerate(wanted[: steps + 1]):
        trainer.step = s
        t0 = time.perf_counter()
        trainer._sample(s)  # rendering alone (the step renders the same sample again)
        t1 = time.perf_counter()
        trainer.train_step()
        t2 = time.perf_counter()
        if i > 0:  # the first step warms up allocators and kernels
            render.append(t1 - t0)
            step_times.append((t2 - t1) - (t1 - t0))
    frames = cfg.data.frames_for(chunks)
    per_step = float(np.median(step_times))
    return {"preset": preset, "chunks": chunks, "frames": frames,
            "resolution": f"{cfg.data.width}x{cfg.data.height}", "threads": threads,
            "activation_checkpointing": checkpointing, "step_s": per_step, "steps_per_s": 1 / per_step,
            "frames_per_s": frames / per_step, "render_s": float(np.median(render)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="compact")
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        print(json.dumps(_one(a.preset, a.child, a.steps, a.threads, a.activation_checkpointing)))
        return
    print(f"{'K':>3} {'frames':>6} {'res':>8} {'s/step':>7} {'steps/s':>8} {'frames/s':>9} {'render s':>9} {'peak RSS MiB':>13}")
    for k in a.chunks:
        cmd = [sys.executable, __file__, "--child", str(k), "--preset", a.preset, "--steps", str(a.steps),
               "--threads", str(a.threads)] + (["--activation-checkpointing"] if a.activation_checkpointing else [])
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"{k:>3} {r['frames']:>6} {r['resolution']:>8} {r['step_s']:>7.2f} {r['steps_per_s']:>8.3f} "
              f"{r['frames_per_s']:>9.1f} {r['render_s']:>9.2f} {r['peak_rss_mib']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
