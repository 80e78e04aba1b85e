"""File formats: TUM/KITTI trajectories, PLY point clouds and intrinsics JSON round-trip exactly."""

import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.io.intrinsics import read_intrinsics, write_intrinsics
from scal3r.io.ply import read_ply, write_ply
from scal3r.io.trajectory import (associate_timestamps, matrix_to_quaternion, quaternion_to_matrix,
                                  read_kitti, read_tum, tum_rows, write_kitti, write_tum)


def random_c2w(rng, n):
    q = rng.normal(size=(n, 4))
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = quaternion_to_matrix(q)
    c2w[:, :3, 3] = rng.normal(scale=100, size=(n, 3))
    return c2w


def test_quaternion_round_trip_covers_every_pivot():
    rng = np.random.default_rng(0)
    r = quaternion_to_matrix(rng.normal(size=(2000, 4)))
    # Rotations by ~π about each axis exercise the x/y/z pivots of the conversion.
    r = np.concatenate([r, np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None], np.diag([-1.0, -1, 1])[None]])
    q = matrix_to_quaternion(r)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-15)
    np.testing.assert_allclose(quaternion_to_matrix(q), r, atol=1e-14)
    # Known value: 90° about z.
    rz = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(matrix_to_quaternion(rz)[0], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-15)


def test_kitti_round_trip_is_exact(tmp_path):
    c2w = random_c2w(np.random.default_rng(1), 50)
    write_kitti(tmp_path / "p.txt", c2w)
    back = read_kitti(tmp_path / "p.txt")
    assert back.shape == (50, 4, 4) and np.array_equal(back, c2w)
    assert len((tmp_path / "p.txt").read_text().splitlines()[0].split()) == 12
    write_kitti(tmp_path / "q.txt", c2w[:, :3, :])  # 3×4 input accepted too
    assert np.array_equal(read_kitti(tmp_path / "q.txt"), c2w)


def test_tum_round_trip(tmp_path):
    c2w = random_c2w(np.random.default_rng(2), 50)
    t = np.arange(50) / 10.0
    write_tum(tmp_path / "p.txt", t, c2w)
    t_back, back = read_tum(tmp_path / "p.txt")
    assert np.array_equal(t_back, t)
    assert np.array_equal(back[:, :3, 3], c2w[:, :3, 3])
    np.testing.assert_allclose(back, c2w, atol=1e-14)
    # The numbers in the file parse back identically.
    rows = np.loadtxt(tmp_path / "p.txt")
    assert np.array_equal(rows, tum_rows(t, c2w))


def test_tum_matches_evo_reader(tmp_path):
    file_interface = pytest.importorskip("evo.tools.file_interface")
    c2w = random_c2w(np.random.default_rng(3), 20)
    write_tum(tmp_path / "p.txt", np.arange(20) * 0.1, c2w)
    traj = file_interface.read_tum_trajectory_file(str(tmp_path / "p.txt"))
    np.testing.assert_allclose(np.stack(traj.poses_se3), c2w, atol=1e-12)
    write_kitti(tmp_path / "k.txt", c2w)
    path = file_interface.read_kitti_poses_file(str(tmp_path / "k.txt"))
    np.testing.assert_allclose(np.stack(path.poses_se3), c2w, atol=1e-15)


