"""The reconstruct pipeline beyond the CLI surface: video input, loop chunks in the same network
pass, streamed chunk outputs, offload, bf16, release configs, and the `scal3r demo` command."""

import json
import time

import numpy as np
import pytest

from scal3r.cli import main
from scal3r.errors import InputError
from scal3r.geometry import LoopCandidate
from scal3r.io.trajectory import read_kitti, read_tum
from scal3r.pipeline import ReconstructConfig, reconstruct
from scal3r.pipeline.chunkstore import ChunkOutputStore
from scal3r.chunks import feed_order
from scal3r.pipeline.loops import LoopPlan

from test_cli_reconstruct import TINY, _frame, _write_frames


def _config(input, out, **kw):
    base = dict(input=str(input), out=str(out), preset="tiny", block_size=4, overlap=2, loop=False)
    base.update(kw)
    return ReconstructConfig(**base)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    return _write_frames(tmp_path_factory.mktemp("frames") / "f", 10)


def test_chunk_store_sorts_rows_and_maps_files(tmp_path):
    import torch

    store = ChunkOutputStore(tmp_path)
    out = {"frames": torch.tensor([5, 3, 4, 6]), "pose_enc": torch.arange(36.0).reshape(4, 9),
           "depth": torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 2, 3, 1), "depth_conf": torch.ones(4, 2, 3),
           "world_points": torch.zeros(4, 2, 3, 3)}
    store.write(0, out)
    back = store.load(0)
    np.testing.assert_array_equal(back["frames"], [3, 4, 5, 6])
    np.testing.assert_array_equal(back["depth"][:, 0, 0], [1, 2, 0, 3])
    assert isinstance(back["depth"], np.memmap) and back["depth"].shape == (4, 2, 3)
    assert not list(tmp_path.glob("*world_points*"))  # the backend does not read it: not kept


def test_feed_order_puts_the_middle_first():
    assert feed_order([7, 3, 5, 4]) == [4, 3, 5, 7]
    assert feed_order([1, 2, 3]) == [2, 1, 3]


def test_loop_chunk_runs_in_the_same_network_pass(frames_dir, tmp_path, monkeypatch):
    import scal3r.engine.runner as runner
    import scal3r.pipeline.loops as loops

    calls = []
    real = runner.run_chunks

    def spy(model, images, chunks, **kw):
        calls.append([list(c) for c in chunks])
        assert kw.get("on_output") is not None  # outputs are streamed, never gathered
        return real(model, images, chunks, **kw)

    monkeypatch.setattr(runner, "run_chunks", spy)
    monkeypatch.setattr(loops, "plan_loops", lambda *a, **k: LoopPlan([LoopCandidate(1, 8, 0.99)],
                                                                       [np.array([0, 1, 2, 7, 8, 9])]))
    result = reconstruct(_config(frames_dir, tmp_path / "out", loop=True))
    assert len(calls) == 1 and len(calls[0]) == 5  # 4 sequential chunks + 1 loop chunk, one call
    assert calls[0][4] == [2, 0, 1, 7, 8, 9]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["loops"]["loop_chunks"] == 1 and s["network_chunks"] == 5
    assert len(s["loops"]["edges"]) == 1 and s["loops"]["edges"][0]["frame_a"] == 1
    assert result.loop_chunks == 1


def test_offload_and_bf16_give_the_same_outputs_format(frames_dir, tmp_path):
    a = reconstruct(_config(frames_dir, tmp_path / "a", max_frames=6))
    b = reconstruct(_config(frames_dir, tmp_path / "b", max_frames=6, offload=True))
    np.testing.assert_allclose(read_kitti(tmp_path / "a" / "trajectory_kitti.txt"),
                               read_kitti(tmp_path / "b" / "trajectory_kitti.txt"), atol=1e-6)
    # bf16 autocast is slow on CPU: one chunk is enough to see it taken up.
    c = reconstruct(_config(frames_dir, tmp_path / "c", dtype="bf16", max_frames=4))
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["device"]["dtype"] == "bfloat16"
    assert a.frames == b.frames == 6 and c.frames == 4


