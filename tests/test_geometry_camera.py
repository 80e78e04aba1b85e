import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.chunks import ascending_order, network_order, reference_row
from scal3r.geometry.camera import (decode_pose_encoding, encode_pose_encoding, intrinsics_from_fov, invert_rigid,
                                    project_points, quat_to_rotation, rotation_to_quat, unproject_depth)
from scal3r.geometry.sim3 import so3_exp


def _random_rigid(rng, n):
    T = np.zeros((n, 4, 4))
    T[:, :3, :3] = so3_exp(rng.normal(size=(n, 3)))
    T[:, :3, 3] = rng.normal(size=(n, 3))
    T[:, 3, 3] = 1
    return T


def test_reference_row_is_release_middle():
    # release: middle = ceil(n/2) - 1; src_inds = [middle, 0..middle-1, middle+1..n-1]
    assert [reference_row(n) for n in (1, 2, 3, 8, 9, 60)] == [0, 0, 1, 3, 4, 29]
    np.testing.assert_array_equal(network_order(8), [3, 0, 1, 2, 4, 5, 6, 7])
    for n in (1, 2, 7, 8, 60):
        np.testing.assert_array_equal(network_order(n)[ascending_order(n)], np.arange(n))
    with pytest.raises(InputError):
        reference_row(0)


def test_quaternion_convention_xyzw():
    # 90° about z: (x, y, z, w) = (0, 0, sin 45°, cos 45°) maps x to y.
    R = quat_to_rotation(np.array([0, 0, np.sqrt(0.5), np.sqrt(0.5)]))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    # Scale of the quaternion does not matter; round trip through rotation_to_quat.
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    R = quat_to_rotation(3.7 * q)
    np.testing.assert_allclose(quat_to_rotation(rotation_to_quat(R)), R, atol=1e-12)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(1)
    w2c = _random_rigid(rng, 10)
    K = intrinsics_from_fov(rng.uniform(0.5, 1.5, 10), rng.uniform(0.5, 1.5, 10), 56, 84)
    enc = encode_pose_encoding(w2c, K, 56, 84)
    w2c2, K2 = decode_pose_encoding(enc, 56, 84)
    np.testing.assert_allclose(w2c2, w2c, atol=1e-12)
    np.testing.assert_allclose(K2, K, atol=1e-10)
    assert K2[0, 0, 2] == 42 and K2[0, 1, 2] == 28


def test_decode_rejects_bad_encodings():
    enc = np.zeros((2, 9))
    enc[:, 6] = 1
    enc[:, 7:] = 1
    decode_pose_encoding(enc, 8, 8)
    bad = enc.copy()
    bad[0, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        decode_pose_encoding(bad, 8, 8)
    bad = enc.copy()
    bad[1, 3:7] = 0
    with pytest.raises(InputError, match="zero quaternion"):
        decode_pose_encoding(bad, 8, 8)
    with pytest.raises(InputError, match="9 values"):
        decode_pose_encoding(np.zeros((2, 7)), 8, 8)


def test_unproject_then_project_is_identity_at_pixel_centres():
    rng = np.random.default_rng(2)
    H, W = 5, 7
    w2c = _random_rigid(rng, 3)
    K = intrinsics_from_fov(np.full(3, 0.9), np.full(3, 1.2), H, W)
    depth = rng.uniform(1, 10, size=(3, H, W, 1))
    pts = unproject_depth(depth, w2c, K)
    for i in range(3):
        uv, z = project_points(pts[i], w2c[i], K[i])
        v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        np.testing.assert_allclose(uv[..., 0], u + 0.5, atol=1e-9)
        np.testing.assert_allclose(uv[..., 1], v + 0.5, atol=1e-9)
        np.testing.assert_allclose(z, depth[i, ..., 0], atol=1e-9)
    # The camera centre is -Rᵀt.
    c2w = invert_rigid(w2c)
    np.testing.assert_allclose(c2w @ w2c, np.broadcast_to(np.eye(4), (3, 4, 4)), atol=1e-12)
