"""The layer-synchronous chunk loop (design.md §1).

    for every chunk: tokens = prepare(frames of the chunk, reference frame first)
    for each aggregator layer l:
        for every chunk: tokens = frame block l, global block l
        if l is a memory layer:
            g = Σ_chunks gradient(chunk tokens)          GCS (or each chunk its own, sync=False)
            W' = update(W0, g); tokens = apply(tokens, W') for every chunk
    heads per chunk → outputs

No chunk sees another chunk's tokens: only the summed fast-weight gradient crosses chunks, so time
is linear in the number of chunks. Chunk state lives in a store between layers.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from scal3r.engine.state import MemoryStore
from scal3r.engine.sync import GradientSum
from scal3r.errors import InputError
from scal3r.model.aggregator import ChunkTokens
from scal3r.model.memory import FastWeights
from scal3r.progress import ProgressFn, report

# Called after every memory update as (layer, chunk id or None when shared, fast weights) and may
# return replacement weights: for inspecting or injecting memory (teacher forcing in parity tests).
UpdateHook = Callable[[int, Optional[int], FastWeights], Optional[FastWeights]]

# A hook that turns the locally summed gradient into the global one (identity in one process,
# an all-reduce across ranks): (layer, local sum) -> global sum.
GradientReducer = Callable[[int, FastWeights], FastWeights]


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _record(trace: Optional[Dict[str, Tensor]], key: str, value: Tensor) -> None:
    if trace is not None:
        trace[key] = value.detach().float().cpu().clone()


@torch.no_grad()
def run_chunks(
    model,
    images: Tensor,
    chunks: Sequence[Sequence[int]],
    *,
    sync: bool = True,
    reducer: Optional[GradientReducer] = None,
    store=None,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
    progress: Optional[ProgressFn] = None,
    trace: Optional[Dict[str, Tensor]] = None,
    chunk_ids: Optional[Sequence[int]] = None,
    on_update: Optional[UpdateHook] = None,
    on_output: Optional[Callable[[int, Dict[str, Tensor]], None]] = None,
) -> List[Dict[str, Tensor]]:
    """Run the network over chunks of one sequence with (optionally) synchronised memory.

    images: (N, 3, H, W) float in [0, 1] or uint8 in [0, 255] (scaled per chunk, so a long video
    can stay in RAM at a quarter of the size), on any device (moved per chunk).
    chunks: per chunk, global frame indices in the order fed to the network (reference first).
    Returns per chunk a dict of CPU float32 tensors with rows in the fed order:
    "pose_enc" (n, 9), "depth" (n, H, W, 1), "depth_conf" (n, H, W), "world_points" (n, H, W, 3),
    "world_points_conf" (n, H, W). `trace`, if given, receives intermediate tensors under the parity
    fixtures' key names (tokens, memory gradients, fast weights, head features).
    `chunk_ids` names the chunks in trace keys (default 0..n-1). `on_update` sees (and may replace)
    every updated set of fast weights. With `on_output(chunk index, outputs)` each chunk's outputs are
    handed over as soon as its heads ran and not kept (the returned list is then empty), so a caller
    can write them to disk and keep memory bounded.
    """
    agg = model.agg_regator
    device = device or next(model.parameters()).device
    store = store if store is not None else MemoryStore()
    ids = list(chunk_ids) if chunk_ids is not None else list(range(len(chunks)))
    H, W = images.shape[-2:]
    depth = agg.cfg.depth
    ps = agg.patch_start_idx
    total_steps = len(chunks) * (depth + 2)  # embed, every layer, heads
    done = 0

    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.is_floating_point() and not torch.isfinite(images).all():
        raise InputError("images contain NaN or infinite values")

    # Tokens entering layer 0.
    for b, frames in enumerate(chunks):
        x = images[list(frames)].to(device=device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        with _autocast(device, dtype):
            chunk = agg.prepare(x)
        store.put(b, "tokens", chunk.tokens)
        if chunk.pos is not None:
            store.put(b, "pos", chunk.pos)
        _record(trace, f"chunk{ids[b]:02d}/tokens_in", chunk.tokens)
        done += 1
        report(progress, "network", done, total_steps)

    def load(b: int) -> ChunkTokens:
        return ChunkTokens(store.get(b, "tokens"), store.get(b, "pos") if store.has(b, "pos") else None)

    for layer in range(depth):
        for b in range(len(chunks)):
            with _autocast(device, dtype):
                tokens, feature = agg.forward_layer(layer, load(b))
            store.put(b, "tokens", tokens)
            if feature is not None:
                store.put(b, f"feature{layer}", feature)
            done += 1
            report(progress, "network", done, total_steps)
        if layer in agg.memory_layers:
            _memory_layer(agg, layer, len(chunks), load, store, sync, reducer, trace, ids, on_update)

    outputs = []
    for b, frames in enumerate(chunks):
        features = {j: store.pop(b, f"feature{j}").float()[None] for j in agg.cfg.intermediate_layers}
        for name in store.names(b):
            store.pop(b, name)
        out = model.decode(features, H, W, trace=trace, trace_prefix=f"chunk{ids[b]:02d}/")
        out["frames"] = torch.as_tensor(list(frames), dtype=torch.long)
        if on_output is not None:
            on_output(b, out)
        else:
            outputs.append(out)
        done += 1
        report(progress, "network", done, total_steps)
    return outputs


def _memory_layer(agg, layer: int, n_chunks: int, load, store, sync: bool, reducer, trace, ids, on_update) -> None:
    """Gradient of every chunk → (summed) update → apply to every chunk."""
    memory = agg.memory(layer)
    ps = agg.patch_start_idx
    L = f"l{layer:02d}"
    total = GradientSum()
    own_weights: List[FastWeights] = []
    for b in range(n_chunks):
        tokens, pos = load(b)
        tokens = tokens.float()
        _record(trace, f"chunk{ids[b]:02d}/ttt_in_{L}", tokens)
        inputs = memory.project(tokens, pos, ps)
        grad = memory.gradient(tokens, None, pos, ps, inputs)
        # apply() only needs q: keep it instead of projecting the tokens a second time.
        store.put(b, "memory_query", inputs.q)
        for name, g in zip(FastWeights._fields, grad):
            _record(trace, f"ttt/{L}/grad_chunk{ids[b]:02d}/{name}", g)
        if sync:
            total.add(grad)
        else:
            own_weights.append(_hooked(on_update, layer, ids[b], memory.update(None, grad)))
    if sync:
        summed = total.result()
        if reducer is not None:
            summed = reducer(layer, summed)
        for name, g in zip(FastWeights._fields, summed):
            _record(trace, f"ttt/{L}/grad_sum/{name}", g)
        shared = _hooked(on_update, layer, None, memory.update(None, summed))
        for name, w in zip(FastWeights._fields, shared):
            _record(trace, f"ttt/{L}/fast/{name}", w)
    for b in range(n_chunks):
        weights = shared if sync else own_weights[b]
        if not sync:
            for name, w in zip(FastWeights._fields, weights):
                _record(trace, f"ttt/{L}/chunk{ids[b]:02d}/fast/{name}", w)
        tokens, pos = load(b)
        query = store.pop(b, "memory_query")
        tokens = memory.apply(tokens.float(), weights, pos, ps, query=query)
        _record(trace, f"chunk{ids[b]:02d}/ttt_out_{L}", tokens)
        store.put(b, "tokens", tokens)
        key = f"feature{layer}"
        if store.has(b, key):
            feature = store.get(b, key)
            store.put(b, key, torch.cat([feature[..., : tokens.shape[-1]], tokens.to(feature.dtype)], dim=-1))


def _hooked(hook: Optional[UpdateHook], layer: int, chunk: Optional[int], weights: FastWeights) -> FastWeights:
    if hook is None:
        return weights
    replaced = hook(layer, chunk, weights)
    return weights if replaced is None else replaced
