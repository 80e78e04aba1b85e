"""`scal3r bench`: dataset sequences → reconstruct → one evaluation protocol, resumable."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test_datasets import drive, write_kitti_layout  # noqa: F401  (the rendered drive fixture)


def _scal3r(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "scal3r", *argv], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def kitti(drive, tmp_path_factory):  # noqa: F811
    """A KITTI odometry folder with two sequences with poses (00 and a copy as 01) and 11 without."""
    root = tmp_path_factory.mktemp("kitti")
    write_kitti_layout(root, drive)
    shutil.copytree(root / "sequences" / "00", root / "sequences" / "01")
    shutil.copy(root / "poses" / "00.txt", root / "poses" / "01.txt")
    return root


def test_bench_runs_evaluates_and_continues(kitti, tmp_path):
    argv = ["bench", "kitti", "--root", str(kitti), "--sequences", "00", "01", "--out", "bench", "--preset", "tiny",
            "--block-size", "4", "--overlap", "2", "--no-loop", "--quiet"]
    first = _scal3r(*argv, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert sorted(results["sequences"]) == ["00", "01"]
    for row in results["sequences"].values():
        for key in ("ate", "rte", "rre", "frames", "seconds"):
            assert key in row, key
        assert row["frames"] == 8 and np.isfinite(row["ate"])
    assert set(results) >= {"mean", "mean_without_01", "protocol", "paper"}
    assert results["mean_without_01"]["sequences"] == 1
    assert results["protocol"]["intrinsics"] == "auto"
    summary = json.loads((tmp_path / "bench" / "00" / "summary.json").read_text())
    assert summary["intrinsics_source"] == "given"
    table = (tmp_path / "bench" / "results.md").read_text().splitlines()
    assert [l.split("|")[1].strip() for l in table if l.startswith(("| 00 ", "| 01 "))] == ["00", "01"]

    # One implementation: `scal3r eval` against the distributed poses file gives the same ATE.
    ev = _scal3r("eval", "bench/00", str(kitti / "poses" / "00.txt"), "--json", "eval00.json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-1500:]
    ate = json.loads((tmp_path / "eval00.json").read_text())["trajectory"]["ate"]["rmse"]
    assert ate == pytest.approx(results["sequences"]["00"]["ate"], rel=1e-12)

    # Running it again keeps the finished sequences (a long benchmark continues).
    stamp = (tmp_path / "bench" / "01" / "eval.json").stat().st_mtime_ns
    again = _scal3r(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-1500:]
    assert (tmp_path / "bench" / "01" / "eval.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "bench" / "results.json").read_text())["sequences"] == results["sequences"]


def test_bench_with_predicted_intrinsics_and_bad_root(kitti, tmp_path):
    run = _scal3r("bench", "kitti", "--root", str(kitti), "--sequences", "00", "--out", "b", "--preset", "tiny",
                  "--block-size", "4", "--overlap", "2", "--no-loop", "--quiet", "--intrinsics", "none", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-1500:]
    assert json.loads((tmp_path / "b" / "00" / "summary.json").read_text())["intrinsics_source"] == "predicted"
    bad = _scal3r("bench", "kitti", "--root", str(tmp_path / "b"), "--out", "c", "--preset", "tiny", cwd=tmp_path)
    assert bad.returncode == 2
    errors = [l for l in bad.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and errors[0].startswith("scal3r: error: kitti:"), bad.stderr
