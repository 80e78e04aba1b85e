"""The model that ships with the project: found without --weights, says so, loads without --preset."""

import json

import pytest
import torch

from scal3r.cli import main
from scal3r.model.bundled import BUNDLED_NAME
from test_cli_reconstruct import _write_frames


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A tiny model trained for one step (it stores its configuration like the real one), with its
    memory read-out made to matter, as the bundled model in a models folder of its own."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    root = tmp_path_factory.mktemp("models")
    run = root / "run"
    assert main(["train", "--preset", "tiny", "--out", str(run), "--steps", "1", "--quiet"]) == 0
    tensors = load_file(str(run / "model.safetensors"))
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    g = torch.Generator().manual_seed(0)
    for key in tensors:
        if key.endswith(".ttt.proj.weight"):
            tensors[key] = torch.randn(tensors[key].shape, generator=g) * 0.05
    save_file(tensors, str(root / f"{BUNDLED_NAME}.safetensors"), metadata=meta)
    return root


@pytest.fixture
def frames_dir(tmp_path):
    return _write_frames(tmp_path / "frames", 12, w=84, h=56)


def _reconstruct(capsys, frames, out, *extra):
    code = main(["reconstruct", str(frames), "--out", str(out), "--no-loop", *map(str, extra)])
    stdout, err = capsys.readouterr()
    return code, stdout, err


def test_reconstruct_without_weights_uses_the_bundled_model_and_says_so(stand_in, frames_dir, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("SCAL3R_MODELS", str(stand_in))
    code, stdout, err = _reconstruct(capsys, frames_dir, tmp_path / "out", "--quiet")
    assert code == 0, err
    said = [l for l in (stdout + err).splitlines() if "bundled model" in l]
    assert len(said) == 1 and f"{BUNDLED_NAME}.safetensors" in said[0], stdout + err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["source"] == "bundled" and summary["model"]["trained"]
    # The chunking and resolution it was trained for (tiny: 6 / 3 frames, 84 px) are the defaults.
    assert (summary["model"]["block_size"], summary["model"]["overlap"], summary["resolution"]) == (6, 3, 84)
    assert "UNTRAINED" not in stdout + err


def test_no_sync_changes_the_outputs(stand_in, frames_dir, tmp_path, capsys, monkeypatch):
    from scal3r.io.trajectory import read_kitti

    monkeypatch.setenv("SCAL3R_MODELS", str(stand_in))
    assert _reconstruct(capsys, frames_dir, tmp_path / "sync", "--quiet")[0] == 0
    assert _reconstruct(capsys, frames_dir, tmp_path / "nosync", "--quiet", "--no-sync")[0] == 0
    a, b = (read_kitti(tmp_path / d / "trajectory_kitti.txt") for d in ("sync", "nosync"))
    assert not torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-6)
    summary = json.loads((tmp_path / "nosync" / "summary.json").read_text())
    assert summary["model"]["sync"] is False


def test_corrupt_bundled_model_is_named_in_one_line(stand_in, frames_dir, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "models"
    broken.mkdir()
    data = (stand_in / f"{BUNDLED_NAME}.safetensors").read_bytes()
    (broken / f"{BUNDLED_NAME}.safetensors").write_bytes(data[: len(data) // 3])
    monkeypatch.setenv("SCAL3R_MODELS", str(broken))
    code, stdout, err = _reconstruct(capsys, frames_dir, tmp_path / "out", "--quiet")
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("scal3r: error:") and str(broken / f"{BUNDLED_NAME}.safetensors") in lines[0]
    assert not (tmp_path / "out").exists()


def test_demo_uses_the_bundled_model(stand_in, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCAL3R_MODELS", str(stand_in))
    out = tmp_path / "demo"
    code = main(["demo", "--frames", "60", "--seed", "100007", "--out", str(out), "--quiet", "--no-loop"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert len([l for l in (stdout + err).splitlines() if "bundled model" in l]) == 1
    summary = json.loads((out / "reconstruction" / "summary.json").read_text())
    assert summary["model"]["source"] == "bundled"
    assert summary["metrics"]["ate"] >= 0 and summary["metrics"]["path_length"] > 30
    meta = json.loads((out / "world" / "meta.json").read_text())
    assert meta["config"]["seed"] == 100007 and meta["config"]["width"] == 84


def test_without_a_bundled_model_the_demo_says_it_runs_random_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCAL3R_MODELS", str(tmp_path / "no-models"))
    out = tmp_path / "demo"
    code = main(["demo", "--frames", "60", "--out", str(out), "--quiet", "--no-loop", "--resolution", "84"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert len([l for l in err.splitlines() if "bundled model" in l and "missing" in l]) == 1, err
    assert "UNTRAINED" in stdout + err
    summary = json.loads((out / "reconstruction" / "summary.json").read_text())
    assert summary["model"]["source"] == "random" and not summary["model"]["trained"]


def test_models_trained_here_refine_poses_photometrically_by_default(stand_in, frames_dir, tmp_path, capsys,
                                                                      monkeypatch):
    from scal3r.io.trajectory import read_kitti

    monkeypatch.setenv("SCAL3R_MODELS", str(stand_in))
    # A known calibration: the one-step stand-in predicts a degenerate field of view, with which the
    # refinement would (rightly) keep the head's poses.
    K = tmp_path / "K.txt"
    K.write_text("60 0 42\n0 60 28\n0 0 1\n")
    assert _reconstruct(capsys, frames_dir, tmp_path / "default", "--quiet", "--intrinsics", K)[0] == 0
    assert _reconstruct(capsys, frames_dir, tmp_path / "none", "--quiet", "--intrinsics", K,
                        "--pose-refinement", "none")[0] == 0
    default, none = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("default", "none"))
    assert default["model"]["pose_refinement"] == "photometric"
    assert none["model"]["pose_refinement"] == "none"
    a, b = (read_kitti(tmp_path / d / "trajectory_kitti.txt") for d in ("default", "none"))
    assert not torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-4)


def test_weights_without_stored_settings_keep_the_head_poses(tmp_path):
    from scal3r.pipeline import ReconstructConfig
    from scal3r.pipeline.run import resolve_model

    # A file without scal3r metadata (the official release's kind): the head's poses, unchanged.
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    resolved = resolve_model(ReconstructConfig(input="x", out=str(tmp_path / "o"), weights=str(plain)))
    assert resolved.pose_refinement == "none"


def test_the_shipped_model_loads_without_a_preset():
    """models/compact.safetensors itself (not a stand-in): its metadata names the model, the
    settings it was trained for and the pose refinement; the weights fit that model exactly."""
    from scal3r import Scal3R
    from scal3r.model.bundled import bundled_path, read_stored_model

    path = bundled_path()
    assert path.is_file(), f"the bundled model {path} is missing"
    assert path.stat().st_size <= 50 * 2**20
    stored = read_stored_model(path)
    assert stored.config is not None and stored.step is not None
    assert stored.inference["pose_refinement"] == "photometric"
    model = Scal3R(stored.config)
    notes = model.load_checkpoint(path)
    assert not [n for n in notes if "missing" in n.lower() or "unexpected" in n.lower()], notes
