"""Shared test set-up.

oneDNN's bfloat16 GEMM is capped at the AVX512-BF16 kernel, before torch is first used. The
memory update runs Newton–Schulz in bf16 (as the release); on CPUs with AMX, oneDNN would pick
AMX tiles, whose fp32 accumulation order differs from the AVX512-BF16 kernel that produced the
official parity fixtures, flipping single bf16 roundings of the fast weights (measured: up to
0.009 abs on `tiny_conv`, for the official code itself as well as ours). With the cap, our update of
the fixtures' summed gradients equals the official fast weights bit for bit.
"""

import os
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parity_dir() -> Path:
    """Official-code fixtures: $SCAL3R_PARITY_DIR or ../shared/fixtures/parity beside the repo."""
    env = os.environ.get("SCAL3R_PARITY_DIR")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "parity"


def require_parity(name: str) -> Path:
    """The fixture folder, or skip (fail under CI=true) when it is missing."""
    d = parity_dir() / name
    if not (d / "outputs.pt").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"parity fixture {d} is missing (CI=true)")
        pytest.skip(f"parity fixture {d} not found (set SCAL3R_PARITY_DIR)")
    return d


@pytest.fixture(autouse=True)
def _two_threads():
    # The fixtures were recorded with 2 intra-op threads; results depend (in the last bits) on it.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true", default=False,
                     help="run the collected tests in reverse order (to catch order dependence)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()
