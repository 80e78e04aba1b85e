"""Worker for tests/test_engine_distributed.py: one rank of a gloo group on this machine.

argv: rank world port out_dir sync sum_order n_frames [die_at_layer]
"""

import os
import sys

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import torch  # noqa: E402

from scal3r.engine.distributed import init_from_env, shutdown  # noqa: E402
from scal3r.engine.runner import infer_chunks  # noqa: E402
from scal3r.errors import Scal3RError  # noqa: E402
from scal3r.chunks import chunk_ranges  # noqa: E402


def build_model():
    from scal3r import Scal3R

    torch.manual_seed(0)
    model = Scal3R.from_preset("tiny")
    with torch.no_grad():  # make memory matter: its output projection starts at zero
        for layer in model.agg_regator.memory_layers:
            model.agg_regator.memory(layer).proj.weight.normal_(0, 0.05)
    return model


def frames(n):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 28, 42, generator=g)


def main():
    rank, world, port, out_dir, sync, order, n = sys.argv[1:8]
    die_at = int(sys.argv[8]) if len(sys.argv) > 8 else -1
    os.environ.update(RANK=rank, WORLD_SIZE=world, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    init_from_env("cpu", timeout_s=20)
    model = build_model()
    if die_at >= 0 and int(rank) == 1:
        memory = model.agg_regator.memory(die_at)
        real = memory.gradient

        def dying(*args, **kwargs):
            os._exit(3)  # a rank that dies mid-run, without any goodbye
            return real(*args, **kwargs)

        memory.gradient = dying
    images = frames(int(n))
    try:
        outs = infer_chunks(model, images, chunk_ranges(int(n), 6, 2), sync=sync == "1", sum_order=order)
    except Scal3RError as e:
        print(f"scal3r: error: {e}", file=sys.stderr)
        sys.exit(2)
    if int(rank) == 0:
        torch.save(outs, os.path.join(out_dir, "outs.pt"))
    else:
        assert outs is None
    shutdown()


if __name__ == "__main__":
    main()
