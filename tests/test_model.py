"""The network's public API: infer_chunks contract, synchronisation, dtypes, bad input."""

import pytest
import torch

from scal3r import Scal3R
from scal3r.chunks import chunk_ranges, reference_first_order
from scal3r.engine import infer_chunks, run_chunks
from scal3r.errors import InputError


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Scal3R.from_preset("tiny")
    with torch.no_grad():  # make the memory's output projection matter (it starts at zero)
        for layer in m.agg_regator.memory_layers:
            m.agg_regator.memory(layer).proj.weight.normal_(0, 0.05)
    return m


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(14, 3, 28, 42, generator=g)


def test_chunk_ranges_release_rule():
    assert chunk_ranges(24, 8, 4) == [(0, 8), (4, 12), (8, 16), (12, 20), (16, 24)]
    assert chunk_ranges(5, 8, 4) == [(0, 5)]
    assert chunk_ranges(100, 60, 30) == [(0, 60), (30, 90), (60, 100)]
    assert reference_first_order(0, 8) == [3, 0, 1, 2, 4, 5, 6, 7]
    assert reference_first_order(10, 15) == [12, 10, 11, 13, 14]
    for bad in ((0, 8, 4), (10, 1, 0), (10, 4, 4)):
        with pytest.raises(InputError):
            chunk_ranges(*bad)


def test_infer_chunks_contract(model, images):
    ranges = chunk_ranges(len(images), 6, 2)
    outs = infer_chunks(model, images, ranges)
    assert len(outs) == len(ranges)
    for (s, e), out in zip(ranges, outs):
        n = e - s
        assert out["frames"].tolist() == list(range(s, e))
        assert out["pose_enc"].shape == (n, 9)
        assert out["depth"].shape == (n, 28, 42, 1) and out["depth_conf"].shape == (n, 28, 42)
        assert out["world_points"].shape == (n, 28, 42, 3) and out["world_points_conf"].shape == (n, 28, 42)
        assert all(v.dtype in (torch.float32, torch.int64) for v in out.values())
        assert (out["depth"] > 0).all() and (out["depth_conf"] > 1).all()


def test_rows_are_ascending_although_the_middle_frame_is_fed_first(model, images):
    """A chunk run alone through run_chunks in the fed order gives the same rows, permuted."""
    s, e = 2, 8
    out = infer_chunks(model, images[:e], [(0, e - s + 2), (s, e)], sync=False)[1]
    order = reference_first_order(s, e)
    direct = run_chunks(model, images[order], [list(range(len(order)))], sync=True)[0]
    inverse = torch.argsort(torch.tensor(order))
    for key in ("pose_enc", "depth", "world_points_conf"):
        assert torch.equal(out[key], direct[key][inverse]), key


def test_unsynced_chunk_equals_the_chunk_alone(model, images):
    ranges = chunk_ranges(len(images), 6, 2)
    outs = infer_chunks(model, images, ranges, sync=False)
    for (s, e), out in zip(ranges, outs):
        alone = infer_chunks(model, images[s:e], [(0, e - s)], sync=False)[0]
        for key in ("pose_enc", "depth", "world_points"):
            assert torch.equal(out[key], alone[key]), key


def test_synchronisation_shares_memory_across_chunks(model, images):
    ranges = chunk_ranges(len(images), 6, 2)
    synced = infer_chunks(model, images, ranges, sync=True)
    unsynced = infer_chunks(model, images, ranges, sync=False)
    assert max((a["depth"] - b["depth"]).abs().max() for a, b in zip(synced, unsynced)) > 1e-3
    # With one chunk, synchronised and own-gradient updates coincide.
    one = [(0, 6)]
    assert torch.equal(infer_chunks(model, images[:6], one)[0]["depth"],
                       infer_chunks(model, images[:6], one, sync=False)[0]["depth"])


def test_synced_chunk_depends_on_the_other_chunks(model, images):
    """GCS: changing frames that chunk 0 never sees changes chunk 0's output."""
    ranges = [(0, 6), (6, 12)]
    base = infer_chunks(model, images[:12], ranges)[0]["depth"]
    changed = images[:12].clone()
    changed[6:] = torch.rand_like(changed[6:])
    assert not torch.allclose(infer_chunks(model, changed, ranges)[0]["depth"], base)
    assert torch.equal(infer_chunks(model, changed, ranges, sync=False)[0]["depth"],
                       infer_chunks(model, images[:12], ranges, sync=False)[0]["depth"])


def test_bf16_autocast_runs_and_stays_close(model, images):
    ranges = [(0, 7), (4, 11)]
    fp32 = infer_chunks(model, images[:11], ranges)
    bf16 = infer_chunks(model, images[:11], ranges, dtype=torch.bfloat16)
    for a, b in zip(fp32, bf16):
        assert b["depth"].dtype == torch.float32 and torch.isfinite(b["depth"]).all()
        rel = ((a["depth"] - b["depth"]).abs() / a["depth"]).median()
        assert rel < 0.1


def test_progress_is_reported(model, images):
    calls = []
    infer_chunks(model, images[:8], [(0, 8)], progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls[-1][1] == calls[-1][2] and calls[0][0] == "network"


@pytest.mark.parametrize("bad_images, ranges, match", [
    (torch.full((4, 3, 28, 28), float("nan")), [(0, 4)], "NaN"),
    (torch.rand(4, 3, 30, 28), [(0, 4)], "multiple of the patch size"),
    (torch.rand(4, 28, 28), [(0, 4)], "shape"),
    (torch.rand(4, 3, 28, 28), [(0, 5)], "outside"),
    (torch.rand(4, 3, 28, 28), [(0, 2)], "in no chunk"),
])
def test_bad_input(model, bad_images, ranges, match):
    with pytest.raises(InputError, match=match):
        infer_chunks(model, bad_images, ranges)


@pytest.mark.parametrize("seed", [0, 1])
def test_relative_camera_tokens_see_what_a_large_shared_part_hides(seed):
    """Camera tokens = a shared constant of norm ~150 + per-frame parts of norm ~0.5 (what the
    from-scratch runs produced): the plain head's poses hardly differ between frames, the head
    that also reads each token minus the chunk's mean tells them apart."""
    from scal3r.config import CameraHeadConfig
    from scal3r.model.heads import CameraHead

    g = torch.Generator().manual_seed(seed)
    dim = 64
    shared = torch.randn(dim, generator=g)
    shared = 150 * shared / shared.norm()
    own = 0.5 * torch.randn(1, 6, dim, generator=g) / dim ** 0.5
    features = {0: (shared + own)[:, :, None]}  # (B, S, P=1, C)
    spreads = {}
    for relative in (False, True):
        torch.manual_seed(seed)
        head = CameraHead(dim, CameraHeadConfig(trunk_depth=1, num_heads=4, init_values=1.0, relative_tokens=relative))
        with torch.no_grad():
            pose = head(features, 0)[-1][0]
        spreads[relative] = float(pose[:, :3].std(0).sum())
    assert spreads[True] > 20 * spreads[False], spreads
