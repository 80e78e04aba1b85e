import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.geometry.camera import camera_rays
from scal3r.geometry.fuse import FusionConfig, VoxelGrid, frame_points, fuse_frames


def test_voxel_grid_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5, 5, size=(20000, 3))
    col = rng.random(size=(20000, 3))
    one = VoxelGrid(0.5, True)
    one.add(pts, col)
    a = one.result()
    stream = VoxelGrid(0.5, True)
    stream.merge_every = 1000  # force many merges
    for k in range(0, 20000, 700):
        stream.add(pts[k:k + 700], col[k:k + 700])
    b = stream.result()
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_allclose(a.points, b.points, atol=1e-5)
    np.testing.assert_allclose(a.colors, b.colors, atol=1e-6)
    # Brute force: each voxel's mean.
    keys = np.floor(pts / 0.5).astype(int)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    assert len(uniq) == len(a.points)
    means = np.stack([np.bincount(inv.ravel(), weights=pts[:, c]) for c in range(3)], 1) / np.bincount(inv.ravel())[:, None]
    np.testing.assert_allclose(np.sort(a.points, axis=0), np.sort(means, axis=0), atol=1e-5)
    assert a.counts.sum() == 20000


def test_frame_points_confidence_filter_and_geometry():
    H, W = 6, 8
    K = np.array([[5.0, 0, 4], [0, 5.0, 3], [0, 0, 1]])
    depth = np.full((H, W), 2.0)
    depth[0, 0] = np.nan
    conf = np.ones((H, W))
    conf[:, :4] = 3.0  # mean 2 → threshold 1.5 keeps the left half
    c2w = np.eye(4)
    c2w[:3, 3] = [1, 2, 3]
    pts, mask = frame_points(depth, conf, c2w, K, conf_ratio=0.75)
    assert mask.sum() == H * 4 - 1 and not mask[0, 0]
    expected = camera_rays(K, H, W)[mask] * 2.0 + [1, 2, 3]
    np.testing.assert_allclose(pts, expected, atol=1e-12)


def test_fuse_frames_auto_voxel_and_colors():
    rng = np.random.default_rng(1)
    H, W = 10, 12
    K = np.array([[8.0, 0, 6], [0, 8.0, 5], [0, 0, 1]])
    frames = []
    for i in range(5):
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * i
        frames.append((np.full((H, W), 4.0), rng.uniform(1, 2, (H, W)), c2w, K, np.full((H, W, 3), 0.5)))
    cloud = fuse_frames(iter(frames), FusionConfig(conf_ratio=0.0), with_colors=True)
    assert cloud.voxel_size == pytest.approx(0.04)
    np.testing.assert_allclose(cloud.colors, 0.5, atol=1e-6)
    assert cloud.counts.sum() == 5 * H * W
    with pytest.raises(InputError, match="colours"):
        fuse_frames(iter([f[:4] for f in frames]), with_colors=True)
    with pytest.raises(InputError, match="voxel size"):
        VoxelGrid(0.0, False)
