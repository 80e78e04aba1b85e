"""Cameras of a chunk: the network's pose encoding, intrinsics, unprojection, reference frame.

Conventions (those of VGGT and the Scal3R release):
- OpenCV camera axes (x right, y down, z forward); pixel (u, v) = (column, row) and a pixel's
  centre is at (u + 0.5, v + 0.5).
- The pose encoding is the 9-vector `absT_quaR_FoV`: translation t (3), quaternion q (4, ordered
  x, y, z, w, i.e. i, j, k, r), field of view (fov_h, fov_w) in radians. (t, q) is the
  world-to-camera transform of the frame, where "world" is the chunk's own coordinate frame;
  the quaternion need not be unit length (it is normalised when decoded).
- Intrinsics: fx = W / 2 / tan(fov_w / 2), fy = H / 2 / tan(fov_h / 2), principal point at the
  image centre (W / 2, H / 2).
- Depth is z-depth: a pixel's point is centre + depth · R_c2w K⁻¹ (u + 0.5, v + 0.5, 1).

Everything here is float64 numpy; torch tensors are accepted and converted. The one exception,
`decode_pose_encoding_torch`, is the differentiable decode for training (same formulas).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from scal3r.errors import InputError


def as_numpy(x, dtype=np.float64) -> np.ndarray:
    """A numpy array of `dtype` from a numpy array, torch tensor or nested sequence."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().to("cpu")
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Quaternions (x, y, z, w).


def _rotation_entries(x, y, z, w):
    """The 9 row-major entries of the rotation of quaternion (x, y, z, w), any non-zero norm.

    Plain arithmetic, so numpy arrays and torch tensors (with autograd) share this one formula."""
    two_s = 2.0 / (x * x + y * y + z * z + w * w)
    return [
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    ]


