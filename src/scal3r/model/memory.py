"""Global Context Memory: a fast-weight SwiGLU updated at test time (design.md §3).

For the patch tokens x of a chunk (camera/register tokens excluded):

    q, k, v  = split(Linear(x)) per head; q, k RMS-normalised and rotated by 2D RoPE
    η0,η1,η2 = softplus(Linear(x) + softplus⁻¹(base_lr))             per token, fp32
    f_W(x)   = (silu(x W0) ⊙ (x W2)) W1                               W0,W2: (d,h), W1: (h,d)

Three separable operations, so the engine can combine gradients across chunks (GCS):

    g  = gradient(tokens, W0)     ∂/∂W_i Σ_t η_i,t ⟨f_W(k_t), v_t⟩ in closed form, per chunk
    W' = update(W0, Σ_chunks g)   Newton–Schulz-5 (bf16, as the release) + add + per-column norm restore
    x' = apply(tokens, W')        x + gate·(LN(o)(1+scale)+shift), o = RMSNorm(f_W'(q)), patch tokens only

The operations reproduce the official release op for op, including its bf16 Newton–Schulz (see the
parity fixtures' READMEs for why that matters). Everything else runs in float32 regardless of the
dtype the tokens arrive in, as the release disables autocast around the memory.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scal3r.config import MemoryConfig
from scal3r.model.layers import RotaryEmbedding2D

# Quintic Newton–Schulz coefficients (Muon): maximise the slope at zero, converge to ~[0.5, 1.5].
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


class FastWeights(NamedTuple):
    """Fast weights (or their gradients) of one memory unit; leading dim = batch × heads."""

    w0: Tensor  # (bh, d, h)  gate projection
    w1: Tensor  # (bh, h, d)  output projection
    w2: Tensor  # (bh, d, h)  up projection

    def add(self, other: "FastWeights") -> "FastWeights":
        return FastWeights(*(a + b for a, b in zip(self, other)))

    def map(self, fn) -> "FastWeights":
        return FastWeights(*(fn(t) for t in self))


class MemoryInputs(NamedTuple):
    """Projections of a chunk's patch tokens, shared by `gradient` and `apply`."""

    q: Tensor  # (bh, L, d)
    k: Tensor  # (bh, L, d)
    v: Tensor  # (bh, L, d)
    lr0: Tensor  # (bh, L, 1) per-token step sizes, fp32
    lr1: Tensor
    lr2: Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """x in float32, or as it is when already float32 or wider (float64 gradient checks)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def swiglu(x: Tensor, weights: FastWeights) -> Tensor:
    """f_W(x) = (silu(x W0) ⊙ (x W2)) W1.   x: (bh, L, d) → (bh, L, d)."""
    return (F.silu(x @ weights.w0) * (x @ weights.w2)) @ weights.w1


def swiglu_gradient(k: Tensor, v: Tensor, lr0: Tensor, lr1: Tensor, lr2: Tensor, weights: FastWeights) -> FastWeights:
    """Closed-form ∂/∂W_i of Σ_t lr_i,t ⟨f_W(k_t), v_t⟩ for i = 0, 1, 2 (ascent direction).

    k, v: (bh, L, d); lr*: (bh, L, 1); returns gradients shaped like `weights`.
    """
    w0, w1, w2 = weights
    gate = k @ w0  # (bh, L, h)
    up = k @ w2
    hidden = F.silu(gate) * up
    d_hidden = v @ w1.transpose(-1, -2)  # (bh, L, h)
    d_up = d_hidden * F.silu(gate)
    d_silu = d_hidden * up
    sigma = torch.sigmoid(gate)
    d_gate = d_silu * sigma * (1 + gate * (1 - sigma))  # silu'(z) = σ(z)(1 + z(1 − σ(z)))
    return FastWeights(
        (k * lr0).transpose(-1, -2) @ d_gate,
        (hidden * lr1).transpose(-1, -2) @ v,
        (k * lr2).transpose(-1, -2) @ d_up,
    )


def newton_schulz5(grad: Tensor, steps: int, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Approximate orthogonalisation U S' Vᵀ (S' ≈ 1) of each matrix of (B, m, n), in `dtype`.

    bf16 by default, as in the release, so that released weights see the update they were trained
    with (a float64 `dtype` serves finite-difference checks of the training backward).
    Note `c * A @ A` is `(c·A)·A`: the release's evaluation order, kept for bit parity.
    """
    assert grad.ndim == 3
    a, b, c = _NS_COEFFS
    x = grad.to(dtype)
    tall = grad.size(1) > grad.size(2)
    if tall:
        x = x.transpose(1, 2)
    x = x / (x.norm(dim=(1, 2), keepdim=True) + 1e-7)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(steps):
        gram = x @ x.transpose(1, 2)
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    if tall:
        x = x.transpose(1, 2)
    return x


