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


def _start_and_signal(argv, stage: str, signum: int, cwd: Path, timeout: float = 240, module: str = "scal3r"):
    """Start `python -m module argv`, send `signum` once its progress shows `stage`;
    → (rc, stderr, seconds to exit). module="" runs `python -m argv[0] argv[1:]`."""
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
            if not seen.is_set() and stage.encode() in b"".join(chunks[-400:]):
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


def test_sigterm_to_torchrun_stops_every_rank_and_leaves_nothing(tmp_path):
    frames = _frames(tmp_path / "frames", 160)
    out = tmp_path / "out"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env_tmp = {"TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env_tmp}
    os.environ.update(env_tmp)
    try:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rc, err, elapsed = _start_and_signal(
            ["torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m", "scal3r", "reconstruct",
             str(frames), "--out", str(out), "--preset", "tiny", "--block-size", "4", "--overlap", "2", "--offload",
             "--no-loop"], "network:", signal.SIGTERM, tmp_path, module="")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert rc != 0 and elapsed < 60, err[-1500:]
    assert "interrupted by SIGTERM" in err, err[-1500:]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "scratch"]
    # torchrun's own bookkeeping folders are removed when it stops
    leftovers = [p for p in scratch.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if "scal3r" in p.name], leftovers
