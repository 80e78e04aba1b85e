"""Process-group set-up for multi-process runs (torchrun), and its clean shutdown.

`torchrun --nproc_per_node=K -m scal3r reconstruct ...` sets RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT; `init_from_env` joins that group (gloo on CPU, NCCL on CUDA, one GPU per local rank)
with a collective timeout, so a dead rank makes the others fail with an error instead of hanging.
"""

from __future__ import annotations

import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist

from scal3r.errors import Scal3RError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "cpu", timeout_s: float = 600.0) -> Optional[torch.device]:
    """Join the torchrun process group if there is one; returns this rank's device, or None alone."""
    if not launched_by_torchrun():
        return None
    if not dist.is_available():
        raise Scal3RError("this PyTorch build has no torch.distributed")
    use_cuda = device.startswith("cuda")
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    rank_device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(rank_device)
    if not dist.is_initialized():
        kwargs = {"device_id": rank_device} if use_cuda else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return rank_device


def shutdown() -> None:
    """Leave the process group. The barrier first: gloo aborts at exit in about a third of runs
    when a rank destroys the group while another is still sending."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_ranks_agree(flag: bool, device: Optional[torch.device] = None, group=None) -> bool:
    """True when `flag` holds on every rank of the group (alone: `flag`). A MIN all-reduce of one
    number; NCCL moves device tensors only, gloo CPU tensors."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return flag
    wire = device if device is not None and dist.get_backend(group) == "nccl" else torch.device("cpu")
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=wire)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)
    return bool(t.item())
