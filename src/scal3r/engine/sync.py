"""Global Context Synchronization: how the fast-weight gradients of chunks are combined.

At every memory layer each chunk contributes the gradient of its key→value objective; with
synchronisation on, the gradients of all chunks of the sequence are summed before the single
update, so every chunk reads one shared memory.

Summation order matters: the update runs Newton–Schulz in bfloat16, which turns a last-bit
difference in the summed gradient into a visible one (the parity fixtures measure it). Two orders:

- ``"release"`` (default): float32, strictly in chunk order, g0 + g1 + g2 + ... — the release's
  order. Across ranks, each rank owns a contiguous block of chunks and the running sum is passed
  from rank to rank (rank r adds its chunks one by one to what rank r−1 sent), then broadcast. The
  result is bit-identical to one process, whatever the number of ranks, at the price of R sequential
  hops of one gradient-sized message per memory layer.
- ``"fp64"``: every rank sums its chunks in float64, one all-reduce in float64, one cast to float32.
  A single collective (better for many ranks); independent of the number of ranks except when a sum
  lands exactly on a float32 rounding tie. Not the release's order.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.distributed as dist

from scal3r.errors import Scal3RError
from scal3r.model.memory import FastWeights

SUM_ORDERS = ("release", "fp64")


class GradientSum:
    """Streaming sum in the order gradients are added (one running sum, no list kept)."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self.total: Optional[FastWeights] = None

    def add(self, grad: FastWeights) -> None:
        if self.total is None:
            self.total = FastWeights(*(g.to(self.dtype).clone() for g in grad))
        else:
            for acc, g in zip(self.total, grad):
                acc.add_(g.to(self.dtype))

    def finish(self) -> FastWeights:
        if self.total is None:
            raise RuntimeError("no gradient was added")
        return self.total.map(lambda t: t.float())


def _flatten(weights: FastWeights) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in weights])


def _unflatten(flat: torch.Tensor, like: FastWeights) -> FastWeights:
    out, i = [], 0
    for t in like:
        out.append(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
    return FastWeights(*out)


class ChainSum:
    """Release order across ranks: rank r continues the running sum of ranks 0..r−1.

    Every rank must call `finish` (also a rank that owns no chunk); `like` gives shapes then.
    """

    def __init__(self, like: FastWeights, group=None) -> None:
        self.group = group
        self.like = like
        self.grads: List[FastWeights] = []

    def add(self, grad: FastWeights) -> None:
        self.grads.append(grad)

    def finish(self) -> FastWeights:
        rank, world = dist.get_rank(self.group), dist.get_world_size(self.group)
        device = self.like.w0.device
        numel = sum(t.numel() for t in self.like)
        total: Optional[torch.Tensor] = None
        if rank > 0:
            total = torch.empty(numel, dtype=torch.float32, device=device)
            dist.recv(total, src=_global(rank - 1, self.group), group=self.group)
            total = _sentinel_to_none(total)
        for grad in self.grads:
            flat = _flatten(grad).float()
            total = flat.clone() if total is None else total.add_(flat)
        if rank < world - 1:
            dist.send(_none_to_sentinel(total, numel, device), dst=_global(rank + 1, self.group), group=self.group)
        result = total if total is not None else torch.zeros(numel, device=device)
        dist.broadcast(result, src=_global(world - 1, self.group), group=self.group)
        return _unflatten(result, self.like)


# A rank with no chunks before the first rank that has some passes "nothing yet" down the chain;
# NaN in the first entry marks it (a real gradient sum is finite: inputs are checked).
def _none_to_sentinel(total: Optional[torch.Tensor], numel: int, device) -> torch.Tensor:
    if total is not None:
        return total
    marker = torch.zeros(numel, device=device)
    marker[0] = float("nan")
    return marker


def _sentinel_to_none(total: torch.Tensor) -> Optional[torch.Tensor]:
    return None if torch.isnan(total[0]) else total


def _global(group_rank: int, group) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


class AllReduceSum:
    """float64 local sums, one float64 all-reduce, one cast to float32."""

    def __init__(self, like: FastWeights, group=None) -> None:
        self.group = group
        self.like = like
        self.local = GradientSum(torch.float64)

    def add(self, grad: FastWeights) -> None:
        self.local.add(grad)

    def finish(self) -> FastWeights:
        if self.local.total is None:
            flat = torch.zeros(sum(t.numel() for t in self.like), dtype=torch.float64, device=self.like.w0.device)
        else:
            flat = _flatten(self.local.total)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        return _unflatten(flat.float(), self.like)


def make_accumulator(sum_order: str, like: FastWeights, distributed: bool, group=None):
    """The accumulator for one memory layer: `.add(grad)` per local chunk, then `.finish()`."""
    if sum_order not in SUM_ORDERS:
        raise Scal3RError(f"unknown gradient sum order {sum_order!r}; use one of {SUM_ORDERS}")
    if not distributed:
        return GradientSum(torch.float32 if sum_order == "release" else torch.float64)
    return ChainSum(like, group) if sum_order == "release" else AllReduceSum(like, group)
