"""SIGTERM / SIGHUP end a run like Ctrl-C: one line, exit 128 + signal, nothing left behind."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _frames(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(64, 96 + 2 * n, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(np.ascontiguousarray(base[:, 2 * i:2 * i + 96])).save(folder / f"f{i:04d}.png")
    return folder


def _network_fraction(text: str) -> float:
    """How far the last `network: done/total` progress line got (0 when none yet)."""
    import re

    found = re.findall(r"network: (\d+)/(\d+)", text)
    return int(found[-1][0]) / int(found[-1][1]) if found else 0.0


def _start_and_signal(argv, stage: str, signum: int, cwd: Path, timeout: float = 240, module: str = "scal3r",
                      until=None):
    """Start `python -m module argv`, send `signum` once its progress shows `stage` (and, if given,
    `until(stderr so far)` holds); → (rc, stderr, seconds to exit). module="" runs
    `python -m argv[0] argv[1:]`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m"] + ([module] if module else []) + argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen = threading.Event()
    chunks = []

    def read():
        while True:
            b = proc.stderr.read(1)
            if not b:
                return
            chunks.append(b)
            if not seen.is_set() and stage.encode() in b"".join(chunks[-400:]) and \
                    (until is None or (b == b"\r" and until(b"".join(chunks).decode(errors="replace")))):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(timeout):
        proc.kill()
        pytest.fail(f"the run never reached {stage!r}: {b''.join(chunks).decode(errors='replace')[-2000:]}")
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop within 60 s of the signal")
    elapsed = time.monotonic() - t0
    reader.join(5)
    return proc.returncode, b"".join(chunks).decode(errors="replace"), elapsed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_network_removes_everything(tmp_path, signum):
    frames = _frames(tmp_path / "frames", 160)
    out = tmp_path / "out"
    rc, err, elapsed = _start_and_signal(
        ["reconstruct", str(frames), "--out", str(out), "--preset", "tiny", "--block-size", "4", "--overlap", "2",
         "--offload", "--no-loop"], "network:", signum, tmp_path)
    assert rc == 128 + signum, err[-1500:]
    last = [l for l in err.replace("\r", "\n").splitlines() if l.strip()][-1]
    assert last == f"scal3r: interrupted by {signal.Signals(signum).name}; nothing written", err[-800:]
    assert elapsed < 30
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no .out.tmp-<pid>, no state


