"""The layer-synchronous chunk loop (design.md §1), in one process or across ranks.

    for every chunk: tokens = prepare(frames of the chunk, reference frame first)
    for each aggregator layer l:
        for every chunk: tokens = frame block l, global block l
        if l is a memory layer:
            g = Σ_chunks gradient(chunk tokens)          GCS (or each chunk its own, sync=False)
            W' = update(W0, g); tokens = apply(tokens, W') for every chunk
    heads per chunk → outputs

No chunk sees another chunk's tokens: only the summed fast-weight gradient crosses chunks, so time
is linear in the number of chunks. Chunk state lives in a store between layers (RAM, or files with
`DiskStore`, which bounds resident memory by about one chunk).

Under an initialised `torch.distributed` process group of several ranks, every rank calls this with
the same arguments; rank r runs a contiguous block of the chunks, the gradient sum crosses ranks
(see `scal3r.engine.sync` for the summation order), and rank 0 receives every chunk's outputs.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from scal3r.chunks import OUTPUT_KEYS, output_shapes, reference_first_order, rows_ascending, validate_ranges
from scal3r.engine.distributed import all_ranks_agree
from scal3r.engine.heap import retained_heap
from scal3r.engine.state import DiskStore, MemoryStore
from scal3r.engine.sync import make_accumulator
from scal3r.errors import InputError, Scal3RError
from scal3r.model.aggregator import ChunkTokens
from scal3r.model.memory import FastWeights
from scal3r.progress import ProgressFn, report

# Called after every memory update as (layer, chunk id or None when shared, fast weights) and may
# return replacement weights: for inspecting or injecting memory (teacher forcing in parity tests).
UpdateHook = Callable[[int, Optional[int], FastWeights], Optional[FastWeights]]
OutputFn = Callable[[int, Dict[str, Tensor]], None]



def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _record(trace: Optional[Dict[str, Tensor]], key: str, value: Tensor) -> None:
    if trace is not None:
        trace[key] = value.detach().float().cpu().clone()


def rank_chunks(n_chunks: int, rank: int, world: int) -> range:
    """The contiguous block of chunk indices rank `rank` of `world` runs (sizes differ by ≤ 1)."""
    return range(n_chunks * rank // world, n_chunks * (rank + 1) // world)


def _take(images, frames: Sequence[int]) -> Tensor:
    """Frames of one chunk as float32 in [0, 1]; images may be a tensor or a (memory-mapped) array."""
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images[list(frames)]))
    else:
        x = images[list(frames)]
    if x.dtype == torch.uint8:
        return x.float() / 255
    x = x.float()
    if not torch.isfinite(x).all():
        raise InputError("images contain NaN or infinite values")
    return x


def infer_chunks(
    model,
    images: Tensor,
    chunk_ranges: Sequence[Tuple[int, int]],
    sync: bool = True,
    *,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    offload: Union[bool, str, Path] = False,
    sum_order: str = "release",
    progress: Optional[ProgressFn] = None,
    trace: Optional[Dict[str, Tensor]] = None,
) -> Optional[List[Dict[str, Tensor]]]:
    """Multi-chunk inference with Global Context Synchronization.

    images: (N, 3, H, W) float in [0, 1]; chunk_ranges: half-open (start, end) per chunk,
    overlapping. Each chunk is fed middle frame first (its reference frame, as the release);
    outputs come back with rows in ascending frame order. `sync=False` updates each chunk's
    memory from its own gradient only (ablation). `dtype=torch.bfloat16` runs the transformer
    under autocast (memory and heads stay float32). `offload=True` (or a directory) keeps the
    per-layer chunk state in files instead of RAM, so memory stays bounded by about one chunk.
    `sum_order` chooses how chunk gradients are summed ("release": the release's chunk order,
    bit-identical for any number of ranks; "fp64": float64 all-reduce), see `scal3r.engine.sync`.

    Called in every rank of an initialised torch.distributed process group, the chunks are
    spread over the ranks and rank 0 returns all outputs (other ranks return None).
    Returns per chunk: pose_enc (n, 9), depth (n, H, W, 1), depth_conf (n, H, W),
    world_points (n, H, W, 3), world_points_conf (n, H, W), frames (n,) global indices.
    """
    if not torch.is_tensor(images) or images.ndim != 4:
        raise InputError("images must be a tensor of shape (N, 3, H, W)")
    ranges = validate_ranges(chunk_ranges, images.shape[0])
    fed = [reference_first_order(s, e) for s, e in ranges]
    device = torch.device(device) if device else None
    if offload:
        store = DiskStore(None if offload is True else offload, device=device)
    else:
        store = MemoryStore(device)  # on a GPU, chunk state waits in host RAM between layers
    outs = run_chunks(model, images, fed, sync=sync, sum_order=sum_order, store=store, device=device,
                      dtype=dtype, progress=progress, trace=trace)
    if outs is None:
        return None
    for i, out in enumerate(outs):  # in place: each chunk's fed-order rows are freed as soon as replaced
        outs[i] = rows_ascending(out)
    return outs


@torch.no_grad()
def run_chunks(
    model,
    images,
    chunks: Sequence[Sequence[int]],
    *,
    sync: bool = True,
    sum_order: str = "release",
    store=None,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
    progress: Optional[ProgressFn] = None,
    trace: Optional[Dict[str, Tensor]] = None,
    chunk_ids: Optional[Sequence[int]] = None,
    on_update: Optional[UpdateHook] = None,
    on_output: Optional[OutputFn] = None,
    group=None,
) -> Optional[List[Dict[str, Tensor]]]:
    """Run the network over chunks of one sequence with (optionally) synchronised memory.

    images: (N, 3, H, W) float in [0, 1] or uint8 (scaled per chunk, so a long video can stay in
    RAM at a quarter of the size); a torch tensor or a numpy (memory-mapped) array.
    chunks: per chunk, global frame indices in the order fed to the network (reference first).
    Returns per chunk a dict of CPU float32 tensors with rows in the fed order:
    "pose_enc" (n, 9), "depth" (n, H, W, 1), "depth_conf" (n, H, W), "world_points" (n, H, W, 3),
    "world_points_conf" (n, H, W), "frames" (n,) int64. With `on_output(chunk index, outputs)` each
    chunk's outputs are handed over as soon as they exist and not kept (an empty list is returned).
    Ranks other than 0 of a process group return None.

    `store`: a `MemoryStore` (default) or `DiskStore`; it is closed at the end (a DiskStore's
    directory is kept after a failure). `trace`, if given, receives intermediate tensors under the
    parity fixtures' key names; `chunk_ids` names chunks there (default 0..n−1). `on_update` sees (and
    may replace) every updated set of fast weights.
    """
    agg = model.agg_regator
    device = torch.device(device) if device is not None else next(model.parameters()).device
    store = store if store is not None else MemoryStore()
    ids = list(chunk_ids) if chunk_ids is not None else list(range(len(chunks)))
    if getattr(images, "ndim", 0) != 4 or images.shape[1] != 3:
        raise InputError(f"expected images of shape (N, 3, H, W), got {tuple(getattr(images, 'shape', ()))}")
    if not chunks:
        raise InputError("no chunks to run")
    H, W = int(images.shape[-2]), int(images.shape[-1])
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
    rank, world = (dist.get_rank(group), dist.get_world_size(group)) if distributed else (0, 1)
    mine = list(rank_chunks(len(chunks), rank, world))
    ok = False
    try:
        with retained_heap():  # freed activations are reused, not paged in afresh by every op
            outputs = _run_local(model, agg, images, chunks, mine, H, W, sync, sum_order, store, device, dtype,
                                 progress, trace, ids, on_update, on_output if not distributed else None,
                                 distributed, group)
            if distributed:
                outputs = _gather_to_rank0(outputs, chunks, mine, H, W, rank, world, device, on_output, group)
        ok = True
        return outputs
    except RuntimeError as e:
        if distributed and _is_comm_error(e):
            raise Scal3RError(f"rank {rank}/{world}: lost contact with the other ranks during the chunk loop "
                              f"(a rank died or timed out): {str(e).strip().splitlines()[0][:160]}") from e
        raise
    finally:
        store.close(success=ok)
        if not ok and isinstance(store, DiskStore) and store.root.exists():
            warnings.warn(f"chunk state kept for inspection in {store.root}")


def _is_comm_error(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "distbackend",
                                   "socket", "closed"))


def _phases(agg) -> List[Tuple[str, int]]:
    """The chunk loop's phases in order: ("embed", −1), ("layer", l) for every layer, ("memory", l)
    after each memory layer, ("heads", −1). A chunk's journal entry is the index of its last one."""
    phases = [("embed", -1)]
    for layer in range(agg.cfg.depth):
        phases.append(("layer", layer))
        if layer in agg.memory_layers:
            phases.append(("memory", layer))
    phases.append(("heads", -1))
    return phases


