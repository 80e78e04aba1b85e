"""`scal3r reconstruct`: the output folder, and every bad-input case of the issue.

Small frames (84 px wide), the `tiny` preset with random weights, chunks of 4 frames: each run is
about a second. Errors must give one `scal3r: error:` line on stderr, a non-zero exit code and no
output directory (nor a temporary one) left behind.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scal3r.cli import main
from scal3r.io.export import read_colmap_images
from scal3r.io.intrinsics import read_intrinsics
from scal3r.io.ply import read_ply
from scal3r.io.trajectory import quaternion_to_matrix, read_kitti, read_tum, write_kitti

try:
    import matplotlib  # noqa: F401

    HAS_MATPLOTLIB = True
except ImportError:  # trajectory.png is then skipped with a warning
    HAS_MATPLOTLIB = False

TINY = ["--preset", "tiny", "--block-size", "4", "--overlap", "2", "--quiet"]


def _frame(i: int, w: int = 96, h: int = 64) -> np.ndarray:
    """A textured frame that shifts with i (so frames differ but overlap)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(h, w + 64, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w + 64]
    base[..., 0] = ((xx * 4 + yy * 2) % 256).astype(np.uint8)
    return np.ascontiguousarray(base[:, 2 * i: 2 * i + w])


def _write_frames(folder, n: int, **kw):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_frame(i, **kw)).save(folder / f"frame{i:03d}.png")
    return folder


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_clean_failure(code, err, out_dir, fragment):
    lines = [l for l in err.splitlines() if l.strip()]
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("scal3r: error:") and fragment in lines[0], lines[0]
    assert not out_dir.exists()
    assert not any(p.name.startswith(f".{out_dir.name}.") for p in out_dir.parent.iterdir())


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    return _write_frames(tmp_path_factory.mktemp("in") / "frames", 10)


@pytest.fixture(scope="module")
def result(frames_dir, tmp_path_factory):
    """One full run with a KITTI ground truth (the frames' true poses are unknown: any path works)."""
    root = tmp_path_factory.mktemp("out")
    gt = root / "gt_kitti.txt"
    c2w = np.tile(np.eye(4), (10, 1, 1))
    c2w[:, 0, 3] = np.arange(10) * 0.5
    c2w[:, 2, 3] = np.sin(np.arange(10))
    write_kitti(gt, c2w)
    out = root / "rec"
    code = main(["reconstruct", str(frames_dir), "--out", str(out), *TINY, "--gt", str(gt)])
    assert code == 0
    return out


def test_output_folder_layout(result):
    names = {p.name for p in result.iterdir()}
    assert {"trajectory_tum.txt", "trajectory_kitti.txt", "mat.txt", "intrinsics.json", "frames.txt", "depth",
            "confidence", "points.ply", "colmap", "summary.json", "gt_trajectory_kitti.txt"} <= names
    assert ("trajectory.png" in names) == HAS_MATPLOTLIB
    assert ".work" not in names
    assert not any(p.name.startswith(".rec.") for p in result.parent.iterdir())


def test_trajectories_agree(result):
    kitti = read_kitti(result / "trajectory_kitti.txt")
    t, tum = read_tum(result / "trajectory_tum.txt")
    assert kitti.shape == (10, 4, 4)
    np.testing.assert_allclose(tum, kitti, atol=1e-9)
    np.testing.assert_array_equal(t, np.arange(10.0))  # image names without timestamps: frame numbers
    np.testing.assert_allclose(np.linalg.det(kitti[:, :3, :3]), 1.0, atol=1e-9)
    mat = np.loadtxt(result / "mat.txt")
    assert mat.shape == (10, 16)
    release = mat.reshape(10, 4, 4)
    # The release's c2w carries the chunk scale in its rotation block; the centres are ours.
    np.testing.assert_allclose(release[:, :3, 3], kitti[:, :3, 3], atol=1e-5)


def test_intrinsics_and_depth(result):
    intr = read_intrinsics(result / "intrinsics.json")
    assert intr.K.shape == (10, 3, 3)
    assert (intr.width, intr.height) == (84, 56)
    doc = json.loads((result / "intrinsics.json").read_text())
    assert np.asarray(doc["K_input"]).shape == (10, 3, 3) and doc["input_sizes"][0] == [96, 64]
    depth = sorted((result / "depth").glob("*.npy"))
    conf = sorted((result / "confidence").glob("*.npy"))
    assert [p.name for p in depth] == [f"{i:06d}.npy" for i in range(10)] == [p.name for p in conf]
    d = np.load(depth[3])
    assert d.dtype == np.float32 and d.shape == (56, 84)


