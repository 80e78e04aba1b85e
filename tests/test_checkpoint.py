"""Checkpoint loading: layouts, formats, and clear errors for bad files."""

import pickle

import pytest
import torch

from scal3r import Scal3R
from scal3r.errors import CheckpointError
from scal3r.model.checkpoint import read_state_dict


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Scal3R.from_preset("tiny")


def _fresh(seed=1):
    torch.manual_seed(seed)
    return Scal3R.from_preset("tiny")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_release_layout(tiny, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    tiny.save_checkpoint(path)
    other = _fresh()
    assert other.load_checkpoint(path) == []
    for (k, a), (_, b) in zip(tiny.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_vggt_layout_keeps_memory_at_initialisation(tiny, tmp_path, suffix):
    path = tmp_path / f"vggt{suffix}"
    tiny.save_checkpoint(path, layout="vggt")
    keys = read_state_dict(path).keys()
    assert any(k.startswith("aggregator.") for k in keys) and not any(".ttt." in k for k in keys)
    other = _fresh()
    init_memory = {k: v.clone() for k, v in other.state_dict().items() if ".ttt." in k}
    notes = other.load_checkpoint(path)
    assert any("memory units keep their initialisation" in n for n in notes)
    for k, v in other.state_dict().items():
        expected = init_memory[k] if ".ttt." in k else tiny.state_dict()[k]
        assert torch.equal(v, expected), k


def test_vggt_track_head_is_skipped_with_a_note(tiny, tmp_path):
    state = {("aggregator." + k[len("agg_regator."):] if k.startswith("agg_regator.") else k): v
             for k, v in tiny.state_dict().items() if ".ttt." not in k}
    state = {k.replace("cam_decoder.", "camera_head.").replace("xyz_decoder.", "point_head.")
             .replace("dpt_decoder.", "depth_head."): v for k, v in state.items()}
    state["track_head.feature_extractor.norm.weight"] = torch.ones(4)
    path = tmp_path / "vggt1b.pt"
    torch.save(state, path)
    notes = _fresh().load_checkpoint(path)
    assert any("skipped 1 tensors" in n for n in notes)


def test_wrong_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "small.pt"
    torch.manual_seed(0)
    Scal3R.from_preset("small").save_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not fit this model.*shape mismatches"):
        _fresh().load_checkpoint(path)


def test_missing_and_unexpected_keys(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state.pop("cam_decoder.token_norm.weight")
    state["agg_regator.extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="1 missing keys.*1 unexpected keys"):
        _fresh().load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_checkpoint(tiny, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    tiny.save_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        _fresh().load_checkpoint(path)


def test_garbage_empty_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError):
        read_state_dict(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(empty)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")


class _Payload:
    def __reduce__(self):  # would run code on unpickling
        return (print, ("pwned",))


def test_pickled_objects_are_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"agg_regator.x": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": _Payload()}))
    with pytest.raises(CheckpointError):
        read_state_dict(plain)


def test_nan_weights_are_refused(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["cam_decoder.token_norm.weight"] = torch.full_like(state["cam_decoder.token_norm.weight"], float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="NaN"):
        _fresh().load_checkpoint(path)


def test_wrapped_state_dict(tiny, tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {"module." + k: v for k, v in tiny.state_dict().items()}}, path)
    assert _fresh().load_checkpoint(path) == []


def test_vggt_checkpoint_into_the_vggt_preset_has_no_memory(tmp_path):
    with torch.device("meta"):
        vggt = Scal3R.from_preset("vggt")
    assert not any(".ttt." in k for k in vggt.state_dict())
    assert vggt.agg_regator.memory_layers == ()


def _with_position(cfg, on: bool):
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.aggregator.conv_position_embedding = on
    return cfg


def test_conv_position_embedding_starts_as_the_model_without_it(tiny, tmp_path):
    """Zero at initialisation: weights trained without it load (with a note) into the same function."""
    path = tmp_path / "old.safetensors"
    tiny.save_checkpoint(path)
    with_pos = Scal3R(_with_position(tiny.config, True))
    notes = with_pos.load_checkpoint(path)
    assert any("position embedding" in n for n in notes), notes
    images = torch.rand(3, 3, 56, 84)
    a = tiny.agg_regator.patch_embed(images)
    b = with_pos.agg_regator.patch_embed(images)
    assert torch.equal(a, b)
    # Learned positions change the tokens place by place, at any grid size (resized to the image's).
    with torch.no_grad():
        with_pos.agg_regator.patch_embed.pos_embed.normal_()
    for h, w in ((56, 84), (42, 112)):
        x = torch.rand(1, 3, h, w)
        diff = with_pos.agg_regator.patch_embed(x) - tiny.agg_regator.patch_embed(x)
        assert diff.shape[1] == (h // 14) * (w // 14) and diff.abs().sum(-1).min() > 0


def test_memory_units_are_left_out_for_a_model_without_memory(tiny, tmp_path):
    import copy

    path = tmp_path / "with-memory.safetensors"
    tiny.save_checkpoint(path)
    cfg = copy.deepcopy(tiny.config)
    cfg.aggregator.memory_layers = ()
    plain = Scal3R(cfg)
    with pytest.raises(CheckpointError, match="unexpected"):
        plain.load_checkpoint(path)
    notes = plain.load_checkpoint(path, drop_memory=True)
    assert any("memory units" in n and "left out" in n for n in notes), notes