def test_trajectory_reader_errors(tmp_path):
    with pytest.raises(InputError):
        read_kitti(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(InputError, match="12 numbers"):
        read_kitti(tmp_path / "bad.txt")
    (tmp_path / "nan.txt").write_text("0 1 2 3 a 0 0 1\n")
    with pytest.raises(InputError):
        read_tum(tmp_path / "nan.txt")


def test_associate_timestamps():
    a = np.array([0.0, 0.1, 0.2, 0.3, 0.5])
    b = np.array([0.301, 0.0, 0.105, 0.9, 0.2])
    ia, ib = associate_timestamps(a, b, max_diff=0.01)
    assert ia.tolist() == [0, 1, 2, 3] and ib.tolist() == [1, 2, 4, 0]


def test_ply_round_trip_with_and_without_colours(tmp_path):
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(1000, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    write_ply(tmp_path / "c.ply", pts, cols)
    pc = read_ply(tmp_path / "c.ply")
    assert np.array_equal(pc.points, pts.astype(np.float64)) and np.array_equal(pc.colors, cols)
    write_ply(tmp_path / "n.ply", pts)
    pc = read_ply(tmp_path / "n.ply")
    assert np.array_equal(pc.points, pts.astype(np.float64)) and pc.colors is None
    write_ply(tmp_path / "e.ply", np.zeros((0, 3)))
    assert read_ply(tmp_path / "e.ply").points.shape == (0, 3)
    # Header is standard binary little-endian.
    head = (tmp_path / "c.ply").read_bytes()[:200]
    assert b"format binary_little_endian 1.0" in head and b"property uchar red" in head


def test_ply_reader_ascii_and_extra_properties(tmp_path):
    text = ("ply\nformat ascii 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
            "property double z\nproperty float confidence\nproperty uchar red\nproperty uchar green\n"
            "property uchar blue\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
            "1 2 3 0.5 255 0 10\n4 5 6 0.25 1 2 3\n")
    (tmp_path / "a.ply").write_text(text)
    pc = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(pc.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(pc.colors, [[255, 0, 10], [1, 2, 3]])
    np.testing.assert_allclose(pc.extra["confidence"], [0.5, 0.25])


def test_ply_big_endian(tmp_path):
    pts = np.array([[1.5, -2, 3], [0, 0, 1e6]], dtype=">f4")
    header = b"ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "b.ply").write_bytes(header + pts.tobytes())
    np.testing.assert_array_equal(read_ply(tmp_path / "b.ply").points, pts.astype(np.float64))


def test_ply_errors(tmp_path):
    (tmp_path / "x.ply").write_bytes(b"not a ply\n")
    with pytest.raises(InputError):
        read_ply(tmp_path / "x.ply")
    write_ply(tmp_path / "t.ply", np.ones((10, 3)))
    data = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-5])
    with pytest.raises(InputError, match="truncated"):
        read_ply(tmp_path / "t.ply")
    with pytest.raises(InputError):
        write_ply(tmp_path / "y.ply", np.ones((10, 2)))


def test_intrinsics_round_trip(tmp_path):
    K = np.array([[300.5, 0, 258.5], [0, 300.5, 146.5], [0, 0, 1]])
    write_intrinsics(tmp_path / "k.json", K, 518, 294)
    intr = read_intrinsics(tmp_path / "k.json")
    assert np.array_equal(intr.K, K) and (intr.width, intr.height) == (518, 294)
    per_frame = np.stack([K, K * [[2], [2], [1]]])
    write_intrinsics(tmp_path / "kk.json", per_frame, 518, 294)
    assert np.array_equal(read_intrinsics(tmp_path / "kk.json").K, per_frame)
    (tmp_path / "bad.json").write_text('{"K": [1, 2]}')
    with pytest.raises(InputError):
        read_intrinsics(tmp_path / "bad.json")


def test_known_intrinsics_formats_and_refusals(tmp_path):
    from scal3r.errors import InputError
    from scal3r.io.intrinsics import read_known_intrinsics, write_intrinsics

    K = np.array([[100.0, 0, 63.5], [0, 101.0, 35.5], [0, 0, 1]])
    (tmp_path / "k.txt").write_text("\n".join(" ".join(map(str, r)) for r in K))
    np.testing.assert_array_equal(read_known_intrinsics(tmp_path / "k.txt", 3, (128, 72)), np.stack([K] * 3))
    # JSON for another image size is rescaled with pixel centres kept on centres.
    write_intrinsics(tmp_path / "k.json", K, 128, 72)
    K2 = read_known_intrinsics(tmp_path / "k.json", 2, (256, 144))[0]
    np.testing.assert_allclose(K2, [[200, 0, 127.5], [0, 202, 71.5], [0, 0, 1]])
    P = np.hstack([K, [[5.0], [0], [0]]])
    (tmp_path / "calib.txt").write_text("".join(f"P{k}: " + " ".join(map(str, (P * (k + 1)).ravel())) + "\n"
                                                for k in range(4)))
    np.testing.assert_allclose(read_known_intrinsics(tmp_path / "calib.txt", 1, (128, 72), camera=0)[0], K)
    for text, n, match in (("1 2 3", 3, "expected 9"), ("-1 0 1 0 1 1 0 0 1", 1, "positive"),
                           (" ".join(["1 0 1 0 1 1 0 0 1"] * 2), 3, "expected 9"),
                           ("1 0 1 0 1 1 0 1 1", 1, "last row")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(InputError, match=match) as e:
            read_known_intrinsics(tmp_path / "bad.txt", n, (128, 72))
        assert "\n" not in str(e.value)
    write_intrinsics(tmp_path / "per.json", np.stack([K] * 2), 128, 72)
    with pytest.raises(InputError, match="2 matrices for 3 frames"):
        read_known_intrinsics(tmp_path / "per.json", 3, (128, 72))