def test_video_input_with_stride_and_timestamps(tmp_path, capsys):
    pytest.importorskip("av")
    from scal3r.io.video import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, [_frame(i, w=96, h=64) for i in range(16)], fps=8.0)
    out = tmp_path / "out"
    code = main(["reconstruct", str(video), "--out", str(out), *TINY, "--no-loop", "--stride", "2", "--max-frames", "6"])
    assert code == 0, capsys.readouterr().err
    t, c2w = read_tum(out / "trajectory_tum.txt")
    np.testing.assert_allclose(t, np.arange(6) * 2 / 8.0, atol=1e-6)  # video times of frames 0, 2, …, 10
    assert c2w.shape == (6, 4, 4)
    frames = (out / "frames.txt").read_text().splitlines()[1:]
    assert [int(l.split()[1]) for l in frames] == [0, 2, 4, 6, 8, 10]


def test_release_config_json(frames_dir, tmp_path):
    cfg = {"model_cfg": {"sampler_cfg": {
        "agg_regator_cfg": {"img_size": 84, "patch_size": 14, "embed_dim": 64, "depth": 6, "num_heads": 4,
                            "patch_embed": "conv", "global_use_ttt": True, "ttt_layer_idx": [3, 5],
                            "intermediate_layer_idx": [1, 2, 4, 5]},
        "xyz_decoder_cfg": {"features": 32, "out_channels": [16, 32, 64, 64]},
        "dpt_decoder_cfg": {"features": 32, "out_channels": [16, 32, 64, 64]}}}}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(cfg))
    result = reconstruct(_config(frames_dir, tmp_path / "out", preset="official", model_config=str(path)))
    assert result.frames == 10
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["model"]["config"] == str(path) and s["size"] == [84, 56]


def test_bad_release_config(frames_dir, tmp_path):
    path = tmp_path / "model.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        reconstruct(_config(frames_dir, tmp_path / "out", model_config=str(path)))
    assert not (tmp_path / "out").exists()


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--frames", "60", "--out", str(out), "--preset", "tiny", "--resolution", "84",
                 "--block-size", "12", "--overlap", "6", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "UNTRAINED" in captured.err and "meaningless" in captured.err
    assert "UNTRAINED" in captured.out  # said again at the end, next to the metrics
    assert "vs ground truth: ATE" in captured.out and f"scal3r view {out / 'reconstruction'}" in captured.out
    s = json.loads((out / "reconstruction" / "summary.json").read_text())
    assert s["frames"] == 60 and s["model"]["trained"] is False
    assert {"ate", "path_length", "rpe_trans", "chamfer", "f1"} <= set(s["metrics"])
    assert (out / "world" / "poses_kitti.txt").is_file()
    # A second run refuses the existing folder.
    assert main(["demo", "--frames", "60", "--out", str(out), "--preset", "tiny", "--quiet"]) == 2


def test_plan_loops_leaves_out_pairs_a_chunk_already_holds(monkeypatch):
    import scal3r.pipeline.loops as loops

    pairs = [LoopCandidate(18, 45, 0.99), LoopCandidate(5, 150, 0.98)]
    monkeypatch.setattr(loops, "find_loop_candidates", lambda d, c: pairs)
    rgb8 = np.zeros((200, 3, 64, 64), np.uint8)
    plan = loops.plan_loops(rgb8, [(0, 60), (30, 90), (60, 120), (90, 150), (120, 180), (150, 200)])
    assert [(c.frame_a, c.frame_b) for c in plan.candidates] == [(5, 150)]
    f = plan.frames[0]
    assert f.min() < 60 and f.max() >= 150


def test_stage_peaks_are_sampled_and_leave_the_process_peak_alone():
    """A 400 MiB burst in one stage shows in that stage's figure, not in the next stage's, and the
    kernel's high-water mark (what ru_maxrss, /usr/bin/time and schedulers read) still holds it."""
    import resource

    from scal3r.pipeline.monitor import StageMonitor, current_rss_mib

    monitor = StageMonitor()
    base = current_rss_mib()
    with monitor.stage("burst"):
        block = np.ones(400 * 2**20 // 8)  # touched: resident
        time.sleep(0.3)
        del block
    with monitor.stage("quiet"):
        time.sleep(0.2)
    stages = monitor.to_dict()
    assert stages["burst"]["peak_rss_mib"] >= base + 350
    assert stages["quiet"]["peak_rss_mib"] < stages["burst"]["peak_rss_mib"] - 300
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= stages["burst"]["peak_rss_mib"] - 1
    assert monitor.peak_rss_mib >= stages["burst"]["peak_rss_mib"]
