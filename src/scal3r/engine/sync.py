"""Global Context Synchronization: how the fast-weight gradients of chunks are combined.

At every memory layer each chunk contributes the gradient of its key→value objective. With
synchronisation on, the gradients of all chunks of the sequence are summed before the single
update, so every chunk reads one shared memory. In one process the sum is accumulated in chunk
order (the release's order, needed for bit parity: the bf16 Newton–Schulz that follows amplifies
last-bit differences).
"""

from __future__ import annotations

from typing import Optional

from scal3r.model.memory import FastWeights


class GradientSum:
    """Accumulates chunk gradients in the order they are added (in place, one running sum)."""

    def __init__(self) -> None:
        self.total: Optional[FastWeights] = None
        self.count = 0

    def add(self, grad: FastWeights) -> None:
        if self.total is None:
            self.total = FastWeights(*(g.clone() for g in grad))
        else:
            for acc, g in zip(self.total, grad):
                acc.add_(g)
        self.count += 1

    def result(self) -> FastWeights:
        if self.total is None:
            raise RuntimeError("no gradient was added")
        return self.total
