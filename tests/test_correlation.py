"""The correlation embedding (scal3r.model.correlation): the cue it computes and how it loads."""

import copy

import pytest
import torch

from scal3r.errors import InputError
from scal3r.model.correlation import CorrelationEmbedding, cell_coordinates, match_logits, soft_match
from scal3r.config import ModelConfig
from scal3r.model.scal3r import Scal3R


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Scal3R(ModelConfig.tiny())


def _shifted_frames(shifts_px, seed: int, h: int = 98, w: int = 168) -> torch.Tensor:
    """A random texture and copies of it rolled right by each shift (pixels)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g)
    return torch.cat([image] + [torch.roll(image, s, dims=-1) for s in shifts_px]) * 4 - 2


@pytest.mark.parametrize("seed", [3, 17])
def test_cue_reads_a_known_shift_from_random_features(seed):
    """Content rolled right by k cells is found k cells to the left in the reference and, for the
    second copy, one step to the left in the previous frame — with untrained features."""
    torch.manual_seed(seed)
    module = CorrelationEmbedding(14, 32)
    cell = 7
    frames = _shifted_frames([2 * cell, 4 * cell], seed)
    with torch.no_grad():
        cues = module.cues(frames).reshape(3, 7, 12, -1)
    cell_width = 2 / 24  # normalised width of one of the 24 cells across
    # Patches whose content wrapped around the border have no true match: skip those columns.
    assert cues[0, :, :, 0].abs().max() < 1e-3  # the reference matches itself
    assert torch.allclose(cues[1, :, 1:, 0].median(), torch.tensor(-2 * cell_width), atol=0.01)
    assert torch.allclose(cues[2, :, 2:, 0].median(), torch.tensor(-4 * cell_width), atol=0.01)
    assert torch.allclose(cues[2, :, 2:, 3].median(), torch.tensor(-2 * cell_width), atol=0.01)
    assert cues[1, :, 1:, 1].abs().median() < 1e-3  # no vertical motion
    assert cues[1, :, 1:, 2].median() > 0.9  # confident where the match is exact


def test_soft_match_is_uniform_without_structure():
    """Identical features everywhere: every cell is equally likely, confidence 1/M."""
    coords = cell_coordinates(2, 3)
    f = torch.nn.functional.normalize(torch.ones(1, 6, 4), dim=-1)
    flow, conf = soft_match(match_logits(f, f, torch.tensor(0.05)), coords)
    assert torch.allclose(conf, torch.full((1, 6), 1 / 6))
    assert torch.allclose(flow + coords, coords.mean(0).expand(1, 6, 2), atol=1e-6)


def test_embedding_starts_at_zero_and_older_weights_load_with_a_note(tiny, tmp_path):
    path = tmp_path / "old.safetensors"
    tiny.save_checkpoint(path)
    cfg = copy.deepcopy(tiny.config)
    cfg.aggregator.correlation_embedding = True
    with_cue = Scal3R(cfg)
    notes = with_cue.load_checkpoint(path)
    assert any("correlation embedding" in n for n in notes), notes
    images = torch.rand(3, 3, 56, 84)
    with torch.no_grad():
        a = tiny.agg_regator.prepare(images).tokens
        b = with_cue.agg_regator.prepare(images).tokens
        assert torch.equal(a, b)
        # Once trained (any non-zero output layer) the cue changes patch and camera tokens per frame.
        with_cue.agg_regator.correlation.encode.fc2.weight.normal_()
        c = with_cue.agg_regator.prepare(images).tokens
    start = tiny.agg_regator.patch_start_idx
    assert (c[:, start:] - a[:, start:]).abs().sum(-1).min() > 0
    assert (c[:, 0] - a[:, 0]).abs().sum(-1).min() > 0


def test_odd_patch_size_is_refused():
    with pytest.raises(InputError, match="even patch size"):
        CorrelationEmbedding(15, 32)