def kept_norm(w: Tensor) -> Tensor:
    """Per-column L2 norm (over dim 1) the update restores, under stop-gradient as in the release:
    training treats it as a constant (so does the finite-difference test, by holding it fixed)."""
    return w.detach().norm(dim=1, keepdim=True)


def orthogonal_update(weights: FastWeights, grad: FastWeights, steps: int,
                      dtype: torch.dtype = torch.bfloat16) -> FastWeights:
    """W' = (W + NS5(g)) rescaled so every column keeps its pre-update L2 norm (over dim 1).

    The kept norm is detached, as in the release: training sees the norm as a constant.
    """
    out = []
    for w, g in zip(weights, grad):
        col_norm = kept_norm(w)
        w_new = w + newton_schulz5(g, steps, dtype)
        out.append(w_new / (w_new.norm(dim=1, keepdim=True) + 1e-5) * col_norm)
    return FastWeights(*out)


def inv_softplus(x: float) -> float:
    """y with softplus(y) = x."""
    return x + math.log(-math.expm1(-x))


class GlobalContextMemory(nn.Module):
    """One memory unit. Parameter names follow the release (`global_blocks.i.ttt.*`).

    Token tensors are a chunk's tokens (S, P, C) with P = patch_start_idx + patches per frame;
    `pos` (S, P, 2) are the RoPE positions of the aggregator.
    """

    def __init__(self, dim: int, cfg: MemoryConfig, qk_norm: bool = True, rope: Optional[RotaryEmbedding2D] = None):
        super().__init__()
        if dim % cfg.num_heads:
            raise ValueError(f"memory dim {dim} not divisible by {cfg.num_heads} heads")
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.steps = cfg.muon_update_steps
        # Newton–Schulz precision: the release's bf16; tests of the training backward set float64.
        self.update_dtype = torch.bfloat16
        self.use_modulation = cfg.use_modulation
        hidden = self.head_dim * cfg.inter_multi

        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.rope = rope
        # Learned initial fast weights (Kaiming-like scale); each unit starts from its own.
        self.w0 = nn.Parameter(torch.randn(self.num_heads, self.head_dim, hidden) * math.sqrt(2 / self.head_dim))
        self.w1 = nn.Parameter(torch.randn(self.num_heads, hidden, self.head_dim) * math.sqrt(2 / hidden))
        self.w2 = nn.Parameter(torch.randn(self.num_heads, self.head_dim, hidden) * math.sqrt(2 / self.head_dim))
        self.lrs = nn.Linear(dim, 3 * self.num_heads)
        self.inv_base_lr = inv_softplus(cfg.base_lr)
        self.o_norm = nn.RMSNorm(self.head_dim, eps=1e-5)
        self.proj = nn.Linear(dim, dim * 3 if cfg.use_modulation else dim)
        if cfg.use_modulation:
            self.a_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            # Start as a small gated residual: zero shift/scale, gate 0.1.
            with torch.no_grad():
                self.proj.weight.zero_()
                self.proj.bias.zero_()
                self.proj.bias[2 * dim:] = 0.1

    # -- shapes ----------------------------------------------------------------------------------
    @staticmethod
    def _patch_tokens(x: Tensor, patch_start_idx: int) -> Tensor:
        """(S, P, C') → (1, S·(P − patch_start_idx), C')."""
        return x[:, patch_start_idx:].reshape(1, -1, x.shape[-1])

    def initial_weights(self, batch: int = 1) -> FastWeights:
        """The learned starting point W0, repeated per batch element: (batch·heads, ...)."""
        return FastWeights(self.w0.repeat(batch, 1, 1), self.w1.repeat(batch, 1, 1), self.w2.repeat(batch, 1, 1))

    # -- the three operations ---------------------------------------------------------------------
    def project(self, tokens: Tensor, pos: Optional[Tensor], patch_start_idx: int) -> MemoryInputs:
        """q, k, v and step sizes of a chunk's patch tokens (fp32)."""
        x = self._patch_tokens(at_least_fp32(tokens), patch_start_idx)
        B, L, D = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(B, L, 3, h, d).permute(2, 0, 3, 1, 4)  # each (B, h, L, d)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            tables = self.rope.tables(self._patch_tokens(pos, patch_start_idx), d, q.dtype, q.device)
            q, k = self.rope.rotate(q, tables), self.rope.rotate(k, tables)
        q, k, v = (t.reshape(B * h, L, d) for t in (q, k, v))
        lrs = F.softplus(at_least_fp32(self.lrs(x)) + self.inv_base_lr)  # (B, L, 3h)
        lr0, lr1, lr2 = lrs.reshape(B, L, 3, h, 1).permute(2, 0, 3, 1, 4).reshape(3, B * h, L, 1)
        return MemoryInputs(q, k, v, lr0, lr1, lr2)

    def gradient(self, tokens: Tensor, weights: Optional[FastWeights], pos: Optional[Tensor], patch_start_idx: int,
                 inputs: Optional[MemoryInputs] = None) -> FastWeights:
        """Raw (step-size-weighted) gradient of this chunk's key→value objective at `weights`.

        `weights=None` means the learned initial weights. Gradients of chunks add up (GCS).
        """
        m = inputs if inputs is not None else self.project(tokens, pos, patch_start_idx)
        w = weights if weights is not None else self.initial_weights()
        return swiglu_gradient(m.k, m.v, m.lr0, m.lr1, m.lr2, w)

    def update(self, weights: Optional[FastWeights], summed_grad: FastWeights) -> FastWeights:
        """One orthogonalised step from `weights` (None = initial) along the summed gradient."""
        w = weights if weights is not None else self.initial_weights(summed_grad.w0.shape[0] // self.num_heads)
        return orthogonal_update(w, summed_grad, self.steps, self.update_dtype)

    def residual(self, tokens: Tensor, weights: FastWeights, pos: Optional[Tensor], patch_start_idx: int,
                 query: Optional[Tensor] = None) -> Tensor:
        """The memory's contribution to every token: (S, P, C), zero at camera/register tokens.

        `query` (bh, L, d) is `project(...).q` if the caller kept it from the gradient pass.
        """
        q = query if query is not None else self.project(tokens, pos, patch_start_idx).q
        S, P, C = tokens.shape
        o = self.o_norm(swiglu(q, weights))  # (bh, L, d)
        bh, L, d = o.shape
        o = o.reshape(bh // self.num_heads, self.num_heads, L, d).transpose(1, 2).reshape(-1, L, self.num_heads * d)
        if self.use_modulation:
            shift, scale, gate = self.proj(o).chunk(3, dim=-1)
            o = gate * (self.a_norm(o) * (1 + scale) + shift)
        else:
            o = self.proj(o)
        o = o.reshape(S, P - patch_start_idx, C)
        return torch.cat([o.new_zeros(S, patch_start_idx, C), o], dim=1)

    def apply(self, tokens: Tensor, weights: FastWeights, pos: Optional[Tensor], patch_start_idx: int,
              query: Optional[Tensor] = None) -> Tensor:
        """tokens + residual: the chunk's tokens after reading the (updated) memory."""
        return tokens + self.residual(tokens, weights, pos, patch_start_idx, query).to(tokens.dtype)
