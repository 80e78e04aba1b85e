"""Dataset readers: each layout, written in its real file formats from one rendered synthetic drive,
reads back to the drive's poses, intrinsics and depth (within each format's precision); folders in the
wrong layout fail with one line saying what was expected where."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import pytest

from scal3r.data.render import egl_available
from scal3r.data.datasets import DATASETS, TUM_INTRINSICS, DatasetSequence, read_dataset
from scal3r.errors import InputError
from scal3r.io.intrinsics import write_intrinsics
from scal3r.io.ply import write_ply
from scal3r.geometry.camera import rotation_to_quat
from scal3r.io.trajectory import quaternion_to_matrix, read_kitti

pytest.importorskip("moderngl")
Image = pytest.importorskip("PIL.Image")

W, H, N = 112, 63, 8


@dataclass
class Drive:
    """The rendered drive: root (the `scal3r synth` folder), rgb [N × (H, W, 3) uint8], depth
    [N × (H, W) float32 m, 0 = sky], c2w (N, 4, 4), K (3, 3), t (N,) seconds."""

    root: Path
    rgb: List[np.ndarray]
    depth: List[np.ndarray]
    c2w: np.ndarray
    K: np.ndarray
    t: np.ndarray


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Drive:
    if not egl_available():
        pytest.skip("no headless EGL context on this machine")
    from scal3r.data.synthetic import SynthConfig, SyntheticSequence, generate

    cfg = SynthConfig.preset("city", frames=N, trajectory="noloop", seed=3, width=W, height=H, points_every=4)
    out = generate(cfg, tmp_path_factory.mktemp("synth") / "drive", workers=1)
    seq = SyntheticSequence(out)
    return Drive(out, [seq.image(i) for i in range(N)], [seq.depth(i) for i in range(N)], seq.c2w, seq.K,
                 seq.timestamps)


def _translation(t) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = t
    return T


def _rigid(xyz_quat_xyzw) -> np.ndarray:
    T = _translation(xyz_quat_xyzw[:3])
    T[:3, :3] = quaternion_to_matrix(xyz_quat_xyzw[3:])[0]
    return T


def _one_line_error(call, *match: str) -> str:
    with pytest.raises(InputError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message and message.strip() == message
    for m in match:
        assert m in message, message
    return message


def _save(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


# --- KITTI odometry --------------------------------------------------------------------------------------

# Like KITTI's P2: a 6 cm baseline to the left of camera 0, plus millimetre residuals in y and z.
T_CAM2 = np.array([0.0599, -0.0003, 0.0027])


def write_kitti_layout(root: Path, d: Drive) -> np.ndarray:
    """sequences/00 (image_2 colour + image_0 grey, all of the drive) and 11 (image_0 only, no poses).
    Returns the camera-0 poses written. The drive's camera is KITTI's camera 2."""
    def P(t):
        return d.K @ np.hstack([np.eye(3), np.asarray(t, float)[:, None]])

    for name, frames, cams in (("00", range(N), ("image_2", "image_0")), ("11", range(3), ("image_0",))):
        seq = root / "sequences" / name
        for i in frames:
            if "image_2" in cams:
                _save(seq / "image_2" / f"{i:06d}.png", d.rgb[i])
            _save(seq / "image_0" / f"{i:06d}.png", np.asarray(Image.fromarray(d.rgb[i]).convert("L")))
        lines = [f"P{k}: " + " ".join(f"{v:.12e}" for v in P(t).ravel())
                 for k, t in enumerate([(0, 0, 0), (-0.54, 0, 0), T_CAM2, (-0.47, 0.0001, 0.003)])]
        lines.append("Tr: " + " ".join(f"{v:.12e}" for v in np.eye(4)[:3].ravel()))
        (seq / "calib.txt").write_text("\n".join(lines) + "\n")
        (seq / "times.txt").write_text("".join(f"{i * 0.103:e}\n" for i in frames))
    # Camera 0's poses (camera 2 sits at -T_CAM2 in camera 0), in KITTI's `%e` (7 significant digits).
    c2w0 = d.c2w @ _translation(T_CAM2)
    (root / "poses").mkdir()
    (root / "poses" / "00.txt").write_text("".join(" ".join(f"{v:e}" for v in p[:3].ravel()) + "\n" for p in c2w0))
    return c2w0


def test_kitti_odometry(drive, tmp_path):
    c2w0 = write_kitti_layout(tmp_path, drive)
    seqs = read_dataset("kitti", tmp_path)
    assert [s.name for s in seqs] == ["00", "11"] and all(isinstance(s, DatasetSequence) for s in seqs)
    s = seqs[0]
    assert len(s) == N and s.image_paths[0].parent.name == "image_2" and s.image_size == (W, H)
    np.testing.assert_allclose(s.timestamps, np.arange(N) * 0.103, atol=1e-9)
    np.testing.assert_allclose(s.K, drive.K, rtol=1e-11)
    # %e keeps 7 significant digits: ≤ 5e-7 relative on each entry, translations of a few metres.
    np.testing.assert_allclose(s.c2w, drive.c2w, rtol=1e-6, atol=1e-6)
    assert s.depth_paths is None and s.point_cloud is None
    _one_line_error(lambda: s.load_depth(0), "no depth")

    # Independently of the reader's formula: KITTI projects camera-0 coordinates with P2, which
    # must agree with K applied to the returned camera-2 pose, for points the drive sees.
    v, u = np.nonzero(drive.depth[5] > 0)
    z = drive.depth[5][v, u]
    cam = np.stack([(u - drive.K[0, 2]) / drive.K[0, 0] * z, (v - drive.K[1, 2]) / drive.K[1, 1] * z, z, np.ones_like(z)])
    world = drive.c2w[5] @ cam
    P2 = drive.K @ np.hstack([np.eye(3), T_CAM2[:, None]])
    x_kitti = P2 @ (np.linalg.inv(read_kitti(tmp_path / "poses" / "00.txt")[5]) @ world)
    x_ours = s.K @ (np.linalg.inv(s.c2w[5]) @ world)[:3]
    np.testing.assert_allclose(x_kitti[:2] / x_kitti[2], x_ours[:2] / x_ours[2], atol=1e-3)

    grey = read_dataset("kitti", tmp_path, sequences=0, camera="image_0")[0]
    assert grey.name == "00" and grey.image_paths[0].parent.name == "image_0"
    np.testing.assert_allclose(grey.c2w, read_kitti(tmp_path / "poses" / "00.txt"), atol=0)
    np.testing.assert_allclose(grey.c2w, c2w0, rtol=1e-6, atol=1e-6)
    assert grey.load_image(0).shape == (H, W, 3)

    # 11: only grey images, and no ground truth (KITTI publishes poses for 00-10).
    s11 = seqs[1]
    assert s11.image_paths[0].parent.name == "image_0" and s11.c2w is None and len(s11) == 3
    assert any("00-10" in n for n in s11.notes)

    _one_line_error(lambda: read_dataset("kitti", tmp_path, sequences=["05"]), "'05'", "found 00, 11")
    _one_line_error(lambda: read_dataset("kitti", tmp_path, camera="image_9"), "image_9")


# --- Virtual KITTI 2 --------------------------------------------------------------------------------------

def write_vkitti2_layout(root: Path, d: Drive) -> None:
    """Scene01/clone and Scene01/fog, Camera_0 images and depth; both cameras in the text files."""
    var = root / "Scene01" / "clone"
    for i in range(N):
        _save(var / "frames" / "rgb" / "Camera_0" / f"rgb_{i:05d}.jpg", d.rgb[i], quality=95)
        cm = np.rint(d.depth[i].astype(np.float64) * 100)
        cm[(cm <= 0) | (cm >= 65535)] = 65535  # sky and beyond 655.35 m: VKITTI2's 65535
        _save(var / "frames" / "depth" / "Camera_0" / f"depth_{i:05d}.png", cm.astype(np.uint16))
    fx, fy, cx, cy = d.K[0, 0], d.K[1, 1], d.K[0, 2], d.K[1, 2]
    intr = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
    extr = ["frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"]
    for i in range(N):
        for cam, offset in ((0, 0.0), (1, 0.532725)):
            intr.append(f"{i} {cam} {fx:.4f} {fy:.4f} {cx:.4f} {cy:.4f}")
            w2c = _translation((-offset, 0, 0)) @ np.linalg.inv(d.c2w[i])  # world-to-camera
            extr.append(f"{i} {cam} " + " ".join(f"{v:.7g}" for v in w2c.ravel()))
    (var / "intrinsic.txt").write_text("\n".join(intr) + "\n")
    (var / "extrinsic.txt").write_text("\n".join(extr) + "\n")
    shutil.copytree(var, root / "Scene01" / "fog")


def test_vkitti2(drive, tmp_path):
    write_vkitti2_layout(tmp_path, drive)
    seqs = read_dataset("vkitti2", tmp_path)
    assert [s.name for s in seqs] == ["Scene01/clone"]
    s = seqs[0]
    assert len(s) == N and s.image_size == (W, H) and s.depth_scale == 0.01
    np.testing.assert_allclose(s.timestamps, np.arange(N) / 10.0)
    assert s.K.shape == (3, 3)
    np.testing.assert_allclose(s.K, drive.K, atol=5.1e-5)  # 4 decimals in intrinsic.txt
    # 7 significant digits per world-to-camera entry: a few 1e-7 in rotation and, after the
    # inversion, ≤ ~3e-6 m in the position of a camera a few metres from the origin.
    np.testing.assert_allclose(s.c2w, drive.c2w, atol=5e-6)
    for i in (0, 4, 7):
        depth, truth = s.load_depth(i), drive.depth[i]
        assert depth.dtype == np.float32 and depth.shape == (H, W)
        stored = (truth > 0) & (truth < 655.34)
        np.testing.assert_allclose(depth[stored], truth[stored], atol=0.005 + 1e-4)  # 1 cm steps
        assert np.all(depth[~stored] == 0) and np.any(~stored)  # sky (65535) reads as invalid

    assert [s.name for s in read_dataset("vkitti2", tmp_path, variation="fog")] == ["Scene01/fog"]
    assert [s.name for s in read_dataset("vkitti2", tmp_path, sequences="Scene01")] == ["Scene01/clone"]
    assert [s.name for s in read_dataset("vkitti2", tmp_path, sequences=["Scene01/fog"])] == ["Scene01/fog"]
    _one_line_error(lambda: read_dataset("vkitti2", tmp_path, sequences="Scene20"),
                    "'Scene20/clone'", "Scene01/clone, Scene01/fog")
    _one_line_error(lambda: read_dataset("vkitti2", tmp_path, variation="rain"), "'rain'", "clone, fog")


# --- TUM RGB-D ---------------------------------------------------------------------------------------------

T0 = 1305031102.175304
NO_POSE = (2, 6)  # frames whose ground-truth lines are missing
NO_DEPTH = 5


def write_tum_layout(root: Path, d: Drive) -> None:
    """rgbd_dataset_freiburg1_synth (calib.txt with the drive's K) and rgbd_dataset_freiburg3_plain
    (two frames, TUM's fr3 intrinsics), at 30 Hz with 100 Hz-like ground truth."""
    rng = np.random.default_rng(0)
    seq = root / "rgbd_dataset_freiburg1_synth"
    t_rgb = np.round(T0 + np.arange(N) / 30.0, 6)
    rgb_lines = ["# color images", "# file: 'rgbd_dataset_freiburg1_synth.bag'", "# timestamp filename"]
    depth_lines = ["# depth maps", "# file: 'rgbd_dataset_freiburg1_synth.bag'", "# timestamp filename"]
    gt = []
    for i, t in enumerate(t_rgb):
        _save(seq / "rgb" / f"{t:.6f}.png", d.rgb[i])
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        if i != NO_DEPTH:
            td = t + (0.004 if i % 2 else -0.003)  # the Kinect's depth and colour are not simultaneous
            units = np.rint(d.depth[i].astype(np.float64) * 5000)
            units[units > 65535] = 0  # beyond the 16-bit range: no measurement, as a sensor gives
            _save(seq / "depth" / f"{td:.6f}.png", units.astype(np.uint16))
            depth_lines.append(f"{td:.6f} depth/{td:.6f}.png")
        if i not in NO_POSE:
            q = rotation_to_quat(d.c2w[i, :3, :3])
            gt.append((t + rng.uniform(-0.006, 0.006), d.c2w[i, :3, 3], q))
            # A nearby motion-capture sample with another pose: nearer to no frame than its own.
            wrong = d.c2w[i, :3, 3] + 0.05
            gt.append((t + 0.012, wrong, q))
    gt.sort(key=lambda g: g[0])
    gt_lines = ["# ground truth trajectory", "# file: 'rgbd_dataset_freiburg1_synth.bag'",
                "# timestamp tx ty tz qx qy qz qw"]
    # TUM's own precision: 4 decimals.
    gt_lines += [f"{t:.4f} " + " ".join(f"{v:.4f}" for v in (*p, *q)) for t, p, q in gt]
    (seq / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (seq / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (seq / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    K = d.K
    (seq / "calib.txt").write_text(f"{K[0, 0]:.6f} {K[1, 1]:.6f} {K[0, 2]:.6f} {K[1, 2]:.6f}\n")

    plain = root / "rgbd_dataset_freiburg3_plain"
    for i in range(2):
        _save(plain / "rgb" / f"{t_rgb[i]:.6f}.png", d.rgb[i])
    (plain / "rgb.txt").write_text("".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in t_rgb[:2]))
    (plain / "groundtruth.txt").write_text("".join(f"{t:.4f} 0 0 0 0 0 0 1\n" for t in t_rgb[:2]))


def test_tum_rgbd(drive, tmp_path):
    write_tum_layout(tmp_path, drive)
    s, plain = read_dataset("tum", tmp_path)
    assert s.name == "rgbd_dataset_freiburg1_synth" and plain.name == "rgbd_dataset_freiburg3_plain"
    kept = [i for i in range(N) if i not in NO_POSE]
    assert len(s) == len(kept) and [p.stem for p in s.image_paths] == [f"{np.round(T0 + i / 30, 6):.6f}" for i in kept]
    assert any(f"dropped {len(NO_POSE)} of {N}" in n for n in s.notes)
    np.testing.assert_allclose(s.timestamps, T0 + np.asarray(kept) / 30.0, atol=1e-6)
    # Positions to 0.05 mm, rotations from 4-decimal quaternions to a few 1e-4 (the distractor
    # samples are 5 cm off, so picking one would fail this).
    np.testing.assert_allclose(s.c2w[:, :3, 3], drive.c2w[kept, :3, 3], atol=5.1e-5)
    np.testing.assert_allclose(s.c2w[:, :3, :3], drive.c2w[kept, :3, :3], atol=5e-4)
    np.testing.assert_allclose(s.K, drive.K, atol=5e-7)
    assert s.depth_scale == 1 / 5000
    for j, i in enumerate(kept):
        depth = s.load_depth(j)
        if i == NO_DEPTH:
            assert s.depth_paths[j] is None and np.all(depth == 0)
            continue
        truth = drive.depth[i]
        stored = (truth > 0) & (truth * 5000 <= 65535)
        np.testing.assert_allclose(depth[stored], truth[stored], atol=1e-4 + 1e-6)  # 0.2 mm steps
        assert np.all(depth[~stored] == 0)
    assert any("no depth" in n for n in s.notes)

    # No calibration file: TUM's published fr3 camera (for 640x480, scaled to these small images).
    fx, fy, cx, cy = TUM_INTRINSICS[3]
    np.testing.assert_allclose(plain.K, [[fx * W / 640, 0, cx * W / 640], [0, fy * H / 480, cy * H / 480], [0, 0, 1]])
    assert plain.depth_paths is None and np.allclose(plain.c2w, np.eye(4))

    one = read_dataset("tum", tmp_path / "rgbd_dataset_freiburg3_plain")  # a sequence folder as root
    assert [x.name for x in one] == ["rgbd_dataset_freiburg3_plain"]
    shutil.copytree(tmp_path / "rgbd_dataset_freiburg3_plain", tmp_path / "other" / "my_sequence")
    _one_line_error(lambda: read_dataset("tum", tmp_path / "other"), "freiburg1/2/3", "calib.txt")


# --- ETH3D -------------------------------------------------------------------------------------------------

SCAN1_POSE = _rigid([1.5, -0.2, 3.0, 0.1, 0.2, -0.05, 0.97])


def write_eth3d_layout(root: Path, d: Drive) -> None:
    """One scene in COLMAP text (records shuffled, ids not in order, some empty point lines) with
    two laser scans and their MeshLab alignment."""
    scene = root / "synth_courtyard"
    calib = scene / "dslr_calibration_undistorted"
    calib.mkdir(parents=True)
    K = d.K
    # COLMAP (and ETH3D) put the top-left pixel's centre at (0.5, 0.5): the drive's cx + 0.5.
    (calib / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: 1\n7 PINHOLE {W} {H} "
        + " ".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5)) + "\n")
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {N}, mean observations per image: 1"]
    for i in np.random.default_rng(1).permutation(N):
        name = f"DSC_{1000 + 7 * i:04d}.JPG"
        _save(scene / "images" / "dslr_images_undistorted" / name, d.rgb[i], quality=95)
        w2c = np.linalg.inv(d.c2w[i])
        qx, qy, qz, qw = rotation_to_quat(w2c[:3, :3])
        numbers = " ".join(repr(float(v)) for v in (qw, qx, qy, qz, *w2c[:3, 3]))
        lines.append(f"{3 * i + 11} {numbers} 7 dslr_images_undistorted/{name}")
        lines.append("" if i % 2 else "12.5 30.25 -1 40.75 11.5 5")
    (calib / "images.txt").write_text("\n".join(lines) + "\n")
    scans = scene / "dslr_scan_eval"
    scans.mkdir()
    for k in (1, 2):
        write_ply(scans / f"scan{k}.ply", np.random.default_rng(k).normal(size=(20, 3)))
    matrix = "\n".join(" ".join(repr(float(v)) for v in row) + " " for row in SCAN1_POSE)
    (scans / "scan_alignment.mlp").write_text(
        "<!DOCTYPE MeshLabDocument>\n<MeshLabProject>\n <MeshGroup>\n"
        f'  <MLMesh label="scan1.ply" filename="scan1.ply">\n   <MLMatrix44>\n{matrix}\n</MLMatrix44>\n  </MLMesh>\n'
        '  <MLMesh label="scan2.ply" filename="scan2.ply">\n   <MLMatrix44>\n1 0 0 0 \n0 1 0 0 \n0 0 1 0 \n0 0 0 1 \n'
        "</MLMatrix44>\n  </MLMesh>\n </MeshGroup>\n <RasterGroup/>\n</MeshLabProject>\n")


def test_eth3d(drive, tmp_path):
    write_eth3d_layout(tmp_path, drive)
    (s,) = read_dataset("eth3d", tmp_path)
    assert s.name == "synth_courtyard" and len(s) == N and s.image_size == (W, H)
    assert [p.name for p in s.image_paths] == [f"DSC_{1000 + 7 * i:04d}.JPG" for i in range(N)]  # name order
    np.testing.assert_array_equal(s.timestamps, np.arange(N))
    np.testing.assert_allclose(s.K, drive.K, atol=1e-12)  # back in the OpenCV pixel convention
    np.testing.assert_allclose(s.c2w, drive.c2w, atol=1e-9)  # full-precision numbers, quaternion round trip
    assert s.point_cloud.name == "scan1.ply" and s.point_cloud.is_file()
    np.testing.assert_allclose(s.point_cloud_transform, SCAN1_POSE, atol=1e-15)
    assert any("2 laser scans" in n for n in s.notes)
    assert [x.name for x in read_dataset("eth3d", tmp_path / "synth_courtyard")] == ["synth_courtyard"]


# --- Oxford Spires -----------------------------------------------------------------------------------------

# The release's calibration of cam0 (sensor.yaml): camera-from-LiDAR and base-from-LiDAR.
T_CAM_LIDAR = [0.00035060884033447846, -0.079574053851818, -0.053826061545697405,
               0.5034725628949727, 0.5003337192107279, -0.4947539264483171, 0.5013981452864594]
T_BASE_LIDAR = [0.0, 0.0, 0.124, 0.0, 0.0, 1.0, 0.0]
SPIRES_NO_POSE = 3


def _stamp(i: int) -> str:
    """sec.nsec (9 digits), as the release names its images: 20 Hz from 1710338090.104296 s."""
    ns = 1710338090_104296000 + i * 50_000_000
    return f"{ns // 10 ** 9}.{ns % 10 ** 9:09d}"


def write_spires_layout(root: Path, d: Drive) -> None:
    seq = root / "sequences" / "2024-03-13-observatory-quarter-01"
    for i in range(N):
        _save(seq / "images" / "cam0" / f"{_stamp(i)}.jpg", d.rgb[i], quality=95)
    base_from_cam = _rigid(T_BASE_LIDAR) @ np.linalg.inv(_rigid(T_CAM_LIDAR))
    base = d.c2w @ np.linalg.inv(base_from_cam)  # what gt-tum.txt holds: the base frame's poses
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for i in range(N):
        if i != SPIRES_NO_POSE:
            q = rotation_to_quat(base[i, :3, :3])
            lines.append(_stamp(i) + " " + " ".join(repr(float(v)) for v in (*base[i, :3, 3], *q)))
    (seq / "processed" / "trajectory").mkdir(parents=True)
    (seq / "processed" / "trajectory" / "gt-tum.txt").write_text("\n".join(lines) + "\n")
    (seq / "processed" / "trajectory" / "vilens-slam-tum.txt").write_text("0 0 0 0 0 0 0 1\n")  # an estimate
    K = d.K
    sensor = {"sensor": {
        "cameras": [{"label": "cam_front", "topic": "/alphasense_driver_ros/cam0/debayered/image/compressed",
                     "T_cam_lidar_t_xyz_q_xyzw": T_CAM_LIDAR,
                     "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
                     "extra_params": [-0.0411, -0.0024, 0.0034, -0.0019], "image_height": H, "image_width": W},
                    {"label": "cam_left", "topic": "/alphasense_driver_ros/cam1/debayered/image/compressed",
                     "T_cam_lidar_t_xyz_q_xyzw": [0, 0, 0, 0, 0, 0, 1], "intrinsics": [1, 1, 0, 0],
                     "image_height": 1080, "image_width": 1440}],
        "camera_model": "OPENCV_FISHEYE", "max_time_diff_camera_and_pose": 0.025,
        "T_base_lidar_t_xyz_q_xyzw": T_BASE_LIDAR}}
    (root / "calibration").mkdir()
    # JSON is valid YAML; the reader parses it with PyYAML as it would the release's file.
    (root / "calibration" / "sensor.yaml").write_text(json.dumps(sensor, indent=1))
    (seq / "ground_truth_map").mkdir()
    (seq / "ground_truth_map" / "observatory.pcd").write_text(
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nHEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 1\nDATA ascii\n1 2 3\n")


def test_oxford_spires(drive, tmp_path):
    write_spires_layout(tmp_path, drive)
    (s,) = read_dataset("oxford-spires", tmp_path)
    kept = [i for i in range(N) if i != SPIRES_NO_POSE]
    assert s.name == "2024-03-13-observatory-quarter-01" and len(s) == len(kept)
    assert [p.stem for p in s.image_paths] == [_stamp(i) for i in kept]
    np.testing.assert_allclose(s.timestamps, [float(_stamp(i)) for i in kept], rtol=0, atol=1e-6)
    # Poses travel as full-precision TUM through the base frame and back to the camera.
    np.testing.assert_allclose(s.c2w, drive.c2w[kept], atol=1e-9)
    np.testing.assert_allclose(s.K, drive.K, atol=1e-12)
    assert s.point_cloud.name == "observatory.pcd"
    assert any("dropped 1 of 8" in n for n in s.notes) and any("OPENCV_FISHEYE" in n for n in s.notes)
    assert any("base frame" in n for n in s.notes)


def test_oxford_spires_plain_layout(drive, tmp_path):
    # The alternative this reader accepts: images/*.jpg, a camera trajectory gt-tum.txt, intrinsics.json.
    seq = tmp_path / "keble-college-02"
    for i in range(3):
        _save(seq / "images" / f"{_stamp(i)}.jpg", drive.rgb[i], quality=95)
    lines = [_stamp(i) + " " + " ".join(repr(float(v)) for v in (*p[:3, 3], *rotation_to_quat(p[:3, :3])))
             for i, p in enumerate(drive.c2w[:3])]
    (seq / "gt-tum.txt").write_text("\n".join(lines) + "\n")
    write_intrinsics(seq / "intrinsics.json", drive.K, W, H)
    write_ply(seq / "map.ply", np.zeros((2, 3)))
    (s,) = read_dataset("oxford_spires", tmp_path)
    assert len(s) == 3 and s.point_cloud.name == "map.ply"
    np.testing.assert_allclose(s.c2w, drive.c2w[:3], atol=1e-12)
    np.testing.assert_array_equal(s.K, drive.K)
    assert any("used as the camera's poses" in n for n in s.notes)


# --- generic -------------------------------------------------------------------------------------------------

def test_generic_reads_synth_output(drive):
    for root in (drive.root, drive.root.parent):  # the sequence itself, or a folder of sequences
        (s,) = read_dataset("generic", root)
        assert s.name == "drive" and len(s) == N and s.image_size == (W, H)
        np.testing.assert_allclose(s.c2w, drive.c2w, atol=1e-14)  # poses_tum.txt, a quaternion round trip
        np.testing.assert_array_equal(s.K, drive.K)
        np.testing.assert_array_equal(s.timestamps, drive.t)
        for i in (0, N - 1):
            np.testing.assert_array_equal(s.load_depth(i), drive.depth[i])
        assert s.point_cloud == drive.root / "scene_points.ply"
    source = s.frames()
    assert len(source) == N and source.input_size == (H, W)


def test_generic_kitti_poses_and_K_txt(drive, tmp_path):
    seq = tmp_path / "seq"
    seq.mkdir()
    for i in range(3):
        _save(seq / f"{i:04d}.jpg", drive.rgb[i])  # images directly in the folder
    (seq / "poses.txt").write_text("".join(" ".join(repr(float(v)) for v in p[:3].ravel()) + "\n" for p in drive.c2w[:3]))
    (seq / "K.txt").write_text("\n".join(" ".join(repr(float(v)) for v in row) for row in drive.K) + "\n")
    (s,) = read_dataset("generic", seq)
    np.testing.assert_array_equal(s.c2w, drive.c2w[:3])
    np.testing.assert_array_equal(s.K, drive.K)
    np.testing.assert_array_equal(s.timestamps, np.arange(3))
    assert s.depth_paths is None and any("frame indices" in n for n in s.notes)
    (seq / "poses.txt").write_text("1 2 3\n")
    _one_line_error(lambda: read_dataset("generic", seq), "neither TUM", "KITTI")


# --- wrong folders and names ------------------------------------------------------------------------------------

def test_wrong_folders_say_what_was_expected(tmp_path):
    (tmp_path / "stuff").mkdir()
    expectations = {
        "kitti": "sequences/NN/image_2 or image_0",
        "vkitti2": "SceneXX/<variation>/frames/rgb/Camera_0",
        "tum": "rgb.txt",
        "eth3d": "dslr_calibration_undistorted/images.txt",
        "oxford-spires": "images/",
        "generic": "intrinsics.json",
    }
    assert set(expectations) == set(DATASETS)
    for name, expected in expectations.items():
        message = _one_line_error(lambda: read_dataset(name, tmp_path), f"{name}: {tmp_path} ", expected, "expected")
        assert message.startswith(f"{name}: ")
        _one_line_error(lambda: read_dataset(name, tmp_path / "missing"), "is not a folder")


def test_unknown_names_and_options(tmp_path):
    _one_line_error(lambda: read_dataset("nuscenes", tmp_path), "'nuscenes'", ", ".join(DATASETS))
    _one_line_error(lambda: read_dataset("tum", tmp_path, camera="image_2"), "unknown option camera", "max_time_diff")
