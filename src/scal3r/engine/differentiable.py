"""The layer-synchronous chunk pass with autograd: what training runs (design.md §4b).

The same schedule as inference (`scal3r.engine.runner`), but every operation stays in the graph,
so the outer loss reaches every chunk's tokens and the memory units' slow weights through

    gradient (per chunk) → Σ over chunks (and ranks) → Newton–Schulz update → column norm → apply

Across processes the sum is a differentiable all-reduce (`torch.distributed.nn.functional`):
its backward all-reduces the incoming gradient, which is exactly ∂(Σ_ranks loss)/∂(rank's
gradient), so each rank's chunks receive the gradient of every rank's loss. Each rank passes only
its own chunks; the slow weights' gradients must then be summed over ranks by the caller
(`scal3r.train.trainer` all-reduces them after backward, as DistributedDataParallel would).

Memory: frame/global blocks and the dense heads run under activation checkpointing per chunk
(only each layer's input tokens are kept; the block is recomputed in backward), so K chunks fit in
RAM. The memory operations are cheap and not checkpointed.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from scal3r.errors import InputError
from scal3r.engine.runner import _autocast
from scal3r.engine.sync import _flatten, _unflatten
from scal3r.model.aggregator import ChunkTokens
from scal3r.model.memory import FastWeights, at_least_fp32


def _maybe_checkpoint(enabled: bool, fn, *args):
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def _differentiable_all_reduce(weights: FastWeights, group) -> FastWeights:
    """Σ over ranks of a gradient-shaped FastWeights, with autograd (one flat all-reduce)."""
    from torch.distributed.nn.functional import all_reduce

    total = all_reduce(_flatten(weights), op=dist.ReduceOp.SUM, group=group)
    return _unflatten(total, weights)


def forward_chunks(
    model,
    chunk_images: Sequence[Tensor],
    *,
    sync: bool = True,
    activation_checkpointing: bool = True,
    dtype: Optional[torch.dtype] = None,
    group=None,
) -> List[Dict[str, Tensor]]:
    """Run the network over chunks of one sequence, differentiably.

    chunk_images: per chunk (S_b, 3, H, W) float in [0, 1] on the model's device, frames in the
    order fed to the network (reference first). Under an initialised process group of several
    ranks, pass this rank's chunks only; with `sync` the memory gradient is summed over all ranks.

    Returns per chunk, rows in the fed order, tensors on the device and in the graph:
    "pose_enc" (S, 9) (last refinement), "pose_enc_list" (iterations, S, 9), "depth" (S, H, W, 1),
    "depth_conf" (S, H, W), "world_points" (S, H, W, 3), "world_points_conf" (S, H, W).
    """
    if not chunk_images:
        raise InputError("no chunks to run")
    agg = model.agg_regator
    device = chunk_images[0].device
    H, W = int(chunk_images[0].shape[-2]), int(chunk_images[0].shape[-1])
    if any(tuple(x.shape[-2:]) != (H, W) for x in chunk_images):
        raise InputError("all chunks must have the same image size")
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
    ckpt = activation_checkpointing

    chunks: List[ChunkTokens] = []
    for x in chunk_images:
        with _autocast(device, dtype):
            chunks.append(agg.prepare(x))
    features: List[Dict[int, Tensor]] = [{} for _ in chunks]

    for layer in range(agg.cfg.depth):
        def run_layer(tokens, pos, _layer=layer):
            with _autocast(device, dtype):
                return agg.forward_layer(_layer, ChunkTokens(tokens, pos))

        for b, chunk in enumerate(chunks):
            tokens, feature = _maybe_checkpoint(ckpt, run_layer, chunk.tokens, chunk.pos)
            chunks[b] = ChunkTokens(tokens, chunk.pos)
            if feature is not None:
                features[b][layer] = feature
        if layer in agg.memory_layers:
            _memory_layer(agg, layer, chunks, features, sync, distributed, group)

    outputs = []
    for b, chunk in enumerate(chunks):
        feats = {j: at_least_fp32(features[b][j])[None] for j in agg.cfg.intermediate_layers}
        outputs.append(_heads(model, feats, H, W, ckpt))
    return outputs


def _memory_layer(agg, layer: int, chunks: List[ChunkTokens], features: List[Dict[int, Tensor]], sync: bool,
                  distributed: bool, group) -> None:
    memory = agg.memory(layer)
    ps = agg.patch_start_idx
    inputs = [memory.project(at_least_fp32(c.tokens), c.pos, ps) for c in chunks]
    grads = [memory.gradient(c.tokens, None, c.pos, ps, m) for c, m in zip(chunks, inputs)]
    if sync:
        total = grads[0]
        for g in grads[1:]:
            total = total.add(g)
        if distributed:
            total = _differentiable_all_reduce(total, group)
        shared = memory.update(None, total)
        weights = [shared] * len(chunks)
    else:
        weights = [memory.update(None, g) for g in grads]
    for b, (c, m, w) in enumerate(zip(chunks, inputs, weights)):
        tokens = memory.apply(at_least_fp32(c.tokens), w, c.pos, ps, query=m.q)
        chunks[b] = ChunkTokens(tokens, c.pos)
        if layer in features[b]:
            feature = features[b][layer]
            features[b][layer] = torch.cat([feature[..., : tokens.shape[-1]], tokens.to(feature.dtype)], dim=-1)


def _heads(model, features: Dict[int, Tensor], H: int, W: int, ckpt: bool) -> Dict[str, Tensor]:
    """Camera and dense heads on one chunk's features {layer: (1, S, P, 2C)}, float32."""
    layers = sorted(features)
    a = model.config.aggregator

    def dense(*feats):
        fmap = dict(zip(layers, feats))
        points, points_conf = model.xyz_decoder(fmap, H, W)
        depth, depth_conf = model.dpt_decoder(fmap, H, W)
        return points, points_conf, depth, depth_conf

    poses = model.cam_decoder(features, a.depth - 1)
    points, points_conf, depth, depth_conf = _maybe_checkpoint(ckpt, dense, *(features[j] for j in layers))
    return {
        "pose_enc": poses[-1][0],
        "pose_enc_list": torch.stack([p[0] for p in poses]),
        "depth": depth[0],
        "depth_conf": depth_conf[0],
        "world_points": points[0],
        "world_points_conf": points_conf[0],
    }
