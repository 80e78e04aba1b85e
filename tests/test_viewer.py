"""`scal3r view`: the folder reader, and the viser page for real in headless Chromium.

The browser test needs viser and Debian's `chromium` (skipped without them): it serves a small
reconstruction folder on 127.0.0.1, lets Chromium load the page (background networking off, a fresh
profile), and checks that the page built its WebGL canvas and drew something.
"""

import json
import shutil
import socket
import subprocess

import numpy as np
import pytest

from scal3r.cli import main
from scal3r.io.export import write_intrinsics_json, write_points, write_trajectories
from scal3r.io.trajectory import write_kitti
from scal3r.viz.viewer import load_scene


def _folder(root):
    n = 30
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3], c2w[:, 2, 3] = 10 * np.cos(t), 10 * np.sin(t)
    root.mkdir()
    write_trajectories(root, c2w, np.arange(n, dtype=float))
    K = np.tile(np.array([[60.0, 0, 42], [0, 60.0, 28], [0, 0, 1]]), (n, 1, 1))
    write_intrinsics_json(root / "intrinsics.json", K, 84, 56)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(5000, 3)) * [8, 1, 8]
    write_points(root / "points.ply", pts, rng.random((5000, 3)))
    gt = c2w.copy()
    gt[:, 1, 3] += 0.5
    write_kitti(root / "gt_trajectory_kitti.txt", gt)
    (root / "summary.json").write_text(json.dumps({"frames": n, "chunks": 3, "loops": {
        "edges": [{"frame_a": 0, "frame_b": 29, "accepted": True}]}}))
    return root


def test_load_scene(tmp_path):
    scene = load_scene(_folder(tmp_path / "rec"), max_points=1000)
    assert scene.c2w.shape == (30, 4, 4) and scene.points.shape == (1000, 3)
    assert scene.colors.dtype == np.uint8 and scene.gt_c2w.shape == (30, 4, 4)
    assert scene.loops == [(0, 29, True)]
    np.testing.assert_allclose(scene.fov_y, 2 * np.arctan(56 / 120), rtol=1e-6)
    assert scene.aspect == pytest.approx(1.5)


def test_view_rejects_a_folder_without_a_reconstruction(tmp_path, capsys):
    code = main(["view", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a scal3r reconstruction" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, profile, *flags, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           "--disable-extensions", "--disable-sync", "--disable-component-update", f"--user-data-dir={profile}",
           "--window-size=1280,800", "--virtual-time-budget=8000", *flags, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Debian chromium is not installed (apt-get install chromium)")
def test_viewer_page_renders_in_chromium(tmp_path):
    pytest.importorskip("viser")
    from PIL import Image

    from scal3r.viz.viewer import start_viewer

    scene = load_scene(_folder(tmp_path / "rec"))
    server = start_viewer(scene, host="127.0.0.1", port=_free_port())
    try:
        url = f"http://127.0.0.1:{server.get_port()}"
        dom = _chromium(url, tmp_path / "profile1", "--dump-dom")
        assert "<canvas" in dom.stdout, dom.stderr[-2000:]
        shot = tmp_path / "shot.png"
        _chromium(url, tmp_path / "profile2", f"--screenshot={shot}")
        image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
        assert image.shape[:2] == (800, 1280)
        assert image.std() > 5  # not a blank page: the scene and the GUI panel were drawn
    finally:
        server.stop()