def test_points_and_colmap(result):
    cloud = read_ply(result / "points.ply")
    assert cloud.points.shape[0] > 0 and cloud.colors is not None
    cams = [l for l in (result / "colmap" / "cameras.txt").read_text().splitlines() if not l.startswith("#")]
    assert len(cams) == 10 and all(l.split()[1] == "PINHOLE" and l.split()[2:4] == ["84", "56"] for l in cams)
    images = read_colmap_images(result / "colmap" / "images.txt")
    c2w = read_kitti(result / "trajectory_kitti.txt")
    for im in images:
        i = im["id"] - 1
        qw, qx, qy, qz = im["q"]
        R = quaternion_to_matrix(np.array([[qx, qy, qz, qw]]))[0]
        np.testing.assert_allclose(R, c2w[i, :3, :3].T, atol=1e-6)  # world-to-camera rotation
        np.testing.assert_allclose(im["t"], -R @ c2w[i, :3, 3], atol=1e-5)
        assert (result / "colmap" / "images" / im["name"]).is_file()
    pts = [l for l in (result / "colmap" / "points3D.txt").read_text().splitlines() if not l.startswith("#")]
    assert 0 < len(pts) <= cloud.points.shape[0]


def test_summary(result):
    s = json.loads((result / "summary.json").read_text())
    assert s["frames"] == 10 and s["chunks"] == 4 and s["size"] == [84, 56]
    assert {"enabled", "candidates", "loop_chunks", "accepted", "edges"} <= set(s["loops"])
    for stage in ("decode", "network", "backend", "fusion", "export", "evaluate"):
        assert s["stages"][stage]["seconds"] >= 0 and s["stages"][stage]["peak_rss_mib"] > 0
    assert s["device"]["device"] == "cpu" and s["device"]["dtype"] == "float32"
    assert {"scal3r", "torch", "numpy", "python"} <= set(s["versions"])
    assert s["settings"]["block_size"] == 4 and s["model"]["trained"] is False
    m = s["metrics"]
    for key in ("ate", "path_length", "rpe_trans", "rpe_rot_deg"):
        assert key in m
    assert m["path_length"] == pytest.approx(float(np.sum(np.linalg.norm(np.diff(
        np.stack([np.arange(10) * 0.5, np.zeros(10), np.sin(np.arange(10))], 1), axis=0), axis=1))))


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_plot_is_png(result):
    assert (result / "trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refuses_existing_output_then_overwrites(frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--no-loop")
    assert code != 0 and "already exists" in err and "--overwrite" in err
    assert len([l for l in err.splitlines() if l.strip()]) == 1
    assert (out / "keep.txt").read_text() == "mine"
    code, stdout, _ = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--no-loop", "--overwrite")
    assert code == 0 and "reconstructed 10 frames" in stdout
    assert not (out / "keep.txt").exists() and (out / "summary.json").is_file()