def test_sigterm_during_training_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    rc, err, _ = _start_and_signal(["train", "--preset", "tiny", "--out", str(out), "--steps", "50",
                                    "--checkpoint-every", "1"], "train: 2/50", signal.SIGTERM, tmp_path)
    assert rc == 143, err[-1500:]
    last = [l for l in err.replace("\r", "\n").splitlines() if l.strip()][-1]
    assert last.startswith("scal3r: interrupted by SIGTERM; the last checkpoint") and "--resume" in last, last
    assert (out / "checkpoint.pt").is_file() and not [p for p in out.iterdir() if p.name.startswith(".")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_environment(tmp_path: Path, monkeypatch) -> Path:
    """One thread per rank, and torchrun's bookkeeping in tmp_path/scratch (to check it is removed)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return scratch


def test_sigterm_to_torchrun_stops_every_rank_and_leaves_nothing(tmp_path, monkeypatch):
    frames = _frames(tmp_path / "frames", 160)
    out = tmp_path / "out"
    scratch = _torchrun_environment(tmp_path, monkeypatch)
    rc, err, elapsed = _start_and_signal(
        ["torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "scal3r", "reconstruct",
         str(frames), "--out", str(out), "--preset", "tiny", "--block-size", "4", "--overlap", "2", "--offload",
         "--no-loop"], "network:", signal.SIGTERM, tmp_path, module="")
    assert rc != 0 and elapsed < 60, err[-1500:]
    assert "interrupted by SIGTERM" in err, err[-1500:]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "scratch"]
    # torchrun's own bookkeeping folders are removed when it stops
    leftovers = [p for p in scratch.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if "scal3r" in p.name], leftovers


def _run(argv, cwd: Path):
    return subprocess.run([sys.executable, "-m", "scal3r"] + argv, cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_resumable_run_stopped_mid_network_resumes_to_the_same_result(tmp_path):
    """--resumable + SIGTERM a third of the way through the network pass keeps OUT.partial/ and
    says how to resume; --resume with other settings is refused with one line; --resume with the
    same ones finishes from the kept state, with the trajectory of an uninterrupted run."""
    frames = _frames(tmp_path / "frames", 120)
    common = [str(frames), "--preset", "tiny", "--block-size", "4", "--overlap", "2", "--no-loop"]
    ref = _run(["reconstruct", *common, "--out", "ref", "--quiet"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-1500:]

    argv = ["reconstruct", *common, "--out", "out", "--resumable"]
    rc, err, _ = _start_and_signal(argv, "network:", signal.SIGTERM, tmp_path,
                                   until=lambda text: _network_fraction(text) >= 1 / 3)
    assert rc == 143, err[-1500:]
    last = [l for l in err.replace("\r", "\n").splitlines() if l.strip()][-1]
    assert last == "scal3r: interrupted by SIGTERM; progress kept in out.partial; continue with the same " \
                   "command and --resume", last
    assert not (tmp_path / "out").exists() and (tmp_path / "out.partial").is_dir()
    assert 0 < _network_fraction(err) < 1  # it was stopped inside the network pass

    other = _run(["reconstruct", *common[:4], "6", "--overlap", "2", "--no-loop", "--out", "out", "--resume"], tmp_path)
    assert other.returncode == 2
    lines = [l for l in other.stderr.splitlines() if l.startswith("scal3r: error")]
    assert len(lines) == 1 and "settings differ" in lines[0] and "block_size" in lines[0], other.stderr[-800:]

    resumed = _run(argv + ["--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert not (tmp_path / "out.partial").exists()
    a = np.loadtxt(tmp_path / "ref" / "trajectory_tum.txt")
    b = np.loadtxt(tmp_path / "out" / "trajectory_tum.txt")
    np.testing.assert_array_equal(a, b)  # the same network outputs, bit for bit, give the same backend result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out", "ref"]


def test_resume_needs_a_kept_run_and_a_fresh_resumable_run_refuses_one(tmp_path):
    frames = _frames(tmp_path / "frames", 8)
    common = [str(frames), "--preset", "tiny", "--block-size", "4", "--overlap", "2", "--no-loop", "--out", "out"]
    missing = _run(["reconstruct", *common, "--resume"], tmp_path)
    assert missing.returncode == 2 and "no interrupted run to continue" in missing.stderr, missing.stderr[-800:]
    (tmp_path / "out.partial").mkdir()
    fresh = _run(["reconstruct", *common, "--resumable"], tmp_path)
    assert fresh.returncode == 2 and "holds an interrupted run" in fresh.stderr, fresh.stderr[-800:]
    assert (tmp_path / "out.partial").is_dir()  # never deleted behind the user's back


def test_resumable_torchrun_run_resumes_on_every_rank(tmp_path, monkeypatch):
    """Two gloo ranks, --resumable, SIGTERM to torchrun inside the network pass: every rank keeps
    its state (rank 0 in OUT.partial/, rank 1 in OUT.partial-rank1/); the same torchrun command with
    --resume finishes, with the trajectory of an uninterrupted single-process run, and removes both."""
    frames = _frames(tmp_path / "frames", 120)
    common = [str(frames), "--preset", "tiny", "--block-size", "4", "--overlap", "2", "--no-loop"]
    ref = _run(["reconstruct", *common, "--out", "ref", "--quiet"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-1500:]

    def torchrun_argv():
        return ["torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "scal3r",
                "reconstruct", *common, "--out", "out", "--resumable"]

    _torchrun_environment(tmp_path, monkeypatch)
    env = dict(os.environ)
    rc, err, _ = _start_and_signal(torchrun_argv(), "network:", signal.SIGTERM, tmp_path, module="",
                                   until=lambda text: _network_fraction(text) >= 1 / 3)
    # What this test is about is the kept state and the resume; the one-line message of every rank
    # is test_sigterm_to_torchrun_stops_every_rank_and_leaves_nothing's (on a heavily loaded machine
    # torchrun may end its workers before their line is flushed through its pipe).
    assert rc != 0, err[-1500:]
    assert (tmp_path / "out.partial").is_dir() and (tmp_path / "out.partial-rank1").is_dir(), err[-1500:]
    resumed = subprocess.run([sys.executable, "-m", *torchrun_argv(), "--resume", "--quiet"], cwd=tmp_path,
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = np.loadtxt(tmp_path / "ref" / "trajectory_tum.txt")
    b = np.loadtxt(tmp_path / "out" / "trajectory_tum.txt")
    np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out", "ref", "scratch"]


def test_main_puts_back_the_callers_signal_handlers(capsys):
    """An in-process caller (a notebook, pytest) keeps its own SIGTERM/SIGHUP handling after a
    command, error or not: a signal arriving later is not turned into `Terminated`."""
    import signal as signal_module

    from scal3r.cli import main

    def callers(signum, frame):  # pragma: no cover - never delivered
        pass

    before = {s: signal_module.signal(s, callers) for s in (signal_module.SIGTERM, signal_module.SIGHUP)}
    try:
        assert main(["synth", "--frames", "12", "--trajectory", "loop", "--out", "/nonexistent/x"]) == 2
        for s in before:
            assert signal_module.getsignal(s) is callers
    finally:
        for s, handler in before.items():
            signal_module.signal(s, handler)
    assert "error" in capsys.readouterr().err
