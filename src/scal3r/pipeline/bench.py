"""`scal3r bench`: reconstruct every sequence of a dataset and evaluate it with one written protocol.

    run_bench(BenchConfig(dataset="kitti", root=..., out=..., reconstruct={...}))

For each sequence (`scal3r.data.datasets.read_dataset`) the bench writes

    OUT/inputs/<name>/images.txt   the sequence's images in time order (reconstruct's list input)
    OUT/inputs/<name>/gt.txt       its ground truth (KITTI format, one pose per image), or for
                                   KITTI odometry the distributed poses/NN.txt itself
    OUT/<name>/                    an ordinary `scal3r reconstruct` output folder, with eval.json

and then OUT/results.json and OUT/results.md. A sequence whose OUT/<name>/eval.json exists is not
run again, so an interrupted benchmark continues where it stopped.

The protocol (docs/benchmarks.md): the predicted trajectory is aligned to the ground truth by a
Sim(3) Umeyama fit on all associated frames (as `evo_ape kitti -as`); ATE is the RMSE of the aligned
camera centres (metres); RTE (%) and RRE (°/100 m) are the KITTI devkit's segment errors over
100…800 m of the aligned trajectory. The evaluation is `scal3r eval`'s (`evaluate_sequence`), so
`scal3r eval OUT/<name> OUT/inputs/<name>/gt.txt` prints the same figures. Means are over the
sequences with ground truth; for KITTI also without sequence 01 (the highway drive where
monocular methods fail and which the field often reports apart).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from scal3r.errors import InputError
from scal3r.progress import ProgressFn, report

# The paper's figures where the dataset matches (metres); only what has been checked against the
# paper is listed: the full model's KITTI mean ATE from its ablation table.
PAPER_RESULTS: Dict[str, Dict[str, float]] = {"kitti": {"mean_ate": 13.70}}


@dataclass
class BenchConfig:
    """dataset: a name in `scal3r.data.datasets.DATASETS`; root: its folder as distributed;
    sequences: names to run (None: all with images); out: the benchmark folder; reconstruct:
    `ReconstructConfig` fields for every sequence (weights, preset, resolution, ...);
    intrinsics: "auto" uses the dataset's calibration, "none" the network's predicted one;
    dataset_options: reader options (e.g. {"camera": "image_0"})."""

    dataset: str
    root: str
    out: str
    sequences: Optional[Sequence[str]] = None
    reconstruct: Dict[str, Any] = field(default_factory=dict)
    intrinsics: str = "auto"
    dataset_options: Dict[str, Any] = field(default_factory=dict)


def folder_name(sequence: str) -> str:
    """A sequence name as one folder name ("Scene01/clone" → "Scene01-clone")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", sequence).strip("-") or "sequence"


def _write_inputs(seq, folder: Path, dataset: str, root: Path) -> Optional[Path]:
    """images.txt and the ground truth of one sequence; → the ground-truth file (None without)."""
    from scal3r.io.trajectory import write_kitti

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images.txt").write_text("".join(f"{p.resolve()}\n" for p in seq.image_paths))
    if seq.c2w is None:
        return None
    if dataset == "kitti" and (root / "poses" / f"{seq.name}.txt").is_file():
        # The distributed file, as every published KITTI figure is computed against.
        return root / "poses" / f"{seq.name}.txt"
    gt = folder / "gt.txt"
    write_kitti(gt, seq.c2w)
    return gt


def _intrinsics_file(seq, folder: Path) -> Path:
    """The dataset's calibration as a `--intrinsics` JSON (one K, or one per frame)."""
    from scal3r.io.intrinsics import write_intrinsics

    path = folder / "intrinsics.json"
    write_intrinsics(path, seq.K, *seq.image_size)
    return path


def _row(result: Dict[str, Any], summary: Dict[str, Any]) -> Dict[str, Any]:
    traj = result.get("trajectory", {})
    kitti = traj.get("kitti", {})
    row = {"ate": traj.get("ate", {}).get("rmse"), "rte": kitti.get("t_rel"), "rre": kitti.get("r_rel"),
           "rpe_trans": traj.get("rpe_trans", {}).get("rmse"), "path_length": traj.get("path_length"),
           "frames": summary.get("frames"), "seconds": summary.get("seconds"),
           "matched": traj.get("matched")}
    if "pointcloud" in result:
        row.update(chamfer=result["pointcloud"].get("chamfer"), f1=result["pointcloud"].get("f1"))
    if "depth" in result:
        row["abs_rel"] = result["depth"].get("abs_rel")
    return row


