"""Correlation embedding: where each patch of a frame is found in the chunk's reference frame and
in the previous frame, added to the tokens before the first block.

Not in the paper. VGGT and the official Scal3R start from DINOv2 features, which already match
across views, so global attention can find a patch's counterpart in another frame from the first
step. A model trained from scratch here has random conv features: on the project's synthetic
worlds every such run settled within ~300 steps on one pose for every frame of a chunk (camera
tokens varying by 0.3 % across frames, docs/training.md), although the same network memorises two
fixed windows. This module makes the cross-view cue explicit and cheap, in the manner of
RAFT/PWC-Net's cost volumes: dense features on a grid twice as fine as the patches, normalised
dot products of every cell of frame i with every cell of the reference (and of frame i − 1), a
soft-argmax that turns each row of that cost volume into an expected position, and from it a
flow and a confidence per cell. Those are pooled to the patch grid and encoded by an MLP whose
last layer starts at zero, so a model without it and a model with it start as the same function.

The features are learned with the rest of the network (the losses reach them through the
soft-argmax, and in training directly: `scal3r.train.losses.match_loss`); at initialisation they
are random functions of pixel windows, which already match textured content that moved by whole
cells.

Shapes: images (S, 3, H, W) normalised, H and W multiples of the patch size p (p even); the
embedding is (S, h·w, C) for the patch tokens (h = H/p, w = W/p) and (S, C) for the camera token.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scal3r.errors import InputError
from scal3r.model.layers import Mlp

# Per cell: flow to the reference (2) and its confidence (1), the same to the previous frame (3),
# and the cell's own position (2) so that the MLP can form position-dependent terms (a forward
# motion is a flow that grows with the distance to the image centre).
CUE_CHANNELS = 8


def cell_coordinates(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """(height·width, 2) cell centres (x, y) in [−1, 1], row-major."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def match_logits(features: Tensor, targets: Tensor, temperature: Tensor) -> Tensor:
    """features, targets (S, M, D) L2-normalised per cell; temperature () > 0 → (S, M, M) float32:
    row m of frame s scores every cell of targets[s]."""
    return torch.einsum("smd,snd->smn", features.float(), targets.float()) / temperature.float()


def soft_match(logits: Tensor, coords: Tensor) -> Tuple[Tensor, Tensor]:
    """Soft-argmax of a cost volume: logits (S, M, M), coords (M, 2) the cells' positions →
    flow (S, M, 2) = expected matching position − own position, and confidence (S, M) = the
    largest matching probability (1 for an unambiguous match, 1/M for none)."""
    prob = logits.softmax(dim=-1)
    expected = prob @ coords.float()
    return expected - coords.float(), prob.amax(dim=-1)


class CostVolumes(NamedTuple):
    reference: Tensor  # (S, M, M) logits of each frame's cells against the reference frame's
    previous: Tensor  # (S, M, M) the same against the previous frame in the chunk (frame 0: itself)
    grid: Tuple[int, int]  # (2h, 2w) cells; M = 2h · 2w, row-major


class CorrelationEmbedding(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, feature_dim: int = 64, hidden_dim: int = 128):
        super().__init__()
        if patch_size % 2:
            raise InputError(f"the correlation embedding needs an even patch size, got {patch_size}")
        self.cell = patch_size // 2
        # One pixel-level layer, one cell-level stride, two layers of context between cells:
        # trained on the matching term alone for 300 steps, held-out cross-entropy 2.44 against
        # 3.23 for the stride alone (a third pixel layer and a third context layer: 2.53, twice
        # the time).
        self.features = nn.Sequential(
            nn.Conv2d(3, feature_dim // 2, kernel_size=3, padding=1), nn.GELU(),
            nn.Conv2d(feature_dim // 2, feature_dim, kernel_size=self.cell, stride=self.cell), nn.GELU(),
            nn.Conv2d(feature_dim, feature_dim, kernel_size=3, padding=1), nn.GELU(),
            nn.Conv2d(feature_dim, feature_dim, kernel_size=3, padding=1),
        )
        # Softmax temperature of the cost volume (learned, in log space); 0.05 makes a perfect
        # match (cosine 1) against unrelated cells (cosine ~0) a near one-hot choice.
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.05)))
        self.encode = Mlp(CUE_CHANNELS, hidden_dim, embed_dim)
        nn.init.zeros_(self.encode.fc2.weight)
        nn.init.zeros_(self.encode.fc2.bias)

    def cost_volumes(self, images: Tensor) -> CostVolumes:
        """images (S, 3, H, W) normalised → the two cost volumes (training supervises them
        directly, `scal3r.train.losses.match_loss`)."""
        S, _, H, W = images.shape
        p = 2 * self.cell
        if H % p or W % p:
            raise InputError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        f = self.features(images)  # (S, D, 2h, 2w)
        grid = (f.shape[-2], f.shape[-1])
        f = f.float().flatten(2).transpose(1, 2)  # (S, M, D)
        # Centred per frame before normalising (as normalised cross-correlation): what all cells
        # share (the image's overall colour, the features' common positive part) would otherwise
        # make every cell resemble every other and flatten the soft-argmax.
        f = F.normalize(f - f.mean(dim=1, keepdim=True), dim=-1)
        temperature = self.log_temperature.exp()
        previous = torch.cat([f[:1], f[:-1]])
        return CostVolumes(match_logits(f, f[:1].expand_as(f), temperature), match_logits(f, previous, temperature), grid)

    def cues(self, images: Tensor, volumes: Optional[CostVolumes] = None) -> Tensor:
        """images (S, 3, H, W) normalised → per-patch cues (S, h·w, CUE_CHANNELS), float32."""
        volumes = volumes if volumes is not None else self.cost_volumes(images)
        S = images.shape[0]
        gh, gw = volumes.grid
        coords = cell_coordinates(gh, gw, device=images.device)
        flow_ref, conf_ref = soft_match(volumes.reference, coords)
        flow_prev, conf_prev = soft_match(volumes.previous, coords)
        cells = torch.cat([flow_ref, conf_ref[..., None], flow_prev, conf_prev[..., None]], dim=-1)  # (S, M, 6)
        # 2×2 cells → one patch.
        cells = cells.transpose(1, 2).reshape(S, 6, gh, gw)
        patches = F.avg_pool2d(cells, 2).flatten(2).transpose(1, 2)  # (S, h·w, 6)
        own = cell_coordinates(gh // 2, gw // 2, device=images.device).expand(S, -1, -1)
        return torch.cat([patches, own], dim=-1)

    def forward(self, images: Tensor, volumes: Optional[CostVolumes] = None) -> Tuple[Tensor, Tensor]:
        """images (S, 3, H, W) normalised → (patch embedding (S, h·w, C), camera embedding (S, C))."""
        embedding = self.encode(self.cues(images, volumes))
        return embedding, embedding.mean(dim=1)
