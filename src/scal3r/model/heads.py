"""Prediction heads: the camera head (iterative refinement) and the DPT dense heads.

Heads read `features`: {layer index: (B, S, P, 2C)} — the concatenation of frame- and global-block
tokens at the aggregator's intermediate layers (post-memory where a memory layer is one).
Parameter names follow the release (`cam_decoder.*`, `xyz_decoder.*`, `dpt_decoder.*`).
"""

from __future__ import annotations

import functools
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scal3r.config import CameraHeadConfig, DPTHeadConfig
from scal3r.model.layers import Block, Mlp

# ---------------------------------------------------------------------------------------------
# activations


def inverse_log(y: Tensor) -> Tensor:
    """sign(y)·(exp|y| − 1): linear near 0, exponential range for far points."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def _activate(x: Tensor, kind: str) -> Tensor:
    if kind == "linear":
        return x
    if kind == "relu":
        return F.relu(x)
    if kind == "exp":
        return torch.exp(x)
    if kind == "inv_log":
        return inverse_log(x)
    raise ValueError(f"unsupported activation {kind!r}")


def _activate_confidence(x: Tensor, kind: str) -> Tensor:
    if kind == "expp1":
        return 1 + x.exp()
    if kind == "expp0":
        return x.exp()
    if kind == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unsupported confidence activation {kind!r}")


# ---------------------------------------------------------------------------------------------
# camera head


class CameraHead(nn.Module):
    """Camera token of every frame → pose encoding (B, S, 9): t (3), quaternion xyzw (4), FoV h, w (2).

    A transformer trunk over the frames' camera tokens, refined `num_iterations` times: each
    iteration embeds the previous estimate, modulates the tokens with it (adaLN), and adds a delta.
    """

    target_dim = 9

    def __init__(self, dim_in: int, cfg: CameraHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = nn.Sequential(
            *[Block(dim_in, cfg.num_heads, cfg.mlp_ratio, init_values=cfg.init_values) for _ in range(cfg.trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        # What sets a frame apart from the rest of its chunk, at unit scale (see the config).
        self.relative_norm = nn.LayerNorm(dim_in) if cfg.relative_tokens else None
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, self.target_dim))
        self.embed_pose = nn.Linear(self.target_dim, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, self.target_dim)

    def _activate_pose(self, enc: Tensor) -> Tensor:
        return torch.cat([
            _activate(enc[..., :3], self.cfg.trans_act),
            _activate(enc[..., 3:7], self.cfg.quat_act),
            _activate(enc[..., 7:], self.cfg.fl_act),
        ], dim=-1)

    def forward(self, features: Dict[int, Tensor], last_layer: int) -> List[Tensor]:
        """Returns the activated pose encodings of every iteration, each (B, S, 9)."""
        camera = features[last_layer][:, :, 0]  # camera token of each frame (B, S, C)
        tokens = self.token_norm(camera)
        if self.relative_norm is not None:
            tokens = tokens + self.relative_norm(camera - camera.mean(dim=1, keepdim=True))
        B, S, _ = tokens.shape
        estimate = None
        out = []
        for _ in range(self.cfg.num_iterations):
            if estimate is None:
                conditioning = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1))
            else:
                conditioning = self.embed_pose(estimate.detach())
            shift, scale, gate = self.poseLN_modulation(conditioning).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            estimate = delta if estimate is None else estimate + delta
            out.append(self._activate_pose(estimate))
        return out


# ---------------------------------------------------------------------------------------------
# DPT head


def _uv_grid(width: int, height: int, aspect: float, dtype) -> Tensor:
    """(height, width, 2) pixel-centre coordinates spanning ±aspect/diag, ±1/diag."""
    diag = (aspect ** 2 + 1.0) ** 0.5
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, steps=width, dtype=dtype)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, steps=height, dtype=dtype)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def _sincos(dim: int, pos: Tensor, omega_0: float = 100.0) -> Tensor:
    """1D sin/cos embedding (M, dim) of positions (M,), frequencies computed in float64."""
    omega = torch.arange(dim // 2, dtype=torch.double, device=pos.device)
    omega /= dim / 2.0
    omega = 1.0 / omega_0 ** omega
    angles = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


@functools.lru_cache(maxsize=32)
def uv_position_embedding(channels: int, height: int, width: int, aspect: float, dtype) -> Tensor:
    """(channels, height, width) sin/cos embedding of the normalised UV grid.

    Cached: every DPT stage of every frame group of every chunk asks for the same few (read-only;
    callers add it out of place)."""
    grid = _uv_grid(width, height, aspect, dtype).reshape(-1, 2)
    emb = torch.cat([_sincos(channels // 2, grid[:, 0]), _sincos(channels // 2, grid[:, 1])], dim=-1)
    return emb.view(height, width, channels).permute(2, 0, 1)


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))).

    The skip adds relu(x), not x: the original DPT applies an in-place ReLU to its input before
    the skip connection, and trained weights depend on that.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return self.conv2(F.relu_(self.conv1(x))) + x  # relu_ on its own temporary: one allocation less


class FusionBlock(nn.Module):
    """Add the lateral feature (if any), refine, upsample (×2 or to `size`), 1×1 conv."""

    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, lateral: Tensor = None, size: Tuple[int, int] = None) -> Tensor:
        if self.has_residual:
            x = x + self.resConfUnit1(lateral)
        x = self.resConfUnit2(x)
        if size is None:
            size = (int(x.shape[-2] * 2), int(x.shape[-1] * 2))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Dense head: 4 intermediate token maps → per-pixel prediction (B, S, H, W, out−1) and confidence (B, S, H, W)."""

    def __init__(self, dim_in: int, cfg: DPTHeadConfig, layers: Sequence[int], patch_size: int = 14):
        super().__init__()
        self.cfg = cfg
        self.layers = tuple(layers)
        self.patch_size = patch_size
        oc = cfg.out_channels
        f = cfg.features
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, f, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FusionBlock(f)
        self.scratch.refinenet2 = FusionBlock(f)
        self.scratch.refinenet3 = FusionBlock(f)
        self.scratch.refinenet4 = FusionBlock(f, has_residual=False)
        self.scratch.output_conv1 = nn.Conv2d(f, f // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(f // 2, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, cfg.output_dim, 1)
        )

    def _with_position(self, x: Tensor, width: int, height: int) -> Tensor:
        pe = uv_position_embedding(x.shape[1], x.shape[-2], x.shape[-1], width / height, x.dtype).to(x.device)
        return x + (pe * 0.1)[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)

    def _decode(self, features: Dict[int, Tensor], s0: int, s1: int, height: int, width: int) -> Tuple[Tensor, Tensor]:
        ph, pw = height // self.patch_size, width // self.patch_size
        maps = []
        for i, layer in enumerate(self.layers):
            x = features[layer][:, s0:s1, -ph * pw:]  # patch tokens of frames s0..s1
            B, S = x.shape[:2]
            x = self.norm(x.reshape(B * S, ph * pw, -1))
            x = x.permute(0, 2, 1).reshape(B * S, -1, ph, pw)
            x = self._with_position(self.projects[i](x), width, height)
            maps.append(self.resize_layers[i](x))
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
        x = sc.refinenet4(l4, size=l3.shape[2:])
        x = sc.refinenet3(x, l3, size=l2.shape[2:])
        x = sc.refinenet2(x, l2, size=l1.shape[2:])
        x = sc.refinenet1(x, l1)
        x = sc.output_conv1(x)
        x = F.interpolate(x, size=(ph * self.patch_size, pw * self.patch_size), mode="bilinear", align_corners=True)
        x = sc.output_conv2(self._with_position(x, width, height))
        x = x.permute(0, 2, 3, 1)
        pred = _activate(x[..., :-1], self.cfg.activation)
        conf = _activate_confidence(x[..., -1], self.cfg.conf_activation)
        return pred.reshape(B, S, *pred.shape[1:]), conf.reshape(B, S, *conf.shape[1:])

    def forward(self, features: Dict[int, Tensor], height: int, width: int) -> Tuple[Tensor, Tensor]:
        """features: {layer: (B, S, P, 2C)} → (pred (B, S, H, W, out−1), conf (B, S, H, W))."""
        S = features[self.layers[0]].shape[1]
        step = self.cfg.frames_chunk_size if self.cfg.frames_chunk_size and self.cfg.frames_chunk_size > 0 else S
        parts = [self._decode(features, s, min(s + step, S), height, width) for s in range(0, S, step)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
