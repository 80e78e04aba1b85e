"""Patch embedders: a strided convolution (small presets) or a DINOv2 ViT with registers.

Both map normalised images (N, 3, H, W), H and W multiples of the patch size, to patch tokens
(N, H/p · W/p, C) in row-major grid order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scal3r.config import ViTConfig
from scal3r.errors import InputError
from scal3r.model.layers import Block


def interpolate_grid_embedding(grid_embedding: Tensor, gh: int, gw: int) -> Tensor:
    """A learned square grid of position embeddings (1, side², C) resized to (1, gh·gw, C)
    (bicubic, antialiased, as DINOv2 does for images other than its training size)."""
    n = grid_embedding.shape[1]
    side = int(math.sqrt(n))
    if gh == gw == side:
        return grid_embedding
    dim = grid_embedding.shape[-1]
    pos = F.interpolate(grid_embedding.float().reshape(1, side, side, dim).permute(0, 3, 1, 2),
                        size=(gh, gw), mode="bicubic", antialias=True)
    return pos.permute(0, 2, 3, 1).reshape(1, gh * gw, dim).to(grid_embedding.dtype)


class ConvPatchEmbed(nn.Module):
    """One p×p stride-p convolution per patch (the release's `PatchEmbed`, `proj` is the conv).

    position_grid > 0 adds a learned absolute position embedding (`pos_embed`, a square grid of
    that side, resized to the image's grid), zero at initialisation. The release's conv embedder
    has none: its values then carry no position (RoPE only rotates queries and keys), so a camera
    token that averages them sees a bag of features in which a turn (content shifting sideways)
    is invisible. DINOv2 has one; models trained from scratch here need one."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3, position_grid: int = 0):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, position_grid ** 2, embed_dim)) if position_grid > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        _check_divisible(x, self.patch_size)
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
            tokens = tokens + interpolate_grid_embedding(self.pos_embed, gh, gw).to(tokens.dtype)
        return tokens


class DinoV2(nn.Module):
    """DINOv2 ViT with register tokens, run whole as the patch embedder.

    Tokens: [cls, registers, patches] + learned position embedding (bicubic, antialiased
    interpolation of the square training grid to the image's grid; registers get none).
    Returns the final-LayerNorm'd patch tokens (N, h*w, C).
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = ConvPatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, cfg.embed_dim))
        # Unused at inference; kept so that DINOv2/VGGT/Scal3R checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, init_values=1.0, norm_eps=1e-6) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def _position_embedding(self, height: int, width: int, dtype: torch.dtype) -> Tensor:
        """(1, 1 + gh*gw, C): cls position + the patch grid interpolated to (gh, gw)."""
        gh, gw = height // self.patch_size, width // self.patch_size
        if gh * gw == self.pos_embed.shape[1] - 1 and gh == gw:
            return self.pos_embed
        pos = self.pos_embed.float()
        patch_pos = interpolate_grid_embedding(pos[:, 1:], gh, gw)
        return torch.cat((pos[:, 0].unsqueeze(0), patch_pos), dim=1).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        _check_divisible(x, self.patch_size)
        n, _, height, width = x.shape
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(n, -1, -1), tokens), dim=1)
        tokens = tokens + self._position_embedding(height, width, tokens.dtype)
        tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(n, -1, -1), tokens[:, 1:]), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.num_register_tokens:]


def _check_divisible(x: Tensor, patch: int) -> None:
    if x.shape[-2] % patch or x.shape[-1] % patch:
        raise InputError(f"image size {x.shape[-2]}x{x.shape[-1]} is not a multiple of the patch size {patch}")
