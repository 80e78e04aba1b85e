"""Worker for tests/test_train.py: one rank of a gloo group computing one training step's gradients.

argv: rank world port out_file step
"""

import os
import sys

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import torch  # noqa: E402

from scal3r.engine.distributed import init_from_env, shutdown  # noqa: E402


def build_trainer(out_dir, step):
    from scal3r.train.trainer import Trainer, TrainConfig

    torch.manual_seed(0)
    trainer = Trainer(TrainConfig.preset_for("tiny"), out_dir)
    # float64 throughout (Newton–Schulz too): the comparison is about the sums crossing ranks, so
    # rounding must not hide a wrong sum (fp32 sums in another order differ by ~1e-3 relative on
    # gradients that cancel over many tokens, such as the step-size biases).
    trainer.model.double()
    for layer in trainer.model.agg_regator.memory_layers:
        memory = trainer.model.agg_regator.memory(layer)
        memory.update_dtype = torch.float64
        with torch.no_grad():  # make the memory's read-out matter (its projection starts at zero)
            memory.proj.weight.normal_(0, 0.05)
    trainer.step = step
    return trainer


def gradients(trainer):
    terms, n_chunks, _ = trainer.forward_backward()
    return {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}, n_chunks


def main():
    rank, world, port, out_file, step = sys.argv[1:6]
    os.environ.update(RANK=rank, WORLD_SIZE=world, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    init_from_env("cpu", timeout_s=60)
    try:
        grads, n_chunks = gradients(build_trainer(os.path.dirname(out_file), int(step)))
        if rank == "0":
            torch.save({"grads": grads, "chunks": n_chunks}, out_file)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
