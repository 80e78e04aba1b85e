"""The aggregator: patch tokens + camera/register tokens through alternating frame/global blocks.

One chunk of S frames is held as tokens (S, P, C): per frame 1 camera token, R register tokens,
then the patch tokens in row-major grid order (P = 1 + R + h·w). Frame blocks attend within each
frame, global blocks across all S·P tokens of the chunk. Global blocks listed in
`memory_layers` own a memory unit (`global_blocks[i].ttt`) that the engine runs after the block,
layer-synchronously over all chunks (see `scal3r.engine`).

The first frame of a chunk is its reference frame: it gets the learned camera/register tokens of
slot 0, every other frame those of slot 1. With `correlation_embedding` (our compact preset, not
the release) each frame's patch and camera tokens also get `scal3r.model.correlation`'s
cross-frame matching cue before the first block.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from scal3r.config import AggregatorConfig
from scal3r.errors import InputError
from scal3r.model.correlation import CorrelationEmbedding, CostVolumes
from scal3r.model.layers import Block, RotaryEmbedding2D, token_positions
from scal3r.model.memory import GlobalContextMemory
from scal3r.model.patch_embed import ConvPatchEmbed, DinoV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ChunkTokens(NamedTuple):
    tokens: Tensor  # (S, P, C)
    pos: Optional[Tensor]  # (S, P, 2) int64 RoPE positions, None without RoPE


class Aggregator(nn.Module):
    def __init__(self, cfg: AggregatorConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        if cfg.patch_embed == "conv":
            grid = cfg.img_size // cfg.patch_size if cfg.conv_position_embedding else 0
            self.patch_embed = ConvPatchEmbed(cfg.patch_size, C, position_grid=grid)
        else:
            self.patch_embed = DinoV2(cfg.vit_config())
        self.rope = RotaryEmbedding2D(cfg.rope_freq) if cfg.rope_freq > 0 else None
        self.correlation = CorrelationEmbedding(cfg.patch_size, C) if cfg.correlation_embedding else None

        def block() -> Block:
            return Block(C, cfg.num_heads, cfg.mlp_ratio, init_values=cfg.init_values, qk_norm=cfg.qk_norm, rope=self.rope)

        self.frame_blocks = nn.ModuleList([block() for _ in range(cfg.depth)])
        self.global_blocks = nn.ModuleList([block() for _ in range(cfg.depth)])
        for i in cfg.memory_layers:
            # `ttt` is the release's attribute name; checkpoints address the memory through it.
            self.global_blocks[i].ttt = GlobalContextMemory(C, cfg.memory, qk_norm=cfg.qk_norm, rope=self.rope)

        # Slot 0: the reference (first) frame of a chunk; slot 1: every other frame.
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, C) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, C) * 1e-6)
        self.register_buffer("_resnet_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def patch_start_idx(self) -> int:
        return self.cfg.patch_start_idx

    @property
    def memory_layers(self) -> Tuple[int, ...]:
        return tuple(self.cfg.memory_layers)

    def memory(self, index: int) -> GlobalContextMemory:
        return self.global_blocks[index].ttt

    def normalise(self, images: Tensor) -> Tensor:
        """images in [0, 1] → ImageNet-normalised, as every embedder here expects."""
        return (images - self._resnet_mean) / self._resnet_std

    def cost_volumes(self, images: Tensor) -> Optional[CostVolumes]:
        """images (S, 3, H, W) in [0, 1], first frame = reference → the correlation embedding's
        cost volumes (what training supervises), None without one."""
        return self.correlation.cost_volumes(self.normalise(images)) if self.correlation is not None else None

    def prepare(self, images: Tensor) -> ChunkTokens:
        """images (S, 3, H, W) in [0, 1], first frame = reference → tokens entering layer 0."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"expected images of shape (S, 3, H, W), got {tuple(images.shape)}")
        S, _, H, W = images.shape
        p = self.cfg.patch_size
        if H % p or W % p:
            raise InputError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        x = self.normalise(images)
        patches = self.patch_embed(x)
        camera = torch.cat([self.camera_token[0, :1], self.camera_token[0, 1:].expand(S - 1, -1, -1)])
        registers = torch.cat([self.register_token[0, :1], self.register_token[0, 1:].expand(S - 1, -1, -1)])
        if self.correlation is not None:
            patch_cue, camera_cue = self.correlation(x)
            patches = patches + patch_cue.to(patches.dtype)
            camera = camera + camera_cue[:, None].to(camera.dtype)
        tokens = torch.cat([camera.to(patches.dtype), registers.to(patches.dtype), patches], dim=1)
        pos = None
        if self.rope is not None:
            pos = token_positions(S, H // p, W // p, self.patch_start_idx, device=images.device)
        return ChunkTokens(tokens, pos)

    def forward_layer(self, index: int, chunk: ChunkTokens) -> Tuple[Tensor, Optional[Tensor]]:
        """Frame block then global block `index` (memory not applied).

        Returns the new tokens (S, P, C) and, at an intermediate layer, the head feature
        concat(frame-block output, global-block output) (S, P, 2C), else None.
        """
        tokens, pos = chunk
        S, P, C = tokens.shape
        frame_out = self.frame_blocks[index](tokens, pos)
        global_pos = pos.reshape(1, S * P, 2) if pos is not None else None
        global_out = self.global_blocks[index](frame_out.reshape(1, S * P, C), global_pos).reshape(S, P, C)
        feature = None
        if index in self.cfg.intermediate_layers:
            feature = torch.cat([frame_out, global_out], dim=-1)
        return global_out, feature