def test_missing_path(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", tmp_path / "nope", "--out", out, *TINY)
    _assert_clean_failure(code, err, out, "no such file or directory")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", tmp_path / "empty", "--out", out, *TINY)
    _assert_clean_failure(code, err, out, "no images")


def test_no_decodable_frames(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", folder, "--out", out, *TINY)
    _assert_clean_failure(code, err, out, "no decodable frames")


def _with_corrupt(tmp_path):
    folder = _write_frames(tmp_path / "mixed", 6)
    data = (folder / "frame003.png").read_bytes()
    (folder / "frame003.png").write_bytes(data[: len(data) // 3])  # truncated: header fine, pixels not
    return folder


def test_corrupt_image_skipped_with_warning(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "reconstruct", _with_corrupt(tmp_path), "--out", out, *TINY, "--no-loop")
    assert code == 0
    assert "scal3r: warning:" in err and "frame003.png" in err
    assert "reconstructed 5 frames" in stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 5 and len(s["input"]["skipped"]) == 1


def test_corrupt_image_strict_fails(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", _with_corrupt(tmp_path), "--out", out, *TINY, "--strict")
    _assert_clean_failure(code, err, out, "strict")


def test_mixed_sizes_resized_with_warning(tmp_path, capsys):
    folder = _write_frames(tmp_path / "sizes", 6)
    Image.fromarray(_frame(2, w=128, h=96)).save(folder / "frame002.png")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", folder, "--out", out, *TINY, "--no-loop")
    assert code == 0 and "resizing" in err
    assert np.load(out / "depth" / "000002.npy").shape == (56, 84)


def test_unreadable_video(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", video, "--out", out, *TINY)
    _assert_clean_failure(code, err, out, "clip.mp4")


def test_fewer_than_two_frames(tmp_path, capsys):
    folder = _write_frames(tmp_path / "one", 1)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", folder, "--out", out, *TINY)
    _assert_clean_failure(code, err, out, "at least 2")


def test_checkpoint_that_does_not_fit(frames_dir, tmp_path, capsys):
    from scal3r import Scal3R

    state = Scal3R.from_preset("tiny").state_dict()
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    ckpt = tmp_path / "wrong.pt"
    torch.save(state, ckpt)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--weights", ckpt)
    _assert_clean_failure(code, err, out, "does not fit")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--device", "cuda")
    _assert_clean_failure(code, err, out, "CUDA is not available")


def test_bad_chunking(frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, "--preset", "tiny", "--quiet",
                        "--block-size", "4", "--overlap", "4")
    _assert_clean_failure(code, err, out, "--overlap")


def test_interrupt_leaves_nothing(frames_dir, tmp_path, capsys, monkeypatch):
    import scal3r.pipeline.run as rec

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rec, "_export", boom)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--no-loop")
    assert code == 130 and "interrupted" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_image_list_input(frames_dir, tmp_path, capsys):
    listing = tmp_path / "frames.txt"
    listing.write_text("# every other frame\n" + "\n".join(str(frames_dir / f"frame{i:03d}.png") for i in range(0, 10, 2)))
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, "reconstruct", listing, "--out", out, *TINY, "--no-loop")
    assert code == 0 and "reconstructed 5 frames" in stdout
    names = [l.split()[2] for l in (out / "frames.txt").read_text().splitlines()[1:]]
    assert names == [f"frame{i:03d}.png" for i in range(0, 10, 2)]


# --- what a new user hit (reliability issue) ----------------------------------------------------

def test_weights_that_are_not_a_checkpoint(frames_dir, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--weights", text)
    _assert_clean_failure(code, err, out, "is not a checkpoint")
    full = tmp_path / "full.pt"
    torch.save({"a": torch.zeros(100_000)}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[:200_000])
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--weights", cut)
    _assert_clean_failure(code, err, out, "incomplete zip archive")
    assert err.strip().endswith("incomplete zip archive")  # a whole message, not cut mid-sentence
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--weights", tmp_path)
    _assert_clean_failure(code, err, out, "is a directory")


def test_out_naming_a_file(frames_dir, tmp_path, capsys):
    target = tmp_path / "result"
    target.write_text("keep me")
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", target, *TINY)
    assert code == 2 and "is a file, not a directory" in err and target.read_text() == "keep me"


def test_max_frames_zero_is_refused(frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--max-frames", "0")
    _assert_clean_failure(code, err, out, "at least 1")


def test_summary_records_the_resolution_that_ran(frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "reconstruct", frames_dir, "--out", out, *TINY, "--no-loop", "--resolution", "85")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolution"] == 84 == summary["size"][0] and summary["requested_resolution"] == 85


def test_one_f1_threshold_default():
    from scal3r.eval.pointcloud import F1_THRESHOLD
    from scal3r.eval.sequence import EvalOptions
    from scal3r.pipeline.groundtruth import evaluate
    import inspect

    assert EvalOptions().threshold == F1_THRESHOLD
    assert inspect.signature(evaluate).parameters["threshold"].default is None  # → F1_THRESHOLD


def test_eval_matches_frame_number_timestamps_and_says_what_it_compared(tmp_path, capsys):
    """A reconstruction's TUM file (timestamps = frame numbers) against a world's (seconds)."""
    from scal3r.io.trajectory import write_tum

    rng = np.random.default_rng(4)
    n_gt = 240
    c2w = np.repeat(np.eye(4)[None], n_gt, axis=0)
    c2w[:, 0, 3] = np.cumsum(rng.normal(1.0, 0.1, n_gt))
    c2w[:, 2, 3] = np.sin(np.arange(n_gt) / 30) * 20
    write_tum(tmp_path / "gt.txt", np.arange(n_gt) / 10.0, c2w)  # seconds at 10 Hz
    frames = np.arange(0, 240, 6)  # 40 frames
    write_tum(tmp_path / "pred.txt", frames.astype(float), c2w[frames] * np.array([1, 1, 1, 1.0]))
    code, stdout, err = _run(capsys, "eval", tmp_path / "pred.txt", tmp_path / "gt.txt")
    assert code == 0, err
    assert "40 poses compared (40 predicted, 240 in the ground truth; predicted timestamps read as ground-truth " \
           "frame numbers)" in stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["trajectory"]["matched"] == 40 and result["trajectory"]["ate"]["rmse"] < 1e-6
    # Timestamps of another clock that are not frame numbers either: refused, not 4 of 40 silently.
    write_tum(tmp_path / "pred2.txt", frames * 0.37 + 1000.5, c2w[frames])
    code, _, err = _run(capsys, "eval", tmp_path / "pred2.txt", tmp_path / "gt.txt")
    assert code == 2 and "are both in seconds" in err
