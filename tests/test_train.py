"""Training: the differentiable synchronised pass, losses, data, the trainer and `scal3r train`."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_worker  # noqa: E402

from scal3r import Scal3R  # noqa: E402
from scal3r.chunks import reference_first_order  # noqa: E402
from scal3r.engine import forward_chunks, infer_chunks  # noqa: E402
from scal3r.train.data import Sequence, chunk_targets  # noqa: E402
from scal3r.train.losses import LossConfig, chunk_loss  # noqa: E402


def _tiny_model(dtype=torch.float32, camera_iterations=None):
    from scal3r.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    if camera_iterations:
        cfg.camera.num_iterations = camera_iterations
    model = Scal3R(cfg).to(dtype)
    for layer in model.agg_regator.memory_layers:
        memory = model.agg_regator.memory(layer)
        with torch.no_grad():  # the read-out projection starts at zero; make the memory matter
            memory.proj.weight.normal_(0, 0.05)
    return model


def test_forward_chunks_equals_inference_outputs():
    """Without autograd the training pass computes what inference computes (same schedule)."""
    model = _tiny_model()
    g = torch.Generator().manual_seed(3)
    images = torch.rand(10, 3, 28, 42, generator=g)
    ranges = [(0, 6), (4, 10)]
    ref = infer_chunks(model, images, ranges, sync=True)
    with torch.no_grad():
        outs = forward_chunks(model, [images[reference_first_order(s, e)] for s, e in ranges], sync=True)
    for (s, e), o, r in zip(ranges, outs, ref):
        back = torch.argsort(torch.tensor(reference_first_order(s, e)))
        for key in ("pose_enc", "depth", "world_points_conf"):
            torch.testing.assert_close(o[key][back], r[key], rtol=1e-5, atol=1e-5)


def test_memory_backward_equals_finite_differences_float64(monkeypatch):
    """d(loss)/d(θ) along a random direction, autograd vs central differences, everything float64
    (Newton–Schulz too): the memory's slow weights and a block upstream of the first memory layer.

    The update restores each fast-weight column's norm under stop-gradient (the release's rule),
    so the differences hold those norms at their unperturbed values, as the backward does. Both
    chunks read one memory (sync), so the check covers the gradient sum across chunks."""
    import scal3r.model.memory as memory_module

    # The loss is a weighted sum of the camera head's output, which reads the last layer (a
    # memory layer) through smooth functions only; one refinement iteration, because the head
    # feeds later iterations their predecessor under stop-gradient (VGGT's design). The dense
    # heads' ReLUs would put kinks within the differencing step.
    model = _tiny_model(torch.float64, camera_iterations=1)
    for layer in model.agg_regator.memory_layers:
        model.agg_regator.memory(layer).update_dtype = torch.float64
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 3, 28, 28, generator=g, dtype=torch.float64) for _ in range(2)]
    weights = [torch.randn(3, 9, generator=g, dtype=torch.float64) for _ in range(2)]

    def loss():
        outs = forward_chunks(model, images, sync=True, activation_checkpointing=True)
        return sum((o["pose_enc"] * w).sum() for o, w in zip(outs, weights))

    memory = model.agg_regator.memory(model.agg_regator.memory_layers[0])
    groups = {
        "fast-weight init": [memory.w0, memory.w1, memory.w2],
        "projections, step sizes, read-out": [memory.qkv.weight, memory.lrs.weight, memory.lrs.bias,
                                              memory.proj.weight, memory.o_norm.weight],
        "upstream block": [model.agg_regator.global_blocks[0].attn.qkv.weight],
    }
    real_kept_norm = memory_module.kept_norm
    for name, params in groups.items():
        direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        model.zero_grad()
        loss().backward()
        analytic = sum((p.grad * d).sum() for p, d in zip(params, direction)).item()
        held = {}  # the norms at the unperturbed point, by order of use within one forward

        def holding(w, _calls=[0]):
            key = _calls[0] % 6  # 2 memory layers x 3 fast weights per forward
            _calls[0] += 1
            return held.setdefault(key, real_kept_norm(w))

        monkeypatch.setattr(memory_module, "kept_norm", holding)
        def central(eps):
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(eps * d)
                plus = loss().item()
                for p, d in zip(params, direction):
                    p.sub_(2 * eps * d)
                minus = loss().item()
                for p, d in zip(params, direction):
                    p.add_(eps * d)
            return (plus - minus) / (2 * eps), abs(plus)

        with torch.no_grad():
            loss()  # records the unperturbed norms
        # Richardson extrapolation of central differences: truncation error O(eps⁴) (the
        # Newton–Schulz polynomial is strongly curved), float64 rounding ~1e-16·|loss|/eps.
        eps = 1e-5
        coarse, size = central(eps)
        fine, _ = central(eps / 2)
        numeric = (4 * fine - coarse) / 3
        noise = 1e-14 * size / eps
        monkeypatch.setattr(memory_module, "kept_norm", real_kept_norm)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=noise), name


def _toy_sequence(n=12, h=28, w=42, seed=0):
    """A camera moving forward past a slanted textured plane: exact depth and poses."""
    rng = np.random.default_rng(seed)
    K = np.array([[30.0, 0, (w - 1) / 2], [0, 30.0, (h - 1) / 2], [0, 0, 1]])
    c2w = np.repeat(np.eye(4)[None], n, axis=0)
    c2w[:, 2, 3] = np.arange(n) * 0.2
    v, u = np.mgrid[0:h, 0:w]
    depth = np.stack([5.0 + 0.05 * u - 0.2 * i + 0.02 * v for i in range(n)]).astype(np.float32)
    texture = rng.integers(0, 255, (h, w + n, 3), dtype=np.uint8)
    images = np.stack([texture[:, i:i + w] for i in range(n)])
    return Sequence(images, depth, c2w, np.repeat(K[None], n, axis=0), "toy")


def test_tiny_model_overfits_one_long_sequence():
    """Regression errors (camera L1 + depth + points) on one fixed 3-chunk sequence fall ≥ 5×."""
    model = _tiny_model()
    seq = _toy_sequence()
    targets = [chunk_targets(seq, reference_first_order(s, e), 80.0) for s, e in ((0, 6), (3, 9), (6, 12))]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    cfg = LossConfig()

    def errors(terms):
        return float((terms["camera"] + terms["depth_reg"] + terms["points_reg"]).detach())

    history = []
    for _ in range(120):
        opt.zero_grad()
        outs = forward_chunks(model, [t["images"] for t in targets], sync=True)
        terms = [chunk_loss(o, t, cfg) for o, t in zip(outs, targets)]
        (sum(t["total"] for t in terms) / len(terms)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(sum(errors(t) for t in terms) / len(terms))
    assert min(history[-5:]) * 5 <= history[0], (history[0], history[-5:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_gradients_equal_one_process(tmp_path):
    """Chunks of one sequence spread over 2 ranks: the same slow-weight gradients as one process."""
    # A step whose draw has 3 chunks (uneven over 2 ranks: 1 + 2).
    step = next(s for s in range(100) if np.random.default_rng([0, s]).integers(1, 4) == 3)
    out = tmp_path / "rank0.pt"
    port = str(_free_port())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, train_worker.__file__, str(r), "2", port, str(out), str(step)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a training rank hung")
        assert p.returncode == 0, err[-2000:]
    distributed = torch.load(out, weights_only=True)
    single, n_chunks = train_worker.gradients(train_worker.build_trainer(str(tmp_path / "single"), step))
    assert n_chunks == distributed["chunks"] == 3
    assert set(single) == set(distributed["grads"])
    for name, g in single.items():
        # float64 rounding: the ranks' partial sums are added in another order than one process's.
        scale = g.abs().max().item()
        torch.testing.assert_close(distributed["grads"][name], g, rtol=1e-9, atol=1e-9 * scale + 1e-15, msg=name)


def _render_sequence(root, frames=8, seed=7):
    from scal3r.data.synthetic import SynthConfig, generate

    return generate(SynthConfig.preset("city", frames=frames, seed=seed, width=84, height=56, trajectory="noloop",
                                       texture_size=64), root)


def _train(args, **kw):
    from scal3r.cli import main

    return main(["train", "--preset", "tiny", "--quiet", "--threads", "2"] + list(args), **kw)


def _state(path):
    return torch.load(path, weights_only=True)


def test_resume_reproduces_the_next_steps_exactly(tmp_path):
    """4 steps in one go == 2 steps, stop, --resume to 4: same weights, optimizer state and log."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _train(["--out", str(whole), "--steps", "4", "--checkpoint-every", "2"]) == 0
    assert _train(["--out", str(split), "--steps", "4", "--checkpoint-every", "2", "--stop-after", "2"]) == 0
    assert _state(split / "checkpoint.pt")["step"] == 2
    # The run's recipe (budget included) comes from its checkpoint.
    assert _train(["--out", str(split), "--resume"]) == 0
    a, b = _state(whole / "checkpoint.pt"), _state(split / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert all(torch.equal(va[n], vb[n]) for n in va), ka
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    with open(whole / "log.csv") as fa, open(split / "log.csv") as fb:
        assert strip(csv.DictReader(fa)) == strip(csv.DictReader(fb))
    assert (split / "loss.png").stat().st_size > 0


def test_trained_weights_load_without_a_preset(tmp_path):
    """model.safetensors carries its configuration: the reconstruct resolver needs no --preset."""
    from scal3r.model.bundled import read_stored_model
    from scal3r.pipeline import ReconstructConfig
    from scal3r.pipeline.run import build_model, resolve_model

    assert _train(["--out", str(tmp_path / "run"), "--steps", "1"]) == 0
    weights = tmp_path / "run" / "model.safetensors"
    stored = read_stored_model(weights)
    assert stored.config is not None and stored.config.aggregator.embed_dim == 64 and stored.step == 1
    resolved = resolve_model(ReconstructConfig(input="x", out="y", weights=str(weights)))
    assert (resolved.block_size, resolved.overlap, resolved.resolution) == (6, 3, 84)
    model, _, trained = build_model(resolved)
    assert trained and model.config == stored.config


def test_resume_with_another_preset_is_refused(tmp_path, capsys):
    assert _train(["--out", str(tmp_path), "--steps", "1"]) == 0
    capsys.readouterr()
    from scal3r.cli import main

    assert main(["train", "--preset", "compact", "--out", str(tmp_path), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preset 'tiny'" in err[0] and "'compact'" in err[0]
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--match-weight", "--camera-weight"])
def test_negative_loss_weight_is_one_line_and_writes_nothing(tmp_path, capsys, flag):
    from scal3r.cli import main

    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--steps", "1", flag, "-1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
    assert not out.exists()


@pytest.mark.parametrize("damage, message", [
    ("remove_pose_file", "missing poses_kitti.txt"),
    ("drop_depth_map", "do not match"),
    ("nan_depth", "NaN"),
    ("too_few_frames", "fewer than one chunk"),
    ("empty_root", "expected a sequence folder"),
])
def test_bad_training_folder_gives_one_line_and_exit_2(tmp_path, capsys, damage, message):
    from scal3r.io.trajectory import read_kitti, write_kitti

    seq = _render_sequence(tmp_path / "data" / "seq0")
    if damage == "remove_pose_file":
        (seq / "poses_kitti.txt").unlink()
    elif damage == "drop_depth_map":
        sorted((seq / "depth").glob("*.npy"))[-1].unlink()
    elif damage == "nan_depth":
        path = sorted((seq / "depth").glob("*.npy"))[0]
        d = np.load(path)
        d[3, 4] = np.nan
        np.save(path, d)
    elif damage == "too_few_frames":
        for kind, pattern in (("images", "*.png"), ("depth", "*.npy")):
            for p in sorted((seq / kind).glob(pattern))[4:]:
                p.unlink()
        write_kitti(seq / "poses_kitti.txt", read_kitti(seq / "poses_kitti.txt")[:4])
    elif damage == "empty_root":
        import shutil

        shutil.rmtree(seq)
    code = _train(["--out", str(tmp_path / "run"), "--steps", "1", "--data", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_folder_dataset_trains(tmp_path):
    _render_sequence(tmp_path / "data" / "seq0", frames=12)
    assert _train(["--out", str(tmp_path / "run"), "--steps", "2", "--data", str(tmp_path / "data")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [r["step"] for r in rows] == ["0", "1"] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert all(r["sample"].startswith("seq0[") for r in rows)


def test_pose_spread_tells_a_collapsed_head_from_one_that_follows_the_frames():
    from scal3r.train.losses import pose_spread

    gt = torch.zeros(6, 9)
    gt[:, 2] = torch.linspace(0, 0.5, 6)
    collapsed = gt.clone()
    collapsed[1:, :3] = gt[1:, :3].mean(0)
    assert float(pose_spread(collapsed, gt)) == 0.0
    assert abs(float(pose_spread(gt, gt)) - 1.0) < 1e-6
    assert abs(float(pose_spread(2 * gt, gt)) - 2.0) < 1e-6
    assert float(pose_spread(gt[:2], gt[:2])) == 0.0  # too few frames to spread
