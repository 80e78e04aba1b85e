"""The paper's ablation in miniature: memory with synchronisation / memory without it / no memory,
on held-out synthetic city drives.

    .venv/bin/python benchmarks/ablation.py --memory MEMORY.safetensors --no-memory NOMEM.safetensors
        [--seeds 100001 100002 100003] [--frames 240] [--work /tmp/scal3r-ablation] [--threads 2]

Renders each held-out drive once (`scal3r synth`, a city loop, seeds ≥ 100 000 that training never
used, at the resolution stored in the weights), runs `scal3r reconstruct` on it with default
settings (predicted intrinsics, the chunking stored in the weights) and scores the output with
`scal3r eval` against the drive's ground truth, for three variants:

- `sync`: the memory model as shipped (chunks share one memory, GCS);
- `no-sync`: the same weights with `--no-sync` (each chunk its own memory);
- `no-memory`: a model of the same preset trained without memory units on the same budget.

Prints, per variant, mean ± standard deviation and [min, max] over the drives of ATE (m and % of
the path), RPE (m per frame), Chamfer (m), F1 and depth AbsRel, and writes WORK/ablation.json and
WORK/ablation.md. Finished rows are kept, so a second run continues.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

METRICS = (("ate", "ATE m"), ("ate_pct", "ATE % path"), ("rpe_trans", "RPE m"), ("chamfer", "Chamfer m"),
           ("f1", "F1"), ("abs_rel", "AbsRel"))


def _scal3r(args, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run([sys.executable, "-m", "scal3r", *args], check=True, env=env)


def _resolution(weights: str):
    """The training resolution stored in the weights (`scal3r train` metadata)."""
    from scal3r.train.trainer import read_train_config

    data = read_train_config(weights).data
    return data.width, data.height


def _row(result) -> dict:
    """The ablation's figures from `scal3r eval --json` output."""
    traj, cloud, depth = result.get("trajectory", {}), result.get("pointcloud", {}), result.get("depth", {})
    ate, length = traj["ate"]["rmse"], traj["path_length"]
    return {"ate": ate, "ate_pct": 100 * ate / length, "rpe_trans": traj["rpe_trans"]["rmse"],
            "chamfer": cloud.get("chamfer"), "f1": cloud.get("f1"), "abs_rel": depth.get("abs_rel")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory", required=True, help="weights trained with memory units")
    p.add_argument("--no-memory", dest="no_memory", help="weights of the same preset trained without them")
    p.add_argument("--seeds", type=int, nargs="+", default=[100001, 100002, 100003])
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--work", default="/tmp/scal3r-ablation")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if min(a.seeds) < 100_000:
        raise SystemExit("held-out drives use seeds ≥ 100 000 (training used the seeds below)")
    work = Path(a.work)
    width, height = _resolution(a.memory)
    worlds = work / f"worlds-{width}x{height}-{a.frames}"
    from scal3r.data.synthetic import SynthConfig, drivable_city_trajectory

    trajectory = drivable_city_trajectory(a.frames, SynthConfig.preset("city").step)
    for seed in a.seeds:
        folder = worlds / f"city-{seed}"
        if not (folder / "meta.json").is_file():
            _scal3r(["synth", "--scene", "city", "--frames", str(a.frames), "--seed", str(seed),
                     "--trajectory", trajectory, "--width",
                     str(width), "--height", str(height), "--out", str(folder), "--overwrite", "--quiet"], a.threads)
    names = [f"city-{s}" for s in a.seeds]
    variants = [("sync", a.memory, []), ("no-sync", a.memory, ["--no-sync"])]
    if a.no_memory:
        variants.append(("no-memory", a.no_memory, []))
    table = {}
    for name, weights, extra in variants:
        rows = {}
        for seq in names:
            out, metrics = work / name / seq, work / name / f"{seq}.json"
            if not metrics.is_file():  # finished rows are kept: a second run continues
                _scal3r(["reconstruct", str(worlds / seq / "images"), "--weights", weights, "--out", str(out),
                         "--overwrite", "--quiet", *extra], a.threads)
                _scal3r(["eval", str(out), str(worlds / seq), "--json", str(metrics)], a.threads)
            rows[seq] = _row(json.loads(metrics.read_text()))
        values = {}
        for key, _ in METRICS:
            v = [rows[n][key] for n in names if rows[n].get(key) is not None]
            if v:
                values[key] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
                               "max": float(np.max(v)), "values": [float(x) for x in v]}
        table[name] = {"weights": weights, "flags": extra, "metrics": values}
    lines = [f"Held-out city drives ({trajectory}), seeds {', '.join(map(str, a.seeds))}, {a.frames} frames at {width}×{height}: "
             "mean ± std [min, max]", "",
             "| variant | " + " | ".join(label for _, label in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for name, entry in table.items():
        cells = []
        for key, _ in METRICS:
            m = entry["metrics"].get(key)
            cells.append("—" if m is None else f"{m['mean']:.3g} ± {m['std']:.2g} [{m['min']:.3g}, {m['max']:.3g}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (work / "ablation.json").write_text(json.dumps({"seeds": a.seeds, "frames": a.frames, "variants": table}, indent=1))
    (work / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
