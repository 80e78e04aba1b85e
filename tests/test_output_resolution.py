"""--output-resolution input: depth, confidence and COLMAP at the original frame size, consistent
with the intrinsics written beside them (checked by reprojection against the network-size run)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def _scal3r(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "scal3r", *argv], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 200×120 drive (another aspect than the network's 84×42: frames are resized and cropped),
    reconstructed twice with the same settings: at the network size and at the input size."""
    root = tmp_path_factory.mktemp("outres")
    synth = _scal3r("synth", "--scene", "city", "--frames", "12", "--trajectory", "noloop", "--seed", "100004",
                    "--width", "200", "--height", "120", "--out", "w", "--quiet", cwd=root)
    if synth.returncode != 0:
        pytest.skip(f"synthetic world not rendered: {synth.stderr.strip().splitlines()[-1:]}")
    common = ["w/images", "--preset", "tiny", "--block-size", "6", "--overlap", "3", "--no-loop", "--quiet",
              "--intrinsics", "w/intrinsics.json"]
    for out, res in (("net", "network"), ("inp", "input")):
        r = _scal3r("reconstruct", *common, "--out", out, "--output-resolution", res, cwd=root)
        assert r.returncode == 0, r.stderr[-1500:]
    return root


def test_depth_at_input_size_reprojects_onto_the_network_depth(runs):
    intr = json.loads((runs / "inp" / "intrinsics.json").read_text())
    K_net, K_in = np.array(intr["K"][0]), np.array(intr["K_input"][0])  # OpenCV convention
    d_in = np.load(runs / "inp" / "depth" / "000000.npy")
    d_net = np.load(runs / "net" / "depth" / "000000.npy")
    assert d_in.shape == (120, 200) and d_net.shape == (intr["height"], intr["width"])
    v, u = np.nonzero(d_in > 0)
    assert 0.5 < len(u) / d_in.size < 1  # the crop's border has no depth, the rest has
    X = np.linalg.inv(K_in) @ np.stack([u, v, np.ones_like(u)]).astype(float) * d_in[v, u]
    x = K_net @ X
    col, row = np.rint(x[0] / x[2]).astype(int), np.rint(x[1] / x[2]).astype(int)
    inside = (col >= 0) & (col < d_net.shape[1]) & (row >= 0) & (row < d_net.shape[0])
    assert inside.mean() > 0.99
    np.testing.assert_allclose(d_net[row[inside], col[inside]], d_in[v, u][inside], rtol=1e-6)


def test_colmap_at_input_size(runs):
    intr = json.loads((runs / "inp" / "intrinsics.json").read_text())
    K_in = np.array(intr["K_input"][0])
    line = (runs / "inp" / "colmap" / "cameras.txt").read_text().splitlines()[-1].split()
    assert line[1] == "PINHOLE" and (int(line[2]), int(line[3])) == (200, 120)
    fx, fy, cx, cy = map(float, line[4:8])
    # COLMAP puts pixel centres at +0.5, OpenCV at integers.
    np.testing.assert_allclose([fx, fy, cx, cy], [K_in[0, 0], K_in[1, 1], K_in[0, 2] + 0.5, K_in[1, 2] + 0.5],
                               rtol=1e-9)
    from PIL import Image

    with Image.open(runs / "inp" / "colmap" / "images" / "000000.jpg") as im:
        assert im.size == (200, 120)
    # The given calibration survives the round trip through the network size.
    given = json.loads((runs / "w" / "intrinsics.json").read_text())["K"]
    np.testing.assert_allclose(K_in, given, rtol=1e-9, atol=1e-9)
