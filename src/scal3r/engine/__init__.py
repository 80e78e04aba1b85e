"""Running the network over the chunks of a sequence, layer-synchronously (design.md §1).

`infer_chunks` (inference, no autograd, optional offload and torch.distributed) and
`forward_chunks` (training, autograd through the synchronised memory update).
"""

from scal3r.engine.differentiable import forward_chunks
from scal3r.engine.runner import infer_chunks, run_chunks

__all__ = ["forward_chunks", "infer_chunks", "run_chunks"]
