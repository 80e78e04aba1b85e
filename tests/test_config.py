"""Model config presets and the release's sampler_cfg."""

import json

import pytest
import torch

from conftest import require_parity
from scal3r import Scal3R
from scal3r.config import ModelConfig
from scal3r.errors import Scal3RError
from scal3r.model.checkpoint import from_release_layout, to_release_layout

# The paper's figure for the four memory units of the release: 75.55M parameters.
MEMORY_UNIT_PARAMS = 18_886_659


def _manifest():
    return json.loads((require_parity("tiny_conv").parent / "release_state_dict_manifest.json").read_text())


def _official_on_meta():
    with torch.device("meta"):
        return Scal3R.from_preset("official")


def test_official_preset_matches_the_release_state_dict_exactly():
    manifest = _manifest()
    state = _official_on_meta().state_dict()
    shapes = {k: list(v.shape) for k, v in state.items()}
    release = {k: v[0] for k, v in manifest["tensors"].items()}
    assert shapes == release
    assert len(state) == manifest["n_tensors"] == 1451


def test_official_parameter_count(capsys):
    model = _official_on_meta()
    total = sum(p.numel() for p in model.parameters())
    memory = sum(p.numel() for n, p in model.named_parameters() if ".ttt." in n)
    with capsys.disabled():
        print(f"\nofficial preset: {total:,} parameters = {total - memory:,} (VGGT-1B without track head) "
              f"+ {memory:,} in 4 memory units")
    assert memory == 4 * MEMORY_UNIT_PARAMS  # 75,546,636 ≈ the paper's 75.55M
    assert total == _manifest()["n_values"] == 1_266_142_756


def test_official_layout_round_trip_of_keys_and_shapes():
    state = _official_on_meta().state_dict()
    vggt = from_release_layout(state, "vggt")
    assert all(k.split(".")[0] in {"aggregator", "camera_head", "point_head", "depth_head"} for k in vggt)
    back, layout, skipped = to_release_layout(vggt)
    assert layout == "vggt" and skipped == []
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in state.items() if ".ttt." not in k}


@pytest.mark.parametrize("name", ["tiny_conv", "tiny_dinov2"])
def test_fixture_configs_are_expressible(name):
    path = require_parity(name) / "config.json"
    cfg = json.loads(path.read_text())
    config = ModelConfig.from_release(cfg["sampler_cfg"], cfg["harness"].get("vit_override"))
    agg = cfg["sampler_cfg"]["agg_regator_cfg"]
    assert list(config.aggregator.memory_layers) == agg["ttt_layer_idx"]
    assert list(config.aggregator.intermediate_layers) == agg["intermediate_layer_idx"]
    assert config.gradient_checkpointing is True
    if name == "tiny_conv":
        tiny = ModelConfig.tiny()
        assert (config.aggregator, config.camera, config.points, config.depth) == \
            (tiny.aggregator, tiny.camera, tiny.points, tiny.depth)


def test_release_yaml_defaults_give_the_official_preset():
    sampler_cfg = {"use_checkpoint": True, "agg_regator_cfg": {
        "img_size": 518, "patch_size": 14, "embed_dim": 1024, "frame_use_ttt": False, "global_use_ttt": True,
        "ttt_layer_idx": [14, 17, 20, 23], "num_global_tokens": 0,
        "ttt_cfg": {"num_heads": 1, "inter_multi": 4, "base_lr": 0.01, "muon_update_steps": 5,
                    "use_ddp_allreduce": True, "use_modulation": True}}}
    config = ModelConfig.from_release(sampler_cfg)
    official = ModelConfig.official()
    official.aggregator.vit = official.aggregator.vit_config()
    assert config == official


@pytest.mark.parametrize("bad", [
    {"agg_regator_cfg": {"num_global_tokens": 4}},
    {"agg_regator_cfg": {"use_cam_emb": True}},
    {"agg_regator_cfg": {"some_new_knob": 1}},
    {"agg_regator_cfg": {"depth": 4, "intermediate_layer_idx": [0, 1, 2, 3], "patch_embed": "conv",
                         "global_use_ttt": True, "ttt_layer_idx": [9]}},
])
def test_unsupported_release_options_are_refused(bad):
    with pytest.raises(Scal3RError):
        ModelConfig.from_release(bad)


def test_unknown_preset():
    with pytest.raises(Scal3RError, match="unknown preset"):
        ModelConfig.preset("huge")
