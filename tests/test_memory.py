"""Global Context Memory: closed-form gradient, Newton–Schulz update, apply."""

import torch

from scal3r.config import MemoryConfig
from scal3r.model.layers import RotaryEmbedding2D, token_positions
from scal3r.model.memory import (FastWeights, GlobalContextMemory, newton_schulz5, orthogonal_update, swiglu,
                                 swiglu_gradient)


def _random_problem(bh=2, L=37, d=8, h=32, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    k, v = (torch.randn(bh, L, d, generator=g, dtype=dtype) for _ in range(2))
    lrs = [torch.rand(bh, L, 1, generator=g, dtype=dtype) for _ in range(3)]
    w = FastWeights(torch.randn(bh, d, h, generator=g, dtype=dtype) / d ** 0.5,
                    torch.randn(bh, h, d, generator=g, dtype=dtype) / h ** 0.5,
                    torch.randn(bh, d, h, generator=g, dtype=dtype) / d ** 0.5)
    return k, v, lrs, w


def test_closed_form_gradient_equals_autograd():
    k, v, (lr0, lr1, lr2), w = _random_problem()
    closed = swiglu_gradient(k, v, lr0, lr1, lr2, w)
    for i, lr in enumerate((lr0, lr1, lr2)):
        params = [t.clone().requires_grad_(True) for t in w]
        objective = (lr * (swiglu(k, FastWeights(*params)) * v).sum(-1, keepdim=True)).sum()
        auto = torch.autograd.grad(objective, params[i])[0]
        torch.testing.assert_close(closed[i], auto, rtol=1e-10, atol=1e-12)


def test_newton_schulz_orthogonalises_in_bf16():
    g = torch.Generator().manual_seed(1)
    for shape in ((1, 16, 64), (1, 64, 16)):
        x = newton_schulz5(torch.randn(*shape, generator=g), steps=5)
        assert x.dtype == torch.bfloat16 and x.shape == shape
        s = torch.linalg.svdvals(x.float()[0])
        # The quintic iteration drives every singular value into roughly [0.5, 1.5].
        assert s.min() > 0.4 and s.max() < 1.6, s


def test_update_keeps_column_norms():
    _, _, _, w = _random_problem(dtype=torch.float32)
    grad = w.map(lambda t: torch.randn_like(t))
    new = orthogonal_update(w, grad, steps=5)
    for before, after in zip(w, new):
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after.norm(dim=1), before.norm(dim=1), rtol=1e-4, atol=1e-4)


def _memory(dim=32):
    torch.manual_seed(0)
    mem = GlobalContextMemory(dim, MemoryConfig(num_heads=2), rope=RotaryEmbedding2D(100))
    with torch.no_grad():  # leave the zero-initialised output projection so that apply does something
        mem.proj.weight.normal_(0, 0.05)
    return mem.eval()


def test_operations_shapes_and_special_tokens_untouched():
    mem = _memory()
    S, h, w, ps = 3, 2, 4, 5
    tokens = torch.randn(S, ps + h * w, 32)
    pos = token_positions(S, h, w, ps)
    grad = mem.gradient(tokens, None, pos, ps)
    assert [tuple(g.shape) for g in grad] == [(2, 16, 64), (2, 64, 16), (2, 16, 64)]
    fast = mem.update(None, grad)
    out = mem.apply(tokens, fast, pos, ps)
    assert out.shape == tokens.shape
    assert torch.equal(out[:, :ps], tokens[:, :ps])  # camera/register tokens are not touched
    assert not torch.allclose(out[:, ps:], tokens[:, ps:])


def test_gradients_of_chunks_add_up_to_the_gradient_of_their_union():
    """GCS relies on the objective being a sum over tokens: Σ chunk gradients = gradient of all tokens."""
    mem = _memory()
    ps, h, w = 5, 2, 3
    a, b = torch.randn(2, ps + h * w, 32), torch.randn(3, ps + h * w, 32)
    both = torch.cat([a, b])
    ga = mem.gradient(a, None, token_positions(2, h, w, ps), ps)
    gb = mem.gradient(b, None, token_positions(3, h, w, ps), ps)
    gab = mem.gradient(both, None, token_positions(5, h, w, ps), ps)
    for x, y in zip(ga.add(gb), gab):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_kept_query_gives_the_same_result_as_reprojecting():
    mem = _memory()
    S, h, w, ps = 2, 3, 3, 5
    tokens = torch.randn(S, ps + h * w, 32)
    pos = token_positions(S, h, w, ps)
    inputs = mem.project(tokens, pos, ps)
    fast = mem.update(None, mem.gradient(tokens, None, pos, ps, inputs))
    assert torch.equal(mem.apply(tokens, fast, pos, ps), mem.apply(tokens, fast, pos, ps, query=inputs.q))