def _signature(chunks, H: int, W: int, sync: bool, n_phases: int) -> str:
    """What a journal's phases were computed for: resuming other chunks or settings is refused."""
    import hashlib

    text = json.dumps([[int(f) for f in c] for c in chunks]) + f"|{H}x{W}|sync={sync}|phases={n_phases}"
    return hashlib.sha1(text.encode()).hexdigest()


def _tokens(phase: int) -> str:
    # Tokens carry the phase that made them: a phase never overwrites its own input, so a chunk
    # interrupted mid-phase still has the input of that phase on resume.
    return f"tokens@{phase}"


def _run_local(model, agg, images, chunks, mine, H, W, sync, sum_order, store, device, dtype, progress, trace,
               ids, on_update, on_output, distributed, group) -> List[Dict[str, Tensor]]:
    depth = agg.cfg.depth
    phases = _phases(agg)
    journal = store.progress
    signature = _signature(chunks, H, W, sync, len(phases))
    if store.resumed and journal.signature and journal.signature != signature:
        raise Scal3RError("the stored chunk state was computed for other chunks or settings; it cannot be resumed")
    journal.signature = signature
    total_steps = len(mine) * (depth + 2)  # embed, every layer, heads
    done = 0

    def load(b: int) -> ChunkTokens:
        tokens = store.get(b, _tokens(journal.phase(b)))
        return ChunkTokens(tokens, store.get(b, "pos") if store.has(b, "pos") else None)

    def finished(b: int, phase: int) -> None:
        previous = journal.phase(b)
        journal.done[b] = phase
        store.commit()
        if previous >= 0 and store.has(b, _tokens(previous)):
            store.delete(b, _tokens(previous))

    # On resume, heads run again where their outputs are not kept elsewhere: under a process group
    # (they travel to rank 0 at the end) or without `on_output` (they are returned).
    rerun_heads = store.resumed and (distributed or on_output is None)
    keep_features = distributed and isinstance(store, DiskStore)
    outputs = []
    for phase, (kind, layer) in enumerate(phases):
        if kind == "memory":
            _memory_layer(agg, layer, phase, mine, load, finished, store, sync, sum_order, distributed, group,
                          trace, ids, on_update, device)
            continue
        for b in mine:
            if journal.phase(b) >= phase and not (kind == "heads" and rerun_heads):
                done += 1
                continue
            if kind == "embed":
                x = _take(images, chunks[b]).to(device)
                with _autocast(device, dtype):
                    chunk = agg.prepare(x)
                store.put(b, _tokens(phase), chunk.tokens)
                if chunk.pos is not None:
                    store.put(b, "pos", chunk.pos)
                _record(trace, f"chunk{ids[b]:02d}/tokens_in", chunk.tokens)
                finished(b, phase)
            elif kind == "layer":
                with _autocast(device, dtype):
                    tokens, feature = agg.forward_layer(layer, load(b))
                if feature is not None:
                    store.put(b, f"feature{layer}", feature)
                store.put(b, _tokens(phase), tokens)
                finished(b, phase)
            else:  # heads
                features = {j: store.get(b, f"feature{j}").float()[None] for j in agg.cfg.intermediate_layers}
                out = model.decode(features, H, W, trace=trace, trace_prefix=f"chunk{ids[b]:02d}/")
                out["frames"] = torch.as_tensor(list(chunks[b]), dtype=torch.long)
                if on_output is not None:
                    on_output(b, out)
                else:
                    outputs.append(out)
                if journal.phase(b) < phase:
                    finished(b, phase)
                if not keep_features:  # a resumable group run keeps them until the outputs reached rank 0
                    for name in store.names(b):
                        store.delete(b, name)
            done += 1
            report(progress, "network", done, total_steps)
    return outputs


