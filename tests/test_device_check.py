"""benchmarks/device_check.py in reduced mode (CPU, tiny preset), so the GPU check cannot rot.

The script runs in a subprocess, as on a GPU box; its comparison is also called directly with
outputs that must pass (bf16 rounding) and outputs that must fail (a perturbed key, NaN, one wrong
frame), so that a comparison which passes everything would be caught here.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.py"
OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
TOP_KEYS = {"script", "mode", "mode_reason", "environment", "weights", "plan", "frames", "checks", "passed", "seconds"}
CHECKS = {"throughput", "bf16_parity", "nccl"}


def _load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *extra: str):
    out = tmp_path / "device.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", LP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--work", str(tmp_path / "work"),
                           "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=300)
    report = json.loads(out.read_text()) if out.is_file() else None
    return proc, report


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """One reduced run with the 2-rank check on gloo: (completed process, report)."""
    return _run(tmp_path_factory.mktemp("device_check"), "--cpu-ranks")


def test_reduced_run_exits_0_and_writes_every_key(reduced):
    proc, report = reduced
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report is not None and json.loads(proc.stdout) == report  # the JSON is also printed
    assert TOP_KEYS <= set(report) and set(report["checks"]) == CHECKS
    assert report["mode"] == "reduced" and report["passed"] is True
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["device_name"]
    assert "random weights" in report["weights"]
    frames = report["frames"]
    assert frames["count"] == 8 and (frames["width"], frames["height"]) == (112, 56)
    # The renderer where it works here, else random frames that say why.
    assert frames["source"] == "synthetic city drive" or "note" in frames


def test_reduced_throughput_outputs_are_finite(reduced):
    t = reduced[1]["checks"]["throughput"]
    assert t["status"] == "pass", t
    assert set(t["finite"]) == set(OUTPUT_KEYS) and all(t["finite"].values())
    assert t["shapes_ok"] and t["frames_covered"]
    assert t["chunks"] == 3 and t["frames_processed"] == 12  # 8 frames, block 4, overlap 2
    assert t["input_frames_per_s"] > 0 and t["peak_rss_mib"] > 0 and t["peak_gpu_mib"] is None


def test_reduced_bf16_comparison_passes(reduced):
    p = reduced[1]["checks"]["bf16_parity"]
    assert p["status"] == "pass", p
    assert p["reference"] == "cpu float32" and p["candidate"] == "cpu bfloat16 autocast"
    assert set(p["keys"]) == set(OUTPUT_KEYS)
    for key, stats in p["keys"].items():
        assert stats["status"] == "pass" and stats["finite"], key
        assert 0 < stats["median_rel"] <= p["tolerance"]["median_rel"], key  # bf16 does differ from fp32
        assert stats["norm_rel"] <= p["tolerance"]["norm_rel"], key


def test_reduced_ranks_equal_one_process(reduced):
    r = reduced[1]["checks"]["nccl"]
    assert r["status"] == "pass" and r["backend"] == "gloo", r
    assert r["chunks_per_rank"] == [[0], [1, 2]]
    assert r["identical"]  # the release's summation order: bit-identical to one process
    # The check could see a lost gradient contribution: switching sync off moves the outputs.
    assert all(k["gcs_effect_norm_rel"] > 0 for k in r["keys"].values())


def test_perturbed_output_fails_the_run(tmp_path):
    proc, report = _run(tmp_path, "--random-frames", "--perturb", "depth")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert report["passed"] is False and report["frames"]["source"] == "random"
    parity = report["checks"]["bf16_parity"]
    assert parity["status"] == "fail" and parity["keys"]["depth"]["status"] == "fail"
    assert all(parity["keys"][k]["status"] == "pass" for k in OUTPUT_KEYS if k != "depth")
    assert report["checks"]["throughput"]["status"] == "pass"
    assert report["checks"]["nccl"]["status"] == "skipped"


def _fake_outputs(seed: int, chunks: int = 3, n: int = 4, h: int = 14, w: int = 28):
    g = torch.Generator().manual_seed(seed)
    shapes = {"pose_enc": (n, 9), "depth": (n, h, w, 1), "depth_conf": (n, h, w), "world_points": (n, h, w, 3),
              "world_points_conf": (n, h, w)}
    return [{k: torch.randn(s, generator=g) + (2.0 if "conf" in k or k == "depth" else 0.0)
             for k, s in shapes.items()} for _ in range(chunks)]


def test_comparison_accepts_bf16_rounding_and_rejects_corruption():
    dc = _load_script()
    tol = dc.Tolerance()
    reference = _fake_outputs(0)
    rounded = [{k: v.bfloat16().float() for k, v in o.items()} for o in reference]
    assert dc.compare_outputs(rounded, reference, tol)["status"] == "pass"

    bad = dc.compare_outputs(dc.perturbed(rounded, "world_points"), reference, tol)
    assert bad["status"] == "fail"
    assert [k for k, v in bad["keys"].items() if v["status"] == "fail"] == ["world_points"]

    with_nan = [{**o, "pose_enc": o["pose_enc"].clone()} for o in rounded]
    with_nan[1]["pose_enc"][0, 0] = float("nan")
    assert dc.compare_outputs(with_nan, reference, tol)["keys"]["pose_enc"]["status"] == "fail"

    # One wholly wrong frame out of 12: the median does not see it, the norm bound does.
    one_frame = [{**o, "depth": o["depth"].clone()} for o in rounded]
    one_frame[2]["depth"][3] = torch.rand(one_frame[2]["depth"][3].shape) * 4
    stats = dc.compare_outputs(one_frame, reference, tol)["keys"]["depth"]
    assert stats["median_rel"] <= tol.median_rel and stats["status"] == "fail"

    assert dc.compare_outputs(rounded[:2], reference, tol)["status"] == "fail"  # a chunk missing
