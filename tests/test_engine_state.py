"""Chunk-state stores: disk offload gives the same numbers and cleans up after itself."""

import warnings

import numpy as np
import pytest
import torch

from scal3r import Scal3R, infer_chunks
from scal3r.chunks import chunk_ranges, reference_first_order
from scal3r.engine.runner import run_chunks
from scal3r.engine.state import DiskStore


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Scal3R.from_preset("tiny")
    g = torch.Generator().manual_seed(2)
    images = (torch.rand(16, 3, 28, 42, generator=g) * 255).to(torch.uint8)
    return model, images, chunk_ranges(16, 6, 2)


def test_disk_offload_is_bit_identical_and_removes_its_directory(setup, tmp_path):
    model, images, ranges = setup
    in_ram = infer_chunks(model, images, ranges)
    root = tmp_path / "state"
    on_disk = infer_chunks(model, images, ranges, offload=root)
    for a, b in zip(in_ram, on_disk):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not root.exists()


def test_state_kept_after_a_failure(setup, tmp_path):
    model, images, ranges = setup
    store = DiskStore(tmp_path / "state")

    def boom(b, out):
        raise RuntimeError("disk full")

    fed = [reference_first_order(s, e) for s, e in ranges]
    with pytest.raises(RuntimeError, match="disk full"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_chunks(model, images, fed, store=store, on_output=boom)
    assert (tmp_path / "state").is_dir()
    assert any("kept for inspection" in str(w.message) for w in caught)


def test_memory_mapped_uint8_frames(setup, tmp_path):
    """Frames may live in a memory-mapped file instead of RAM."""
    model, images, ranges = setup
    path = tmp_path / "frames.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=tuple(images.shape))
    mm[:] = images.numpy()
    mm.flush()
    fed = [reference_first_order(s, e) for s, e in ranges]
    streamed = {}
    run_chunks(model, np.memmap(path, dtype=np.uint8, mode="r", shape=tuple(images.shape)), fed,
               on_output=lambda b, out: streamed.__setitem__(b, out))
    direct = run_chunks(model, images, fed)
    assert sorted(streamed) == list(range(len(fed)))
    for b, out in enumerate(direct):
        assert torch.equal(out["depth"], streamed[b]["depth"])


class _Stop(Exception):
    pass


def _interrupted_at(n_reports: int):
    """A progress callback that stops the run at its n-th report of the network stage."""
    seen = [0]

    def progress(stage, done, total):
        seen[0] += 1
        if seen[0] == n_reports:
            raise _Stop

    return progress


@pytest.mark.parametrize("sync", [True, False], ids=["synced", "own-memory"])
@pytest.mark.parametrize("stop_at", [2, 9, 17, 25, 30], ids=lambda n: f"stop{n}")
def test_resume_after_an_interruption_gives_the_same_outputs(setup, tmp_path, sync, stop_at):
    """Interrupted at several points of the chunk loop (embedding, before and after the memory
    layers, heads), a run resumed from the kept state returns exactly what an uninterrupted one
    does, and the journal refuses other chunks."""
    model, images, ranges = setup
    fed = [reference_first_order(s, e) for s, e in ranges]
    reference = {}
    run_chunks(model, images, fed, sync=sync, on_output=lambda b, out: reference.__setitem__(b, out))

    root = tmp_path / "state"
    first = {}
    with pytest.raises(_Stop), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_chunks(model, images, fed, sync=sync, store=DiskStore(root), progress=_interrupted_at(stop_at),
                   on_output=lambda b, out: first.__setitem__(b, out))
    assert (root / "progress.json").is_file()
    resumed_store = DiskStore(root, resume=True)
    assert resumed_store.resumed
    second = dict(first)
    reports = []
    run_chunks(model, images, fed, sync=sync, store=resumed_store, progress=lambda *r: reports.append(r[1]),
               on_output=lambda b, out: second.__setitem__(b, out))
    # The phase whose report was interrupted had been journalled: the run goes on with the next one.
    assert reports[0] == stop_at + 1
    assert not root.exists()  # removed after success
    assert sorted(second) == sorted(reference)
    for b in reference:
        for key in reference[b]:
            assert torch.equal(reference[b][key], second[b][key]), (b, key)


def test_resume_refuses_state_of_other_chunks(setup, tmp_path):
    model, images, ranges = setup
    fed = [reference_first_order(s, e) for s, e in ranges]
    root = tmp_path / "state"
    with pytest.raises(_Stop), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_chunks(model, images, fed, store=DiskStore(root), progress=_interrupted_at(9), on_output=lambda b, o: None)
    other = [reference_first_order(s, e) for s, e in chunk_ranges(16, 8, 2)]
    from scal3r.errors import Scal3RError

    with pytest.raises(Scal3RError, match="cannot be resumed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_chunks(model, images, other, store=DiskStore(root, resume=True), on_output=lambda b, o: None)