def _mean(rows: Dict[str, Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"sequences": len(names)}
    keys = sorted({k for n in names for k in rows[n] if k not in ("frames", "matched")})
    for k in keys:
        values = [rows[n][k] for n in names if isinstance(rows[n].get(k), (int, float)) and math.isfinite(rows[n][k])]
        out[k] = float(np.mean(values)) if values else None
    return out


def run_bench(config: BenchConfig, progress: Optional[ProgressFn] = None) -> Dict[str, Any]:
    """Run (or continue) the benchmark; returns the content of OUT/results.json."""
    from scal3r.data.datasets import read_dataset
    from scal3r.eval.sequence import EvalOptions, evaluate_sequence, write_json
    from scal3r.pipeline.config import ReconstructConfig
    from scal3r.pipeline.run import reconstruct

    if config.intrinsics not in ("auto", "none"):
        raise InputError(f"bench --intrinsics must be auto or none, got {config.intrinsics!r}")
    root, out = Path(config.root), Path(config.out)
    sequences = read_dataset(config.dataset, root, list(config.sequences) if config.sequences else None,
                             **config.dataset_options)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    allowed = {f.name for f in dataclasses.fields(ReconstructConfig)} - {"input", "out", "gt", "intrinsics"}
    unknown = set(config.reconstruct) - allowed
    if unknown:
        raise InputError(f"bench: unknown reconstruct settings {sorted(unknown)}")
    options = EvalOptions(align="sim3")
    rows: Dict[str, Dict[str, Any]] = {}
    notes: Dict[str, List[str]] = {}
    for i, seq in enumerate(sequences):
        name = folder_name(seq.name)
        report(progress, f"bench {seq.name}", i, len(sequences))
        seq_out = out / name
        inputs = out / "inputs" / name
        gt = _write_inputs(seq, inputs, config.dataset, root)
        if seq.notes:
            notes[seq.name] = list(seq.notes)
        if not (seq_out / "eval.json").is_file():
            settings = dict(config.reconstruct)
            if config.intrinsics == "auto":
                settings["intrinsics"] = str(_intrinsics_file(seq, inputs))
            started = time.perf_counter()
            reconstruct(ReconstructConfig(input=str(inputs / "images.txt"), out=str(seq_out),
                                          gt=None if gt is None else str(gt),
                                          overwrite=seq_out.exists(), **settings))
            if gt is None:  # nothing to compare with: the run itself is the result
                write_json(seq_out / "eval.json", {"seconds": time.perf_counter() - started})
            else:
                write_json(seq_out / "eval.json", evaluate_sequence(seq_out, gt, options))
        result = json.loads((seq_out / "eval.json").read_text())
        summary = json.loads((seq_out / "summary.json").read_text())
        rows[seq.name] = _row(result, summary)
        report(progress, f"bench {seq.name}", i + 1, len(sequences))
    with_gt = [n for n in rows if rows[n].get("ate") is not None]
    results: Dict[str, Any] = {
        "dataset": config.dataset, "root": str(root), "sequences": rows, "mean": _mean(rows, with_gt),
        "protocol": {"alignment": "sim3 (Umeyama on all associated frames, as evo_ape kitti -as)",
                     "ate": "RMSE of aligned camera centres, metres",
                     "rte": "KITTI devkit segment translation error over 100..800 m, %",
                     "rre": "KITTI devkit segment rotation error, degrees per 100 m",
                     "f1_threshold": options.threshold, "intrinsics": config.intrinsics},
        "reconstruct": {k: v for k, v in config.reconstruct.items()},
    }
    if config.dataset == "kitti":
        without_01 = [n for n in with_gt if n != "01"]
        results["mean_without_01"] = _mean(rows, without_01)
    if config.dataset in PAPER_RESULTS:
        results["paper"] = PAPER_RESULTS[config.dataset]
    if notes:
        results["notes"] = notes
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(results_table(results))
    return results


def results_table(results: Dict[str, Any]) -> str:
    """OUT/results.md: one row per sequence, the means, and the paper's figures where they exist."""
    def f(x, spec=".3f"):
        return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)

    lines = [f"# {results['dataset']} benchmark", "",
             "| sequence | frames | ATE (m) | RTE (%) | RRE (°/100 m) | path (m) | seconds | plot |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["sequences"].items():
        lines.append(f"| {name} | {r.get('frames') or '—'} | {f(r.get('ate'))} | {f(r.get('rte'), '.2f')} | "
                     f"{f(r.get('rre'), '.2f')} | {f(r.get('path_length'), '.1f')} | {f(r.get('seconds'), '.0f')} | "
                     f"[trajectory]({folder_name(name)}/trajectory.png) |")
    for key, label in (("mean", "mean"), ("mean_without_01", "mean without 01")):
        if key in results:
            m = results[key]
            lines.append(f"| **{label}** ({m['sequences']}) | | {f(m.get('ate'))} | {f(m.get('rte'), '.2f')} | "
                         f"{f(m.get('rre'), '.2f')} | | | |")
    if "paper" in results:
        lines += ["", "The paper (Scal3R, CVPR 2026): " + ", ".join(f"{k} {v}" for k, v in results["paper"].items())]
    lines += ["", "Protocol: " + "; ".join(f"{k}: {v}" for k, v in results["protocol"].items()), ""]
    return "\n".join(lines)