def _memory_layer(agg, layer: int, phase: int, mine, load, finished, store, sync: bool, sum_order: str,
                  distributed: bool, group, trace, ids, on_update, device) -> None:
    """Gradient of every chunk → (summed) update → apply to every chunk.

    With a `DiskStore` the updated fast weights are stored (and journalled) before any chunk reads
    them, so a resumed run either applies the stored weights or, if they were never complete on every
    rank, redoes the gradient pass from the chunks' unchanged tokens."""
    memory = agg.memory(layer)
    ps = agg.patch_start_idx
    L = f"l{layer:02d}"
    journal = store.progress
    durable = isinstance(store, DiskStore)
    names = [f"fast{layer:02d}_{n}" for n in FastWeights._fields]
    pending = [b for b in mine if journal.phase(b) < phase]
    # Under a process group every rank must take the same branch (the gradient pass all-reduces).
    stored = all_ranks_agree(layer in journal.fast, device, group) if durable else False

    def load_weights(chunk: int) -> FastWeights:
        return FastWeights(*(store.get(chunk, n) for n in names))

    own_weights: Dict[int, FastWeights] = {}
    shared = None
    if stored:
        shared = load_weights(-1) if sync else None
    else:
        if layer in journal.fast:  # this rank finished, another did not: all redo it
            journal.fast.remove(layer)
        accumulator = make_accumulator(sum_order, memory.initial_weights(), distributed and sync, group)
        for b in mine:
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
                accumulator.add(grad)
            else:
                own_weights[b] = _hooked(on_update, layer, ids[b], memory.update(None, grad))
        if sync:
            summed = accumulator.finish()
            for name, g in zip(FastWeights._fields, summed):
                _record(trace, f"ttt/{L}/grad_sum/{name}", g)
            shared = _hooked(on_update, layer, None, memory.update(None, summed))
            for name, w in zip(FastWeights._fields, shared):
                _record(trace, f"ttt/{L}/fast/{name}", w)
        if durable:
            for chunk, weights in ([(-1, shared)] if sync else list(own_weights.items())):
                for n, w in zip(names, weights):
                    store.put(chunk, n, w)
            journal.fast.append(layer)
            store.commit()
            if distributed and sync:  # no rank applies before every rank has stored the weights
                dist.barrier(group=group)
    for b in pending:
        if sync:
            weights = shared
        else:
            weights = own_weights[b] if b in own_weights else load_weights(b)
            for name, w in zip(FastWeights._fields, weights):
                _record(trace, f"ttt/{L}/chunk{ids[b]:02d}/fast/{name}", w)
        tokens, pos = load(b)
        query = store.get(b, "memory_query") if store.has(b, "memory_query") else None
        tokens = memory.apply(tokens.float(), weights, pos, ps, query=query)
        _record(trace, f"chunk{ids[b]:02d}/ttt_out_{L}", tokens)
        key = f"feature{layer}"
        if store.has(b, key):
            feature = store.get(b, key)
            # Idempotent: the first half (the frame block's output) never changes.
            store.put(b, key, torch.cat([feature[..., : tokens.shape[-1]], tokens.to(feature.dtype)], dim=-1))
        store.put(b, _tokens(phase), tokens)
        finished(b, phase)
        store.delete(b, "memory_query")
        if not sync and durable:
            for n in names:
                store.delete(b, n)
        own_weights.pop(b, None)


