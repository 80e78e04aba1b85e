"""io.export (atomic folder, cameras, COLMAP) and viz.plots, without running the network."""

import json

import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.geometry.camera import camera_rays
from scal3r.io.export import (AtomicDirectory, opencv_intrinsics, read_colmap_images, write_colmap,
                              write_intrinsics_json, write_json, write_release_mat)
from scal3r.io.intrinsics import read_intrinsics
from scal3r.io.trajectory import quaternion_to_matrix
from scal3r.viz.plots import LoopEdge, plot_trajectory, top_down_basis


def _poses(n=12, seed=0):
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        q = rng.normal(size=4)
        c2w[i, :3, :3] = quaternion_to_matrix(q[None])[0]
        c2w[i, :3, 3] = rng.normal(size=3) * 5
    return c2w


def test_atomic_directory_success_and_failure(tmp_path):
    target = tmp_path / "out"
    with AtomicDirectory(target) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(InputError, match="already exists"):
        with AtomicDirectory(target):
            pass
    with pytest.raises(RuntimeError):
        with AtomicDirectory(target, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # old output kept, no temporary left
    assert (target / "a.txt").is_file() and not (target / "b.txt").exists()
    with AtomicDirectory(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_intrinsics_json_convention(tmp_path):
    # A K in the geometry's convention (pixel centres at +0.5) and the file's OpenCV K give the
    # same ray for the same pixel.
    K = np.array([[[100.0, 0, 42.0], [0, 90.0, 28.0], [0, 0, 1]]] * 2)
    write_intrinsics_json(tmp_path / "i.json", K, 84, 56)
    intr = read_intrinsics(tmp_path / "i.json")
    assert (intr.width, intr.height) == (84, 56)
    rays = camera_rays(K[0], 56, 84)
    u, v = 17, 40
    ray = np.linalg.inv(intr.K[0]) @ np.array([u, v, 1.0])
    np.testing.assert_allclose(ray, rays[v, u], atol=1e-12)
    np.testing.assert_allclose(opencv_intrinsics(K)[:, :2, 2], K[:, :2, 2] - 0.5)


def test_non_finite_values_become_json_null(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": np.float32(np.inf), "c": np.arange(2)})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": None, "c": [0, 1]}


def test_colmap_model(tmp_path):
    c2w = _poses()
    K = np.tile(np.array([[80.0, 0, 42], [0, 80.0, 28], [0, 0, 1]]), (12, 1, 1))
    names = [f"{i:06d}.jpg" for i in range(12)]
    pts = np.random.default_rng(1).normal(size=(100, 3))
    write_colmap(tmp_path, c2w, K, 84, 56, names, pts, np.random.default_rng(2).random((100, 3)))
    images = read_colmap_images(tmp_path / "images.txt")
    assert [im["name"] for im in images] == names
    for im in images:
        qw, qx, qy, qz = im["q"]
        assert qw >= 0
        R = quaternion_to_matrix(np.array([[qx, qy, qz, qw]]))[0]
        w2c = np.linalg.inv(c2w[im["id"] - 1])
        np.testing.assert_allclose(R, w2c[:3, :3], atol=1e-12)
        np.testing.assert_allclose(im["t"], w2c[:3, 3], atol=1e-12)
    cams = [l.split() for l in (tmp_path / "cameras.txt").read_text().splitlines() if not l.startswith("#")]
    assert cams[0] == ["1", "PINHOLE", "84", "56", "80.0", "80.0", "42.0", "28.0"]
    rows = [l.split() for l in (tmp_path / "points3D.txt").read_text().splitlines() if not l.startswith("#")]
    assert len(rows) == 100 and len(rows[0]) == 8
    np.testing.assert_allclose([float(x) for x in rows[5][1:4]], pts[5], atol=1e-6)


def test_release_mat(tmp_path):
    c2w = _poses(3)
    c2w[:, :3, :3] *= 2.0
    write_release_mat(tmp_path / "mat.txt", c2w)
    back = np.loadtxt(tmp_path / "mat.txt").reshape(3, 4, 4)
    np.testing.assert_allclose(back, c2w, atol=1e-6)


def test_top_down_basis_is_the_ground_plane():
    # Cameras of a drive: y (down) along world −z here, moving in the x–y plane.
    n = 20
    c2w = np.tile(np.eye(4), (n, 1, 1))
    R = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # camera x→x, y→−z, z→y
    c2w[:, :3, :3] = R
    c2w[:, 0, 3] = np.linspace(0, 10, n)
    basis = top_down_basis(c2w)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(basis @ np.array([0, 0, 1.0]), 0, atol=1e-12)  # up is out of the plot
    np.testing.assert_allclose(basis[1], [0, 1, 0], atol=1e-12)  # forward: the first camera's view


def test_plot_trajectory(tmp_path):
    pytest.importorskip("matplotlib")
    c2w = _poses(30)
    plot_trajectory(tmp_path / "t.png", c2w, [LoopEdge(0, 29, True), LoopEdge(3, 20, False)], gt_c2w=c2w)
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
