"""GCS across processes: torch.distributed (gloo) on this machine's loopback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import dist_worker  # noqa: E402

from scal3r.chunks import chunk_ranges  # noqa: E402
from scal3r.engine.runner import infer_chunks, rank_chunks  # noqa: E402

N_FRAMES = 22  # chunk_ranges(22, 6, 2) -> 5 chunks: uneven over 2 and 3 ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world, tmp_path, sync=True, order="release", die_at=-1, timeout=120):
    port = str(_free_port())
    args = [str(world), port, str(tmp_path), "1" if sync else "0", order, str(N_FRAMES)]
    if die_at >= 0:
        args.append(str(die_at))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, dist_worker.__file__, str(r)] + args, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a rank hung instead of failing")
        results.append((p.returncode, err))
    return results


def _single(sync=True, order="release"):
    model = dist_worker.build_model()
    return infer_chunks(model, dist_worker.frames(N_FRAMES), chunk_ranges(N_FRAMES, 6, 2), sync=sync, sum_order=order)


def test_rank_blocks_cover_all_chunks():
    for n in range(0, 12):
        for world in range(1, 5):
            blocks = [list(rank_chunks(n, r, world)) for r in range(world)]
            assert sum(blocks, []) == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize("world, sync, order", [(2, True, "release"), (3, True, "release"), (2, False, "release"),
                                                (2, True, "fp64")])
def test_ranks_equal_one_process(tmp_path, world, sync, order):
    torch.set_num_threads(1)
    results = _launch(world, tmp_path, sync, order)
    assert all(code == 0 for code, _ in results), results
    outs = torch.load(tmp_path / "outs.pt", weights_only=True)
    single = _single(sync, order)
    assert len(outs) == len(single) == 5
    for a, b in zip(outs, single):
        assert a.keys() == b.keys()
        for key in a:
            # release order: the same float32 additions in the same order -> bit-identical
            assert torch.equal(a[key], b[key]), key


def test_dead_rank_makes_the_others_fail_with_an_error(tmp_path):
    results = _launch(2, tmp_path, die_at=3, timeout=90)
    (code0, err0), (code1, _) = results
    assert code1 == 3
    assert code0 == 2, err0
    assert "lost contact with the other ranks" in err0
    assert not (tmp_path / "outs.pt").exists()


def test_torchrun_reconstruct_equals_one_process(tmp_path):
    """`torchrun -m scal3r reconstruct` on 2 gloo ranks writes the same files as one process."""
    import numpy as np
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(56, 400, 3), dtype=np.uint8)
    for i in range(20):  # a panning view, so neighbouring frames overlap
        Image.fromarray(np.ascontiguousarray(base[:, 8 * i: 8 * i + 112])).save(frames / f"{i:03d}.png")
    common = ["reconstruct", str(frames), "--preset", "tiny", "--block-size", "8", "--overlap", "4", "--no-loop",
              "--quiet"]
    scratch = tmp_path / "scratch"  # torchrun's own temporary folders (torchelastic_*) land here
    scratch.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(scratch))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                "-m", "scal3r"]
    two = subprocess.run(torchrun + common + ["--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "scal3r"] + common + ["--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    for name in ("trajectory_kitti.txt", "mat.txt", "points.ply", "depth/000007.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "one", "scratch", "two"]  # no rank left a folder