def _hooked(hook: Optional[UpdateHook], layer: int, chunk: Optional[int], weights: FastWeights) -> FastWeights:
    if hook is None:
        return weights
    replaced = hook(layer, chunk, weights)
    return weights if replaced is None else replaced


def _gather_to_rank0(local: List[Dict[str, Tensor]], chunks, mine, H: int, W: int, rank: int, world: int,
                     device: torch.device, on_output: Optional[OutputFn], group) -> Optional[List[Dict[str, Tensor]]]:
    """Send every chunk's outputs to rank 0, in chunk order (tensor messages, no pickling)."""
    # NCCL moves device tensors only; gloo moves CPU tensors.
    wire = device if dist.get_backend(group) == "nccl" else torch.device("cpu")
    mine_set = set(mine)
    by_chunk = dict(zip(mine, local))
    gathered: List[Dict[str, Tensor]] = []
    for b in range(len(chunks)):
        owner = next(r for r in range(world) if b in rank_chunks(len(chunks), r, world))
        if rank == 0:
            if b in mine_set:
                out = by_chunk.pop(b)
            else:
                out = {}
                for key, shape in output_shapes(len(chunks[b]), H, W).items():
                    buf = torch.empty(shape, dtype=torch.float32, device=wire)
                    dist.recv(buf, src=_global(owner, group), group=group)
                    out[key] = buf.cpu()
                out["frames"] = torch.as_tensor(list(chunks[b]), dtype=torch.long)
            if on_output is not None:
                on_output(b, out)
            else:
                gathered.append(out)
        elif b in mine_set:
            out = by_chunk.pop(b)
            for key in OUTPUT_KEYS:
                dist.send(out[key].to(wire).contiguous(), dst=_global(0, group), group=group)
    return gathered if rank == 0 else None


def _global(group_rank: int, group) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)
