"""True cross-frame matches (`scal3r.train.data.true_matches`) and the matching loss on the
correlation embedding's cost volumes (`scal3r.train.losses.match_loss`)."""

import math

import numpy as np
import pytest
import torch

from scal3r.model.correlation import CorrelationEmbedding, cell_coordinates, match_logits
from scal3r.train.data import true_matches
from scal3r.train.losses import match_loss

H, W, FX = 24, 40, 50.0


def _plane_pair(offset_x: float, depth: float = 10.0):
    """Frame 0 at the origin, frame 1 moved by offset_x along x; both see a plane at `depth`."""
    K = np.array([[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1]], dtype=np.float64)
    K = np.stack([K, K])
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    cam = np.stack([(u - W / 2) / FX * depth, (v - H / 2) / FX * depth, np.full_like(u, depth)], axis=-1)
    points = np.stack([cam, cam + np.array([offset_x, 0, 0])])  # in frame 0's coordinates
    w2c = np.stack([np.eye(4), np.eye(4)])
    w2c[1, 0, 3] = -offset_x
    depth_maps = np.full((2, H, W), depth)
    return points, np.ones((2, H, W), bool), w2c, K, depth_maps


@pytest.mark.parametrize("offset", [0.4, -0.8])
def test_sideways_motion_shifts_matches_by_focal_times_baseline_over_depth(offset):
    points, valid, w2c, K, depth = _plane_pair(offset)
    pos, seen = true_matches(points, valid, w2c, K, depth, [0, 0])
    shift_px = FX * offset / 10.0
    own_x = (np.arange(W) + 0.5) / W * 2 - 1
    inside = seen[1]
    assert inside.sum() > 0.5 * H * W
    np.testing.assert_allclose(pos[1, ..., 0][inside], np.broadcast_to(own_x + shift_px / W * 2, (H, W))[inside], atol=1e-9)
    # Exactly the pixels whose match falls off the image are unseen.
    lands = np.arange(W) + shift_px
    expected = (np.rint(lands) >= 0) & (np.rint(lands) < W)
    assert np.array_equal(inside, np.broadcast_to(expected, (H, W)))
    # Frame 0 against itself: every pixel at its own position.
    assert seen[0].all()
    np.testing.assert_allclose(pos[0, ..., 0], np.broadcast_to(own_x, (H, W)), atol=1e-9)


def test_matches_hidden_behind_something_nearer_are_unseen():
    points, valid, w2c, K, depth = _plane_pair(0.4)
    depth[0, :, 10:20] = 4.0  # an occluder in front of the plane, as frame 0 sees it
    pos, seen = true_matches(points, valid, w2c, K, depth, [0, 0])
    lands = np.rint(np.arange(W) + FX * 0.4 / 10.0)
    hidden = (lands >= 10) & (lands < 20)
    assert not seen[1][:, hidden].any()
    assert seen[1][:, ~hidden & (lands < W)].all()
    # Invalid source pixels (sky) are never matched.
    valid[1, :5] = False
    _, seen = true_matches(points, valid, w2c, K, depth, [0, 0])
    assert not seen[1, :5].any()


def _one_hot_logits(target_cells: torch.Tensor, m: int, sharp: float) -> torch.Tensor:
    logits = torch.zeros(target_cells.shape[0], target_cells.shape[1], m)
    logits.scatter_(-1, target_cells[..., None], sharp)
    return logits


def test_match_loss_is_zero_for_the_true_cell_and_log_m_for_no_preference():
    gh, gw = 3, 4
    Hp, Wp = gh * 7, gw * 7
    coords = cell_coordinates(gh, gw)  # (M, 2)
    M = gh * gw
    # Frame 1 sees every cell shifted one cell to the right (last column: unseen).
    shifted = coords + torch.tensor([2.0 / gw, 0.0])
    match = shifted.reshape(gh, gw, 2).repeat_interleave(7, 0).repeat_interleave(7, 1)[None].expand(2, -1, -1, -1)
    valid = torch.ones(2, Hp, Wp, dtype=torch.bool)
    valid[1, :, -7:] = False
    target = (torch.arange(M) + 1).clamp(max=M - 1)[None].expand(2, -1)
    sharp = match_loss(_one_hot_logits(target, M, 50.0), match, valid, (gh, gw), 0.5)
    # Not exactly 0: float32 rounding of the cell index leaves ~1e-7 of bilinear weight on a
    # neighbour, which the logit gap of 50 multiplies.
    assert sharp < 1e-4
    flat = match_loss(torch.zeros(2, M, M), match, valid, (gh, gw), 0.5)
    assert torch.allclose(flat, torch.tensor(math.log(M)), atol=1e-5)
    wrong = match_loss(_one_hot_logits(torch.zeros_like(target), M, 50.0), match, valid, (gh, gw), 0.5)
    assert wrong > 10


def test_matching_loss_teaches_the_features_to_find_a_shift():
    """A few optimiser steps on the matching term alone sharpen the cost volume at the true cell."""
    torch.manual_seed(0)
    module = CorrelationEmbedding(14, 16, feature_dim=16)
    g = torch.Generator().manual_seed(5)
    base = torch.rand(1, 3, 56, 84, generator=g)
    # Smooth the texture so that untrained features do not already match it perfectly.
    base = torch.nn.functional.avg_pool2d(base, 5, 1, 2)
    images = torch.cat([base, torch.roll(base, 7, dims=-1)]) * 4 - 2
    gh, gw = 8, 12
    own = cell_coordinates(56, 84)
    match = (own - torch.tensor([14.0 / 84, 0.0])).reshape(56, 84, 2)[None].expand(2, -1, -1, -1)
    valid = torch.ones(2, 56, 84, dtype=torch.bool)
    valid[1, :, :7] = False
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        volumes = module.cost_volumes(images)
        loss = match_loss(volumes.reference, match, valid, volumes.grid, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