def quat_to_rotation(quat) -> np.ndarray:
    """(..., 4) quaternion (x, y, z, w), any non-zero norm → (..., 3, 3) rotation matrix."""
    q = as_numpy(quat)
    m = np.stack(_rotation_entries(*np.moveaxis(q, -1, 0)), axis=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def rotation_to_quat(rotation) -> np.ndarray:
    """(..., 3, 3) rotation → (..., 4) unit quaternion (x, y, z, w) with w >= 0."""
    from scipy.spatial.transform import Rotation

    r = as_numpy(rotation)
    q = Rotation.from_matrix(r.reshape(-1, 3, 3)).as_quat()  # scipy order is (x, y, z, w)
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(r.shape[:-2] + (4,))


# ---------------------------------------------------------------------------------------------
# Pose encoding ⇄ extrinsics / intrinsics.


def intrinsics_from_fov(fov_h, fov_w, height: int, width: int) -> np.ndarray:
    """(...,) fields of view in radians → (..., 3, 3) pinhole intrinsics, centred principal point."""
    fov_h, fov_w = as_numpy(fov_h), as_numpy(fov_w)
    K = np.zeros(np.broadcast(fov_h, fov_w).shape + (3, 3))
    K[..., 0, 0] = width / 2.0 / np.tan(fov_w / 2.0)
    K[..., 1, 1] = height / 2.0 / np.tan(fov_h / 2.0)
    K[..., 0, 2] = width / 2.0
    K[..., 1, 2] = height / 2.0
    K[..., 2, 2] = 1.0
    return K


def fov_from_intrinsics(K, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(..., 3, 3) intrinsics → (fov_h, fov_w) in radians (the principal point is ignored)."""
    K = as_numpy(K)
    return 2.0 * np.arctan(height / 2.0 / K[..., 1, 1]), 2.0 * np.arctan(width / 2.0 / K[..., 0, 0])


def decode_pose_encoding(pose_enc, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(n, 9) pose encoding → w2c (n, 4, 4) in the chunk frame and K (n, 3, 3).

    Raises InputError on a wrong shape, non-finite values or a zero quaternion.
    """
    enc = as_numpy(pose_enc)
    if enc.ndim < 1 or enc.shape[-1] != 9:
        raise InputError(f"pose encoding must have 9 values per frame, got shape {enc.shape}")
    if not np.all(np.isfinite(enc)):
        raise InputError("pose encoding contains NaN or infinite values")
    quat_norm = np.linalg.norm(enc[..., 3:7], axis=-1)
    if np.any(quat_norm < 1e-8):
        raise InputError("pose encoding has a zero quaternion; cannot decode the rotation")
    w2c = np.zeros(enc.shape[:-1] + (4, 4))
    w2c[..., :3, :3] = quat_to_rotation(enc[..., 3:7])
    w2c[..., :3, 3] = enc[..., 0:3]
    w2c[..., 3, 3] = 1.0
    K = intrinsics_from_fov(enc[..., 7], enc[..., 8], height, width)
    return w2c, K


def decode_pose_encoding_torch(pose_enc, height: int, width: int):
    """Differentiable twin of `decode_pose_encoding` for torch tensors (training, any device/dtype).

    (..., 9) → (w2c (..., 4, 4), K (..., 3, 3)); the same formulas (`_rotation_entries`, the
    FoV rule of `intrinsics_from_fov`), no input checks (it runs inside a training step)."""
    import torch

    t, q, fov = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7:9]
    R = torch.stack(_rotation_entries(*q.unbind(-1)), dim=-1).reshape(q.shape[:-1] + (3, 3))
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    w2c = torch.cat([top, bottom], dim=-2)
    K = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    K[..., 0, 0] = width / 2.0 / torch.tan(fov[..., 1] / 2.0)
    K[..., 1, 1] = height / 2.0 / torch.tan(fov[..., 0] / 2.0)
    K[..., 0, 2] = width / 2.0
    K[..., 1, 2] = height / 2.0
    K[..., 2, 2] = 1.0
    return w2c, K


def encode_pose_encoding(w2c, K, height: int, width: int) -> np.ndarray:
    """w2c (n, 3|4, 4) rigid, K (n, 3, 3) → (n, 9) pose encoding (inverse of the decoder)."""
    w2c, K = as_numpy(w2c), as_numpy(K)
    fov_h, fov_w = fov_from_intrinsics(K, height, width)
    quat = rotation_to_quat(w2c[..., :3, :3])
    return np.concatenate([w2c[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], axis=-1)


def invert_rigid(T) -> np.ndarray:
    """(..., 4, 4) rigid transform [R|t] → its inverse [Rᵀ | -Rᵀt]."""
    T = as_numpy(T)
    out = np.zeros(T.shape[:-2] + (4, 4))
    rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# Unprojection.


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 3) homogeneous pixel centres (u + 0.5, v + 0.5, 1)."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return np.stack([u + 0.5, v + 0.5, np.ones_like(u)], axis=-1)


def camera_rays(K, height: int, width: int) -> np.ndarray:
    """K (..., 3, 3) → (..., H, W, 3) rays K⁻¹ (u + 0.5, v + 0.5, 1) in camera axes (z = 1)."""
    K_inv = np.linalg.inv(as_numpy(K))
    return np.einsum("...ij,hwj->...hwi", K_inv, pixel_grid(height, width))


def unproject_depth(depth, w2c, K) -> np.ndarray:
    """z-depth (n, H, W) or (n, H, W, 1), w2c (n, 4, 4), K (n, 3, 3) → points (n, H, W, 3).

    Points are in the frame that w2c maps from (the chunk frame for decoded network poses).
    """
    depth = as_numpy(depth)
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    w2c, K = as_numpy(w2c), as_numpy(K)
    height, width = depth.shape[-2:]
    rays = camera_rays(K, height, width) * depth[..., None]  # camera-frame points
    c2w = invert_rigid(w2c)
    return np.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], rays) + c2w[:, None, None, :3, 3]


def project_points(points, w2c, K) -> Tuple[np.ndarray, np.ndarray]:
    """points (..., 3) in the world of w2c (4, 4), K (3, 3) → (pixel (..., 2) with centres at +0.5, z (...,))."""
    points, w2c, K = as_numpy(points), as_numpy(w2c), as_numpy(K)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ K.T)[..., :2] / z[..., None]
    return uv, z
