"""Point-cloud and depth metrics against hand-computed values."""

import numpy as np
import pytest

from scal3r.errors import InputError
from scal3r.eval.depth import depth_errors, depth_metrics
from scal3r.eval.pointcloud import nearest_distances, pointcloud_metrics, voxel_downsample


def test_identical_clouds_are_perfect():
    pts = np.random.default_rng(0).normal(size=(500, 3))
    m = pointcloud_metrics(pts, pts, threshold=0.01)
    assert m.accuracy == 0 and m.completeness == 0 and m.chamfer == 0
    assert m.precision == 1 and m.recall == 1 and m.f1 == 1


def test_hand_computed_chamfer_and_f1():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    # Distances to gt: 0.1, 0.2, 0.5 (nearest gt points 0, 1, 2 → gt point 3 is 0.5+... away).
    pred = np.array([[0.0, 0.1, 0], [1, 0.2, 0], [2, 0, 0.5]])
    m = pointcloud_metrics(pred, gt, threshold=0.3)
    # accuracy: (0.1 + 0.2 + 0.5) / 3
    assert m.accuracy == pytest.approx(0.8 / 3, abs=1e-12)
    # completeness: gt 0 → 0.1, gt 1 → 0.2, gt 2 → 0.5, gt 3 → |(3,0,0) − (2,0,0.5)| = √1.25
    comp = (0.1 + 0.2 + 0.5 + np.sqrt(1.25)) / 4
    assert m.completeness == pytest.approx(comp, abs=1e-12)
    assert m.chamfer == pytest.approx((0.8 / 3 + comp) / 2, abs=1e-12)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 4)
    assert m.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m.accuracy_median == pytest.approx(0.2) and m.completeness_median == pytest.approx(0.35)
    assert (m.num_pred, m.num_gt) == (3, 4)


def test_shifted_plane():
    # Two dense samplings of the plane z=0, one lifted by 2 cm: every distance is 2 cm.
    g = np.stack(np.meshgrid(np.arange(50) * 0.01, np.arange(50) * 0.01), -1).reshape(-1, 2)
    gt = np.concatenate([g, np.zeros((len(g), 1))], 1)
    pred = gt + [0, 0, 0.02]
    m = pointcloud_metrics(pred, gt, threshold=0.025)
    assert m.chamfer == pytest.approx(0.02) and m.f1 == 1
    m = pointcloud_metrics(pred, gt, threshold=0.015)
    assert m.f1 == 0


def test_voxel_downsample():
    pts = np.array([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07], [0.5, 0.5, 0.5], [-0.01, 0, 0]])
    cols = np.array([[0, 0, 0], [10, 20, 30], [255, 255, 255], [1, 1, 1]], dtype=np.uint8)
    out, c = voxel_downsample(pts, 0.1, cols)
    assert out.shape == (3, 3)
    # Voxel (0,0,0) holds the first two points: centroid and mean colour.
    i = np.argmin(np.linalg.norm(out - [0.02, 0.03, 0.04], axis=1))
    np.testing.assert_allclose(out[i], [0.02, 0.03, 0.04])
    np.testing.assert_array_equal(c[i], [5, 10, 15])
    first, _ = voxel_downsample(pts, 0.1, reduce="first")
    assert {tuple(p) for p in first} == {tuple(pts[0]), tuple(pts[2]), tuple(pts[3])}
    # Voxel downsampling inside the metrics: a duplicate-heavy prediction counts once per voxel.
    m = pointcloud_metrics(np.repeat(pts[:1], 100, 0), pts[:1], threshold=0.1, voxel_size=0.1)
    assert m.num_pred == 1


def test_nearest_distances_and_errors():
    np.testing.assert_allclose(nearest_distances(np.array([[0.0, 0, 3]]), np.array([[0.0, 0, 0], [0, 0, 1]])), [2])
    with pytest.raises(InputError):
        pointcloud_metrics(np.zeros((0, 3)), np.zeros((3, 3)), 0.1)
    with pytest.raises(InputError):
        pointcloud_metrics(np.zeros((3, 2)), np.zeros((3, 3)), 0.1)


def test_depth_metrics_hand_computed():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # 0 = no ground truth
    pred = np.array([[2.0, 4.0], [10.0, 5.0]])
    # Without scaling: |2−1|/1, |4−2|/2, |10−4|/4 → mean (1 + 1 + 1.5)/3; ratios 2, 2, 2.5 → δ1 = 0.
    a, d, s = depth_errors(pred, gt, median_scaling=False)
    assert a == pytest.approx(3.5 / 3) and d == 0 and s == 1
    # Median scaling: s = median(1,2,4)/median(2,4,10) = 0.5 → p = 1, 2, 5 → AbsRel 0.25/3, δ1 = 2/3.
    a, d, s = depth_errors(pred, gt)
    assert s == pytest.approx(0.5) and a == pytest.approx(0.25 / 3) and d == pytest.approx(2 / 3)
    m = depth_metrics([(pred, gt), (gt * 3, gt), (pred, np.zeros_like(gt))])
    assert m.images == 2 and m.abs_rel == pytest.approx(0.25 / 6) and m.delta1 == pytest.approx(5 / 6)
    with pytest.raises(InputError):
        depth_errors(pred, gt[:1])
