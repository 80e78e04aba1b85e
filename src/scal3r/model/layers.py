"""Transformer building blocks shared by the patch embedder, the aggregator and the camera head.

Module and parameter names follow the release checkpoint (`norm1`, `attn.qkv`, `ls1.gamma`, ...), so
state dicts load without renaming. The arithmetic follows the release op for op (same op order, same
dtypes): the memory update downstream runs Newton–Schulz in bfloat16, which turns last-bit differences
here into visible ones.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerScale(nn.Module):
    """x * gamma, per channel."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Linear → activation → Linear."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def grid_positions(n: int, height: int, width: int, device=None) -> Tensor:
    """(y, x) patch coordinates of an `height × width` grid, row-major: (n, height*width, 2) int64."""
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    pos = torch.cartesian_prod(ys, xs)
    return pos.view(1, height * width, 2).expand(n, -1, -1).clone()


def token_positions(n: int, height: int, width: int, num_special: int, device=None) -> Tensor:
    """RoPE positions of a frame's tokens: special tokens at (0, 0), patches at (y+1, x+1).

    Returns (n, num_special + height*width, 2) int64.
    """
    pos = grid_positions(n, height, width, device) + 1
    special = torch.zeros(n, num_special, 2, device=device, dtype=pos.dtype)
    return torch.cat([special, pos], dim=1)


class RotaryEmbedding2D(nn.Module):
    """2D RoPE: the first half of each head's channels rotates with y, the second half with x.

    Parameter-free. Tokens (B, heads, N, d) with d divisible by 4; positions (B, N, 2) int64.
    Within each half, channel i pairs with channel i + d/4 (rotate-half convention) at frequency
    base^(-4i/d). Written on the halves directly (x1·c − x2·s, x2·c + x1·s) instead of
    `x·cos + rotate_half(x)·sin` with duplicated tables: the same roundings, bit for bit, with fewer
    temporaries; `tables` lets q and k share one lookup.
    """

    def __init__(self, frequency: float = 100.0):
        super().__init__()
        self.frequency = frequency
        self._tables: Dict[Tuple, Tuple[Tensor, Tensor]] = {}

    def _cos_sin(self, dim: int, length: int, device, dtype) -> Tuple[Tensor, Tensor]:
        """cos, sin of position × frequency: (length, dim/2) for a half of `dim` channels."""
        key = (dim, length, device, dtype)
        if key not in self._tables:
            exponents = torch.arange(0, dim, 2, device=device).float() / dim
            inv_freq = 1.0 / (self.frequency ** exponents)
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq).to(dtype)
            self._tables[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return self._tables[key]

    def tables(self, positions: Tensor, head_dim: int, dtype, device) -> Tuple[Tensor, ...]:
        """Per-token (cos_y, sin_y, cos_x, sin_x), each (B, 1, N, head_dim/4)."""
        cos, sin = self._cos_sin(head_dim // 2, int(positions.max()) + 1, device, dtype)
        y, x = positions[..., 0], positions[..., 1]
        return cos[y][:, None], sin[y][:, None], cos[x][:, None], sin[x][:, None]

    @staticmethod
    def rotate(tokens: Tensor, tables: Tuple[Tensor, ...]) -> Tensor:
        cy, sy, cx, sx = tables
        y1, y2, x1, x2 = tokens.chunk(4, dim=-1)
        return torch.cat((y1 * cy - y2 * sy, y2 * cy + y1 * sy, x1 * cx - x2 * sx, x2 * cx + x1 * sx), dim=-1)

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.rotate(tokens, self.tables(positions, tokens.shape[-1], tokens.dtype, tokens.device))


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head LayerNorm on q/k and 2D RoPE."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: Optional[RotaryEmbedding2D] = None,
                 qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(self, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """x: (B, N, C); pos: (B, N, 2) or None → (B, N, C)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            tables = self.rope.tables(pos, self.head_dim, q.dtype, q.device)
            q, k = self.rope.rotate(q, tables), self.rope.rotate(k, tables)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x)).

    A global block of the aggregator may also own a memory unit under the attribute `ttt` (the
    release's name, kept for checkpoint compatibility); the engine runs it, not this forward.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_values: Optional[float] = None,
                 qk_norm: bool = False, rope: Optional[RotaryEmbedding2D] = None, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        return x + self.ls2(self.mlp(self.norm2(x)))
