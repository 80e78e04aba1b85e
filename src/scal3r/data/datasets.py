"""Benchmark datasets as distributed: one `DatasetSequence` per sequence, with ground truth.

`read_dataset(name, root, sequences=None, **options)` reads the layouts below (`DATASETS` lists the
names) and returns sequences in a common form: image paths in time order (decoded lazily, e.g. by
`DatasetSequence.frames`), timestamps, camera-to-world poses (N, 4, 4) float64 with OpenCV camera
axes (x right, y down, z forward), intrinsics at the original image resolution, and depth maps and a
reference point cloud where the dataset has them.

Conventions shared by every reader:

- K uses the OpenCV pixel convention of `scal3r.io.intrinsics` (pixel centres at integer
  coordinates, so the top-left pixel's centre is (0, 0)). COLMAP-format files (ETH3D) put that
  centre at (0.5, 0.5); their principal points are shifted by -0.5 on reading.
- Depth is z-depth in metres (`load_depth`), 0 where there is no measurement.
- `notes` says, in one line each, what a reader had to assume, drop or approximate.
- A folder in the wrong layout raises `InputError` with one line naming what was expected where.

Layouts accepted (`root` is what you pass; `<seq>` a sequence folder):

kitti (KITTI odometry)
    root/sequences/NN/image_2/*.png (colour, the default) or image_0/ (grey, used when it is the
    only one; `camera="image_0"`… `"image_3"` chooses), root/sequences/NN/calib.txt (`P0:` … `P3:`,
    12 numbers each; `Tr:` is ignored), root/sequences/NN/times.txt (seconds, one per image),
    root/poses/NN.txt (KITTI 3×4 camera-0 poses; absent for 11-21 → c2w None).
vkitti2 (Virtual KITTI 2)
    root/SceneXX/<variation>/frames/rgb/Camera_0/rgb_00000.jpg …,
    root/SceneXX/<variation>/frames/depth/Camera_0/depth_00000.png (16-bit, cm; 65535 = sky),
    root/SceneXX/<variation>/intrinsic.txt, extrinsic.txt (header line, then per frame and camera
    `frame cameraID fx fy cx cy` and `frame cameraID` + 16 numbers of the world-to-camera matrix).
    Sequences are named "SceneXX/<variation>"; `variation="clone"` and `camera="Camera_0"` by
    default; "SceneXX" alone means "SceneXX/<variation>". No timestamps: frame / 10 Hz.
tum (TUM RGB-D)
    root/<seq>/rgb.txt, depth.txt (`timestamp path`), groundtruth.txt (`t tx ty tz qx qy qz qw`),
    root/<seq>/rgb/*.png, depth/*.png (16-bit, 1/5000 m); root may be a sequence itself.
    Intrinsics: TUM's published fr1 / fr2 / fr3 values by "freiburgN" / "frN" in the sequence name,
    overridden by <seq>/intrinsics.json, intrinsics.txt, calib.txt or K.txt when present.
eth3d (ETH3D high-res multi-view)
    root/<scene>/images/dslr_images_undistorted/*.JPG,
    root/<scene>/dslr_calibration_undistorted/{cameras.txt,images.txt} (COLMAP text, PINHOLE or
    SIMPLE_PINHOLE), root/<scene>/dslr_scan_eval/scan_alignment.mlp and scan*.ply (the first is
    the point cloud; its matrix in the .mlp is `point_cloud_transform`). Timestamps = index.
oxford-spires (Oxford Spires)
    <seq> = root/<seq>, root/sequences/<seq> or root itself. Images: <seq>/images/<camera>/*.jpg
    (`camera="cam0"`; a folder under images/ whose name contains the camera name also counts) or
    <seq>/images/*.jpg, named by their timestamp (`1710338090.104296000.jpg` or `sec_nsec.jpg`).
    Trajectory (TUM format): <seq>/processed/trajectory/gt-tum.txt, <seq>/ground_truth/gt-tum.txt,
    <seq>/gt-tum.txt, else the first <seq>/*tum*.txt. Calibration: <seq>/intrinsics.json or
    calib.json (the `scal3r.io.intrinsics` JSON, or keys fx fy cx cy [width height]) for K, and a
    sensor YAML (<seq>/sensor.yaml, or *.yaml in calibration/ beside <seq> or its parent) in the
    release's `sensor: {cameras: [...], T_base_lidar_t_xyz_q_xyzw}` form or the `cam0: {K_rect,
    T_cam_lidar_t_xyz_q_xyzw[_overwrite]}` form, which also gives K and moves the ground truth,
    a pose of the base frame, to the camera. Frames are matched to poses by timestamp (0.025 s).
    Point cloud: the first *.ply / *.pcd in <seq>, <seq>/ground_truth_map, gt_map, map or
    lidar_map (per-scan folders such as processed/vilens-slam are not searched).
generic
    <seq>/images/*.png|jpg (or images directly in <seq>), a trajectory <seq>/poses_tum.txt,
    poses_kitti.txt, groundtruth.txt, trajectory_tum.txt or poses.txt (TUM if 8 columns, KITTI if
    12; optional, else c2w None), intrinsics <seq>/intrinsics.json, intrinsics.txt or K.txt
    (a 3×3, or `fx fy cx cy`), optional depth <seq>/depth/<image stem>.npy (float metres) and
    point cloud scene_points.ply (or the first top-level *.ply / *.pcd). root may be a sequence or
    a folder of them. `scal3r synth` output is in this layout.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from scal3r.data.frames import (FrameOptions, FrameSource, ImageFilesSource, decode_image, image_size, list_images,
                                natural_key)
from scal3r.errors import InputError
from scal3r.geometry.camera import invert_rigid
from scal3r.io.intrinsics import read_intrinsics
from scal3r.io.trajectory import associate_timestamps, quaternion_to_matrix, read_kitti, read_tum

PathLike = Union[str, os.PathLike]
SequenceNames = Union[None, str, int, Iterable[Union[str, int]]]

DATASETS = ("kitti", "vkitti2", "tum", "eth3d", "oxford-spires", "generic")

# Other spellings people use for the same datasets.
_ALIASES = {"kitti-odometry": "kitti", "virtual-kitti-2": "vkitti2", "vkitti": "vkitti2", "tum-rgbd": "tum",
            "spires": "oxford-spires", "oxford": "oxford-spires"}

KITTI_LAYOUT = "sequences/NN/{image_2,calib.txt,times.txt}, poses/NN.txt"
VKITTI2_LAYOUT = ("SceneXX/<variation>/frames/rgb/Camera_0/rgb_NNNNN.jpg, frames/depth/Camera_0/depth_NNNNN.png, "
                  "intrinsic.txt, extrinsic.txt")
TUM_LAYOUT = "<sequence>/{rgb.txt,depth.txt,groundtruth.txt,rgb/,depth/}"
ETH3D_LAYOUT = ("<scene>/images/dslr_images_undistorted/*.JPG, <scene>/dslr_calibration_undistorted/"
                "{cameras.txt,images.txt}, <scene>/dslr_scan_eval/scan*.ply")
SPIRES_LAYOUT = "<sequence>/images/cam0/<timestamp>.jpg, <sequence>/processed/trajectory/gt-tum.txt, calibration"
GENERIC_LAYOUT = "images/*.png|jpg, poses_tum.txt or poses_kitti.txt, intrinsics.json or K.txt"

# TUM RGB-D colour cameras (fx, fy, cx, cy) for 640×480, as published with the benchmark. fr1 and
# fr2 images also carry radial distortion that a pinhole K does not describe.
TUM_INTRINSICS = {1: (517.3, 516.5, 318.6, 255.3), 2: (520.9, 521.0, 325.1, 249.7), 3: (535.4, 539.2, 320.1, 247.6)}
TUM_DEPTH_SCALE = 1.0 / 5000.0
TUM_MAX_TIME_DIFF = 0.02  # seconds, the default of TUM's associate.py
VKITTI2_DEPTH_SCALE = 0.01  # centimetres
VKITTI2_SKY = 65535
VKITTI2_FPS = 10.0  # rendered at KITTI's 10 Hz; the release ships no timestamps
SPIRES_MAX_TIME_DIFF = 0.025  # the release's max_time_diff_camera_and_pose
GENERIC_TRAJECTORIES = ("poses_tum.txt", "poses_kitti.txt", "groundtruth.txt", "trajectory_tum.txt", "poses.txt")
GENERIC_INTRINSICS = ("intrinsics.json", "intrinsics.txt", "K.txt")
POINT_CLOUD_EXTENSIONS = (".ply", ".pcd")


@dataclass
class DatasetSequence:
    """One sequence of a dataset with its ground truth.

    name: "00", "Scene01/clone", "rgbd_dataset_freiburg1_xyz", ...
    image_paths: N image files in time order.
    timestamps: (N,) float64 seconds (frame index / fps, or the index, where the dataset has none).
    c2w: (N, 4, 4) float64 camera-to-world, OpenCV camera axes; None without ground truth.
    K: (3, 3) shared or (N, 3, 3) per frame, float64, at the original resolution (OpenCV pixel centres).
    image_size: (width, height) of the original images.
    depth_paths: per frame a depth file or None (no depth for that frame); None without depth.
    depth_scale: metres per stored depth unit; depth_invalid: a stored value meaning "no depth"
    (besides 0), e.g. VKITTI2's 65535 sky.
    point_cloud: a reference point cloud file; point_cloud_transform: (4, 4) mapping its
    coordinates into the c2w world frame, None when they are already there.
    notes: one line per assumption, dropped frame or approximation the reader made.
    """

    name: str
    image_paths: List[Path]
    timestamps: np.ndarray
    c2w: Optional[np.ndarray]
    K: np.ndarray
    image_size: Tuple[int, int]
    depth_paths: Optional[List[Optional[Path]]] = None
    depth_scale: float = 1.0
    point_cloud: Optional[Path] = None
    dataset: str = ""
    notes: List[str] = field(default_factory=list)
    depth_invalid: Optional[float] = None
    point_cloud_transform: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        # Readers build these from files; a mismatch here means the files disagree, so say which.
        n = len(self.image_paths)
        where = f"{self.dataset or 'dataset'} {self.name}"
        self.image_paths = [Path(p) for p in self.image_paths]
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        self.K = np.asarray(self.K, dtype=np.float64)
        if self.timestamps.shape != (n,):
            raise InputError(f"{where}: {len(self.timestamps)} timestamps for {n} images")
        if self.c2w is not None:
            self.c2w = np.asarray(self.c2w, dtype=np.float64)
            if self.c2w.shape != (n, 4, 4):
                raise InputError(f"{where}: poses of shape {self.c2w.shape} for {n} images")
        if self.K.shape not in ((3, 3), (n, 3, 3)):
            raise InputError(f"{where}: intrinsics of shape {self.K.shape} for {n} images")
        if self.depth_paths is not None and len(self.depth_paths) != n:
            raise InputError(f"{where}: {len(self.depth_paths)} depth maps for {n} images")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        return len(self.image_paths)

    def __repr__(self) -> str:
        w, h = self.image_size
        return (f"DatasetSequence({self.dataset} {self.name!r}, {len(self)} frames, {w}x{h}, "
                f"poses={'yes' if self.c2w is not None else 'no'}, depth={'yes' if self.depth_paths else 'no'})")

    def intrinsics(self, index: int) -> np.ndarray:
        """K (3, 3) of frame `index`, whether K is shared or per frame."""
        return (self.K if self.K.ndim == 2 else self.K[index]).copy()

    def load_image(self, index: int) -> np.ndarray:
        """Frame `index` at the original size → uint8 (H, W, 3) RGB."""
        return decode_image(self.image_paths[index])

    def load_depth(self, index: int) -> np.ndarray:
        """Depth of frame `index` → (H, W) float32 z-depth in metres, 0 = invalid (a frame without a
        depth file gives all zeros at the image size)."""
        if self.depth_paths is None:
            raise InputError(f"{self.dataset} {self.name}: this sequence has no depth maps")
        path = self.depth_paths[index]
        if path is None:
            w, h = self.image_size
            return np.zeros((h, w), np.float32)
        raw = _read_depth_file(path)
        valid = np.isfinite(raw) & (raw > 0)
        if self.depth_invalid is not None:
            valid &= raw != self.depth_invalid
        return np.where(valid, raw * self.depth_scale, 0.0).astype(np.float32)

    def frames(self, options: FrameOptions = FrameOptions()) -> FrameSource:
        """The images as a lazy `FrameSource` (preprocessed to the network size as `open_frames` does);
        a frame's `source_index` is its index here, so `c2w[frame.source_index]` is its pose."""
        return ImageFilesSource(self.image_paths, f"{self.dataset} {self.name}", options, kind="dataset")


# --- entry point -------------------------------------------------------------------------------------

def read_dataset(name: str, root: PathLike, sequences: SequenceNames = None, **options) -> List[DatasetSequence]:
    """Read the sequences of dataset `name` (one of `DATASETS`) under `root`.

    sequences: None for all, or names (a str, an int for KITTI's "NN", or a list of them).
    options: reader-specific (kitti: camera; vkitti2: variation, camera; tum: max_time_diff;
    oxford-spires: camera, max_time_diff)."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _READERS:
        raise InputError(f"unknown dataset {name!r} (choose one of {', '.join(DATASETS)})")
    reader = _READERS[key]
    accepted = [p for p in inspect.signature(reader).parameters if p not in ("root", "sequences")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{key}: unknown option {', '.join(unknown)} "
                         f"(options: {', '.join(accepted) if accepted else 'none'})")
    return reader(root, sequences, **options)


# --- small shared helpers ------------------------------------------------------------------------------

def _error(dataset: str, message: str) -> InputError:
    """One-line InputError prefixed with the dataset (paths with newlines would break the line)."""
    return InputError(f"{dataset}: " + " ".join(message.split("\n")))


def _root_dir(dataset: str, root: PathLike, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _error(dataset, f"{root} is not a folder (expected the {dataset} layout: {layout})")
    return root


def _requested(sequences: SequenceNames, normalise: Callable[[str], str] = str) -> Optional[List[str]]:
    if sequences is None:
        return None
    if isinstance(sequences, (str, int)):
        sequences = [sequences]
    return [normalise(str(s)) for s in sequences]


def _names_list(names: Sequence[str], limit: int = 20) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


def _choose(dataset: str, found: Dict[str, Path], requested: Optional[List[str]], where: Path) -> List[Tuple[str, Path]]:
    """The found sequences in natural order, or the requested ones (InputError naming those found)."""
    names = sorted(found, key=natural_key)
    if requested is None:
        return [(n, found[n]) for n in names]
    missing = [r for r in requested if r not in found]
    if missing:
        raise _error(dataset, f"no sequence {', '.join(repr(m) for m in missing)} in {where} "
                              f"(found {_names_list(names)})")
    return [(r, found[r]) for r in requested]


def _rows(path: Path, dataset: str) -> List[Tuple[int, List[str]]]:
    """(line number, tokens) of the non-blank, non-# lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise _error(dataset, f"cannot read {path}: {exc.strerror or exc}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((lineno, line.split()))
    return out


def _numbers(tokens: Sequence[str], path: Path, lineno: int, dataset: str) -> List[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise _error(dataset, f"{path}:{lineno}: not a number in {' '.join(tokens)!r}") from None


def _pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _compact_K(Ks: np.ndarray) -> np.ndarray:
    """(N, 3, 3) → (3, 3) when every frame has the same K (the common case), else unchanged."""
    return Ks[0].copy() if len(Ks) and np.all(Ks == Ks[0]) else Ks


def _translation(t: Sequence[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = t
    return T


def _xyz_quat_xyzw(values: Sequence[float]) -> np.ndarray:
    """[tx ty tz qx qy qz qw] → (4, 4) rigid transform."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (7,):
        raise InputError(f"expected 7 numbers (x y z qx qy qz qw), got {values.size}")
    T = _translation(values[:3])
    T[:3, :3] = quaternion_to_matrix(values[3:7])[0]
    return T


def _size_of(path: Path) -> Tuple[int, int]:
    """(width, height) of an image from its header."""
    h, w = image_size(path)
    return w, h


def _read_depth_file(path: Path) -> np.ndarray:
    """A stored depth map → float64 (H, W) in its stored units (no scaling)."""
    try:
        if path.suffix.lower() == ".npy":
            raw = np.load(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                raw = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot read depth map {path}: {reason}") from None
    if raw.ndim != 2:
        raise InputError(f"depth map {path}: expected one channel, got shape {raw.shape}")
    return raw.astype(np.float64)


def _sniff_trajectory(path: Path, dataset: str) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """A TUM (8 columns) or KITTI (12 columns) file → (timestamps (N,) or None, c2w (N, 4, 4))."""
    rows = _rows(path, dataset)
    columns = len(rows[0][1]) if rows else 0
    if columns == 8:
        return read_tum(path)
    if columns == 12:
        return None, read_kitti(path)
    raise _error(dataset, f"{path}: neither TUM (8 columns) nor KITTI (12 columns) poses; found {columns} columns")


def _intrinsics_file(path: Path, size: Tuple[int, int], dataset: str) -> Tuple[np.ndarray, List[str]]:
    """K (3, 3) or (N, 3, 3) from a JSON or text intrinsics file for images of `size` (w, h), and notes.

    JSON: `scal3r.io.intrinsics` ({"K", "width", "height"}) or {"fx", "fy", "cx", "cy"[, "width",
    "height"]}. Text: nine numbers of a 3×3 K (bottom row 0 0 1), or `fx fy cx cy [distortion…]`
    (the TUM / DROID-SLAM calib.txt form)."""
    notes: List[str] = []
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _error(dataset, f"{path}: not readable JSON ({exc})") from None
        if isinstance(doc, dict) and "K" in doc:
            intr = read_intrinsics(path)
            K, file_size = intr.K, (intr.width, intr.height)
        elif isinstance(doc, dict) and all(k in doc for k in ("fx", "fy", "cx", "cy")):
            K = _pinhole(float(doc["fx"]), float(doc["fy"]), float(doc["cx"]), float(doc["cy"]))
            file_size = (int(doc["width"]), int(doc["height"])) if "width" in doc and "height" in doc else None
        else:
            raise _error(dataset, f"{path}: expected a JSON object with K, width, height (or fx, fy, cx, cy)")
        if file_size is not None and tuple(file_size) != tuple(size):
            raise _error(dataset, f"{path} is for {file_size[0]}x{file_size[1]} images but they are "
                                  f"{size[0]}x{size[1]}")
        return K, notes
    values = [v for lineno, tokens in _rows(path, dataset) for v in _numbers(tokens, path, lineno, dataset)]
    if len(values) == 9 and values[6:9] == [0.0, 0.0, 1.0] and values[3] == 0.0:
        return np.asarray(values).reshape(3, 3), notes
    if len(values) >= 4:
        if any(v != 0 for v in values[4:]):
            notes.append(f"{path.name} lists lens distortion {values[4:]}; K is its pinhole part only")
        return _pinhole(*values[:4]), notes
    raise _error(dataset, f"{path}: expected a 3x3 K or `fx fy cx cy`, got {len(values)} numbers")


def _first_file(folder: Path, names: Sequence[str]) -> Optional[Path]:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _timestamp_from_name(stem: str) -> Optional[float]:
    """Seconds from an image name: "1710338090.104296000", "1305031102.175304" or "1710338090_104296000"."""
    if re.fullmatch(r"\d+(\.\d+)?", stem):
        return float(stem)
    m = re.fullmatch(r"(\d+)_(\d{9})", stem)
    return int(m.group(1)) + int(m.group(2)) * 1e-9 if m else None


# --- KITTI odometry -----------------------------------------------------------------------------------

def _kitti_calib(path: Path) -> Dict[str, np.ndarray]:
    """calib.txt → {"P0": (3, 4), ..., "Tr": (3, 4)}."""
    out = {}
    for lineno, tokens in _rows(path, "kitti"):
        key = tokens[0].rstrip(":")
        values = _numbers(tokens[1:], path, lineno, "kitti")
        if len(values) == 12:
            out[key] = np.asarray(values).reshape(3, 4)
    return out


def read_kitti_odometry(root: PathLike, sequences: SequenceNames = None,
                        camera: Optional[str] = None) -> List[DatasetSequence]:
    """KITTI odometry: root/sequences/NN/{image_2|image_0,...}/, calib.txt, times.txt, root/poses/NN.txt.

    camera: "image_2" (colour, the default when present), "image_0" (grey, the default otherwise),
    "image_1" or "image_3"; K is the left 3×3 of that camera's P matrix."""
    root = _root_dir("kitti", root, KITTI_LAYOUT)
    seq_root = root / "sequences"
    cameras = (camera,) if camera else ("image_2", "image_0")
    found = {}
    if seq_root.is_dir():
        found = {d.name: d for d in seq_root.iterdir() if d.is_dir() and any((d / c).is_dir() for c in cameras)}
    if not found:
        what = f"sequences/NN/{camera} folders" if camera else "sequences/NN/image_2 or image_0 folders"
        raise _error("kitti", f"{root} has no {what} (expected the KITTI odometry layout: {KITTI_LAYOUT})")
    chosen = _choose("kitti", found, _requested(sequences, lambda s: f"{int(s):02d}" if s.isdigit() else s), seq_root)
    return [_kitti_sequence(root, name, folder, camera) for name, folder in chosen]


def _kitti_sequence(root: Path, name: str, folder: Path, camera: Optional[str]) -> DatasetSequence:
    cam = camera or ("image_2" if (folder / "image_2").is_dir() else "image_0")
    if not (folder / cam).is_dir():
        raise _error("kitti", f"{folder} has no {cam} folder (expected the KITTI odometry layout: {KITTI_LAYOUT})")
    m = re.fullmatch(r"image_(\d)", cam)
    if m is None:
        raise _error("kitti", f"camera {cam!r} is not one of image_0, image_1, image_2, image_3")
    images = list_images(folder / cam)
    if not images:
        raise _error("kitti", f"{folder / cam} has no images")
    calib_path = folder / "calib.txt"
    if not calib_path.is_file():
        raise _error("kitti", f"{folder} has no calib.txt (expected the KITTI odometry layout: {KITTI_LAYOUT})")
    calib = _kitti_calib(calib_path)
    key = f"P{m.group(1)}"
    if key not in calib:
        raise _error("kitti", f"{calib_path} has no {key}: line with 12 numbers (needed for {cam})")
    P = calib[key]
    K = P[:, :3].copy()
    notes: List[str] = []
    times_path = folder / "times.txt"
    if times_path.is_file():
        times = np.asarray([_numbers(t, times_path, ln, "kitti")[0] for ln, t in _rows(times_path, "kitti")])
        if len(times) != len(images):
            raise _error("kitti", f"{times_path} has {len(times)} times for {len(images)} images in {folder / cam}")
    else:
        times = np.arange(len(images)) / 10.0
        notes.append("no times.txt: timestamps are frame / 10 Hz")
    c2w = None
    poses_path = root / "poses" / f"{name}.txt"
    if poses_path.is_file():
        c2w0 = read_kitti(poses_path)
        if len(c2w0) != len(images):
            raise _error("kitti", f"{poses_path} has {len(c2w0)} poses for {len(images)} images in {folder / cam}")
        # The poses are of the rectified camera 0. Rectified camera i projects camera-0 points X0 as
        # P_i = K_i [I | t_i], so its coordinates are X_i = X0 + t_i with t_i = K_i⁻¹ P_i[:, 3]: the
        # same rotation, centre at -t_i in camera 0. For image_2 that is essentially a translation by
        # -P2[0,3]/P2[0,0] ≈ -0.06 m along camera 0's x (P2's other two entries are millimetres).
        t = np.linalg.solve(K, P[:, 3])
        c2w = c2w0 @ _translation(-t)
        if np.any(t != 0):
            notes.append(f"poses are camera 0's, moved to {cam} by {np.round(-t, 4).tolist()} m (from {key})")
    else:
        notes.append(f"no ground truth {poses_path} (KITTI publishes poses for sequences 00-10 only)")
    return DatasetSequence(name=name, image_paths=images, timestamps=times, c2w=c2w, K=K,
                           image_size=_size_of(images[0]), dataset="kitti", notes=notes)


# --- Virtual KITTI 2 -------------------------------------------------------------------------------------

def _vkitti2_table(path: Path, columns: int, camera_id: int) -> Dict[int, List[float]]:
    """intrinsic.txt / extrinsic.txt → {frame: numbers after `frame cameraID`} for one camera."""
    out = {}
    for lineno, tokens in _rows(path, "vkitti2"):
        if tokens[0] == "frame":  # the header line
            continue
        if len(tokens) != columns:
            raise _error("vkitti2", f"{path}:{lineno}: expected {columns} columns, got {len(tokens)}")
        values = _numbers(tokens, path, lineno, "vkitti2")
        if int(values[1]) == camera_id:
            out[int(values[0])] = values[2:]
    return out


def read_vkitti2(root: PathLike, sequences: SequenceNames = None, variation: str = "clone",
                 camera: str = "Camera_0") -> List[DatasetSequence]:
    """Virtual KITTI 2: root/SceneXX/<variation>/{frames/rgb,frames/depth}/<camera>/, intrinsic.txt,
    extrinsic.txt. Sequences are "SceneXX/<variation>"."""
    root = _root_dir("vkitti2", root, VKITTI2_LAYOUT)
    found = {}
    for scene in root.iterdir():
        if not scene.is_dir():
            continue
        for var in scene.iterdir():
            if (var / "frames" / "rgb" / camera).is_dir():
                found[f"{scene.name}/{var.name}"] = var
    if not found:
        raise _error("vkitti2", f"{root} has no SceneXX/<variation>/frames/rgb/{camera} folders "
                                f"(expected the Virtual KITTI 2 layout: {VKITTI2_LAYOUT})")
    requested = _requested(sequences, lambda s: s.strip("/") if "/" in s else f"{s}/{variation}")
    if requested is None:
        requested = sorted((n for n in found if n.split("/", 1)[1] == variation), key=natural_key)
        if not requested:
            variations = sorted({n.split("/", 1)[1] for n in found})
            raise _error("vkitti2", f"no scene of {root} has the variation {variation!r} (found {_names_list(variations)})")
    return [_vkitti2_sequence(name, folder, camera) for name, folder in _choose("vkitti2", found, requested, root)]


def _vkitti2_sequence(name: str, folder: Path, camera: str) -> DatasetSequence:
    m = re.fullmatch(r"Camera_(\d+)", camera)
    if m is None:
        raise _error("vkitti2", f"camera {camera!r} is not Camera_0 or Camera_1")
    cam_id = int(m.group(1))
    images = list_images(folder / "frames" / "rgb" / camera)
    frames = []
    for p in images:
        fm = re.fullmatch(r"rgb_(\d+)", p.stem)
        if fm is None:
            raise _error("vkitti2", f"{p}: expected rgb_NNNNN.jpg names")
        frames.append(int(fm.group(1)))
    if not images:
        raise _error("vkitti2", f"{folder / 'frames' / 'rgb' / camera} has no images")
    tables = {}
    for fname, columns in (("intrinsic.txt", 6), ("extrinsic.txt", 18)):
        path = folder / fname
        if not path.is_file():
            raise _error("vkitti2", f"{folder} has no {fname} (expected the Virtual KITTI 2 layout: {VKITTI2_LAYOUT})")
        tables[fname] = _vkitti2_table(path, columns, cam_id)
        missing = [f for f in frames if f not in tables[fname]]
        if missing:
            raise _error("vkitti2", f"{path} has no line for frame {missing[0]} of {camera} "
                                    f"({len(missing)} of {len(frames)} frames missing)")
    K = _compact_K(np.stack([_pinhole(*tables["intrinsic.txt"][f]) for f in frames]))
    # extrinsic.txt holds world-to-camera matrices (camera axes as KITTI's); invert for c2w.
    w2c = np.stack([np.asarray(tables["extrinsic.txt"][f]).reshape(4, 4) for f in frames])
    c2w = invert_rigid(w2c)
    depth_dir = folder / "frames" / "depth" / camera
    depth_paths = None
    notes = [f"no timestamps in Virtual KITTI 2: frame / {VKITTI2_FPS:g} Hz"]
    if depth_dir.is_dir():
        depth_paths = [depth_dir / f"depth_{f:05d}.png" for f in frames]
        missing = sum(not p.is_file() for p in depth_paths)
        depth_paths = [p if p.is_file() else None for p in depth_paths]
        if missing:
            notes.append(f"{missing} of {len(frames)} frames have no depth map")
    return DatasetSequence(name=name, image_paths=images, timestamps=np.asarray(frames) / VKITTI2_FPS, c2w=c2w, K=K,
                           image_size=_size_of(images[0]), depth_paths=depth_paths, depth_scale=VKITTI2_DEPTH_SCALE,
                           depth_invalid=VKITTI2_SKY, dataset="vkitti2", notes=notes)


# --- TUM RGB-D ---------------------------------------------------------------------------------------------

def _tum_list(path: Path, base: Path) -> Tuple[np.ndarray, List[Path]]:
    """rgb.txt / depth.txt → (timestamps (N,), files), files relative to the sequence folder."""
    times, files = [], []
    for lineno, tokens in _rows(path, "tum"):
        if len(tokens) < 2:
            raise _error("tum", f"{path}:{lineno}: expected `timestamp filename`")
        times.append(_numbers(tokens[:1], path, lineno, "tum")[0])
        files.append(base / tokens[1])
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise _error("tum", f"{path} lists {len(missing)} missing files, first {missing[0]}")
    return np.asarray(times, dtype=np.float64), files


def read_tum_rgbd(root: PathLike, sequences: SequenceNames = None,
                  max_time_diff: float = TUM_MAX_TIME_DIFF) -> List[DatasetSequence]:
    """TUM RGB-D: root/<seq>/{rgb.txt,depth.txt,groundtruth.txt} (root may be one sequence).

    Frames are matched to ground truth (and depth) by nearest timestamp within `max_time_diff`,
    greedily and one-to-one as TUM's associate.py; frames without a ground-truth match are dropped."""
    root = _root_dir("tum", root, TUM_LAYOUT)
    if (root / "rgb.txt").is_file():
        found = {root.name: root}
    else:
        found = {d.name: d for d in root.iterdir() if d.is_dir() and (d / "rgb.txt").is_file()}
    if not found:
        raise _error("tum", f"{root} has no rgb.txt, nor sub-folders with one "
                            f"(expected the TUM RGB-D layout: {TUM_LAYOUT})")
    chosen = _choose("tum", found, _requested(sequences), root)
    return [_tum_sequence(name, folder, max_time_diff) for name, folder in chosen]


def _tum_sequence(name: str, folder: Path, max_time_diff: float) -> DatasetSequence:
    t_rgb, rgb = _tum_list(folder / "rgb.txt", folder)
    if not rgb:
        raise _error("tum", f"{folder / 'rgb.txt'} lists no images")
    notes: List[str] = []
    gt_path = folder / "groundtruth.txt"
    keep = np.arange(len(rgb))
    c2w = None
    if gt_path.is_file():
        t_gt, gt = read_tum(gt_path)
        # TUM's poses are of the colour camera's optical frame (x right, y down, z forward) in the
        # motion-capture world: already camera-to-world with OpenCV axes, no conversion needed.
        ia, ib = associate_timestamps(t_rgb, t_gt, max_time_diff)
        keep, c2w = ia, gt[ib]
        if len(keep) < len(rgb):
            notes.append(f"dropped {len(rgb) - len(keep)} of {len(rgb)} frames without ground truth "
                         f"within {max_time_diff:g} s")
        if not len(keep):
            raise _error("tum", f"no frame of {folder / 'rgb.txt'} has a pose in {gt_path} within {max_time_diff:g} s")
    else:
        notes.append("no groundtruth.txt: c2w is None")
    depth_paths = None
    if (folder / "depth.txt").is_file():
        t_depth, depth = _tum_list(folder / "depth.txt", folder)
        ja, jb = associate_timestamps(t_rgb[keep], t_depth, max_time_diff)
        depth_paths = [None] * len(keep)
        for a, b in zip(ja, jb):
            depth_paths[a] = depth[b]
        if len(ja) < len(keep):
            notes.append(f"{len(keep) - len(ja)} of {len(keep)} frames have no depth within {max_time_diff:g} s "
                         "(all-zero depth)")
    images = [rgb[i] for i in keep]
    size = _size_of(images[0])
    K, more = _tum_intrinsics(name, folder, size)
    return DatasetSequence(name=name, image_paths=images, timestamps=t_rgb[keep], c2w=c2w, K=K, image_size=size,
                           depth_paths=depth_paths, depth_scale=TUM_DEPTH_SCALE, dataset="tum", notes=notes + more)


def _tum_intrinsics(name: str, folder: Path, size: Tuple[int, int]) -> Tuple[np.ndarray, List[str]]:
    override = _first_file(folder, ("intrinsics.json", "intrinsics.txt", "calib.txt", "K.txt"))
    if override is not None:
        K, notes = _intrinsics_file(override, size, "tum")
        return K, notes + [f"intrinsics from {override.name}"]
    m = re.search(r"(?:freiburg|fr)([123])", name.lower())
    if m is None:
        raise _error("tum", f"cannot tell the camera of {folder} (no freiburg1/2/3 or fr1/2/3 in its name) "
                            "and it has no intrinsics.txt or calib.txt (`fx fy cx cy`)")
    fr = int(m.group(1))
    K = _pinhole(*TUM_INTRINSICS[fr])
    notes = [f"fr{fr} intrinsics published with the benchmark"]
    if size != (640, 480):
        # TUM's values are for 640×480; scale them for resized copies so K stays at image resolution.
        K[0] *= size[0] / 640.0
        K[1] *= size[1] / 480.0
        notes.append(f"images are {size[0]}x{size[1]}: K scaled from TUM's 640x480 values (assumes a plain resize)")
    if fr in (1, 2):
        notes.append(f"fr{fr} images carry radial distortion that K does not model")
    return K, notes


# --- ETH3D --------------------------------------------------------------------------------------------------

def read_eth3d(root: PathLike, sequences: SequenceNames = None) -> List[DatasetSequence]:
    """ETH3D high-res multi-view: root/<scene>/images/dslr_images_undistorted/, dslr_calibration_undistorted/
    (COLMAP text), dslr_scan_eval/ (root may be one scene)."""
    root = _root_dir("eth3d", root, ETH3D_LAYOUT)
    calib = Path("dslr_calibration_undistorted") / "images.txt"
    if (root / calib).is_file():
        found = {root.name: root}
    else:
        found = {d.name: d for d in root.iterdir() if d.is_dir() and (d / calib).is_file()}
    if not found:
        raise _error("eth3d", f"{root} has no <scene>/dslr_calibration_undistorted/images.txt "
                              f"(expected the ETH3D high-res layout: {ETH3D_LAYOUT})")
    return [_eth3d_scene(name, folder) for name, folder in _choose("eth3d", found, _requested(sequences), root)]


def _colmap_cameras(path: Path) -> Dict[int, Tuple[np.ndarray, Tuple[int, int]]]:
    """cameras.txt → {camera id: (K (3, 3) in OpenCV pixel centres, (width, height))}."""
    out = {}
    for lineno, tokens in _rows(path, "eth3d"):
        if len(tokens) < 5:
            raise _error("eth3d", f"{path}:{lineno}: expected `CAMERA_ID MODEL WIDTH HEIGHT PARAMS…`")
        model = tokens[1]
        cam_id, w, h = int(tokens[0]), int(tokens[2]), int(tokens[3])
        params = _numbers(tokens[4:], path, lineno, "eth3d")
        if model == "PINHOLE" and len(params) == 4:
            fx, fy, cx, cy = params
        elif model == "SIMPLE_PINHOLE" and len(params) == 3:
            fx, cx, cy = params
            fy = fx
        else:
            raise _error("eth3d", f"{path}:{lineno}: camera model {model} with {len(params)} parameters is not "
                                  "a pinhole (use dslr_calibration_undistorted with the undistorted images)")
        # COLMAP puts the top-left pixel's centre at (0.5, 0.5); scal3r's K puts it at (0, 0).
        out[cam_id] = (_pinhole(fx, fy, cx - 0.5, cy - 0.5), (w, h))
    return out


def _colmap_images(path: Path) -> List[Tuple[str, np.ndarray, int]]:
    """images.txt → [(NAME, w2c (4, 4), CAMERA_ID)]. Each image is two lines, the second (its 2D
    points) possibly empty, so blank lines only separate records where a header is expected — as
    COLMAP's own reader does."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise _error("eth3d", f"cannot read {path}: {exc.strerror or exc}") from None
    out = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        if len(tokens) < 10:
            raise _error("eth3d", f"{path}:{i}: expected `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`")
        q_wxyz = _numbers(tokens[1:5], path, i, "eth3d")
        t = _numbers(tokens[5:8], path, i, "eth3d")
        w2c = _translation(t)
        w2c[:3, :3] = quaternion_to_matrix([q_wxyz[1], q_wxyz[2], q_wxyz[3], q_wxyz[0]])[0]
        out.append((" ".join(tokens[9:]), w2c, int(tokens[8])))
        i += 1  # the POINTS2D line
    return out


def _meshlab_matrices(path: Path) -> Dict[str, np.ndarray]:
    """A MeshLab .mlp project → {mesh file name: (4, 4) row-major mesh-to-world matrix}."""
    try:
        tree = ElementTree.parse(path)
    except (OSError, ElementTree.ParseError) as exc:
        raise _error("eth3d", f"{path}: not a readable MeshLab project ({exc})") from None
    out = {}
    for mesh in tree.iter("MLMesh"):
        matrix = mesh.find("MLMatrix44")
        if matrix is None or not mesh.get("filename"):
            continue
        values = [float(v) for v in (matrix.text or "").split()]
        if len(values) == 16:
            out[Path(mesh.get("filename")).name] = np.asarray(values).reshape(4, 4)
    return out


def _eth3d_scene(name: str, folder: Path) -> DatasetSequence:
    calib = folder / "dslr_calibration_undistorted"
    if not (calib / "cameras.txt").is_file():
        raise _error("eth3d", f"{calib} has no cameras.txt (expected the ETH3D high-res layout: {ETH3D_LAYOUT})")
    cameras = _colmap_cameras(calib / "cameras.txt")
    records = sorted(_colmap_images(calib / "images.txt"), key=lambda r: natural_key(r[0]))
    if not records:
        raise _error("eth3d", f"{calib / 'images.txt'} lists no images")
    image_dir = folder / "images"
    paths, Ks, sizes = [], [], set()
    for image_name, _, cam_id in records:
        # ETH3D names images relative to images/ ("dslr_images_undistorted/DSC_0286.JPG").
        path = image_dir / image_name if "/" in image_name else image_dir / "dslr_images_undistorted" / image_name
        if not path.is_file():
            raise _error("eth3d", f"{calib / 'images.txt'} names {image_name} but {path} does not exist")
        if cam_id not in cameras:
            raise _error("eth3d", f"{calib / 'images.txt'}: image {image_name} uses camera {cam_id}, not in cameras.txt")
        paths.append(path)
        Ks.append(cameras[cam_id][0])
        sizes.add(cameras[cam_id][1])
    size = cameras[records[0][2]][1]
    header = _size_of(paths[0])
    if header != size:
        raise _error("eth3d", f"{paths[0]} is {header[0]}x{header[1]} but cameras.txt says {size[0]}x{size[1]}")
    notes = ["no timestamps in ETH3D: the index in name order"]
    if len(sizes) > 1:
        notes.append(f"cameras of {len(sizes)} different sizes; image_size is the first image's")
    c2w = invert_rigid(np.stack([r[1] for r in records]))
    point_cloud, transform = None, None
    scans = sorted((folder / "dslr_scan_eval").glob("scan*.ply"), key=lambda p: natural_key(p.name))
    if scans:
        point_cloud = scans[0]
        mlp = folder / "dslr_scan_eval" / "scan_alignment.mlp"
        if mlp.is_file():
            transform = _meshlab_matrices(mlp).get(point_cloud.name)
        if transform is None:
            notes.append(f"no {point_cloud.name} matrix in scan_alignment.mlp: the scan is taken as aligned")
        if len(scans) > 1:
            notes.append(f"{len(scans)} laser scans; point_cloud is {point_cloud.name}")
    return DatasetSequence(name=name, image_paths=paths, timestamps=np.arange(len(paths), dtype=np.float64), c2w=c2w,
                           K=_compact_K(np.stack(Ks)), image_size=size, point_cloud=point_cloud,
                           point_cloud_transform=transform, dataset="eth3d", notes=notes)


# --- Oxford Spires ------------------------------------------------------------------------------------------

@dataclass
class _SpiresCalibration:
    """K (3, 3) for (width, height); base_from_camera (4, 4) or None; model; distortion."""

    K: np.ndarray
    size: Optional[Tuple[int, int]]
    base_from_camera: Optional[np.ndarray]
    model: str
    distortion: List[float]
    source: Path


_YamlCamera = Tuple[np.ndarray, Optional[Tuple[int, int]], Optional[np.ndarray], str, List[float]]


def _spires_yaml_camera(doc: object, camera: str) -> Optional[_YamlCamera]:
    """(K, size, camera_from_lidar or None, model, distortion) of `camera` from a parsed sensor YAML."""
    if not isinstance(doc, dict):
        return None
    sensor = doc.get("sensor", doc)
    if isinstance(sensor, dict) and isinstance(sensor.get("cameras"), list):
        # The release's sensor.yaml: cameras listed with their ROS topic (…/cam0/…) and a label.
        for cam in sensor["cameras"]:
            if not isinstance(cam, dict):
                continue
            if f"/{camera}/" in str(cam.get("topic", "")) or cam.get("label") == camera:
                K = _pinhole(*[float(v) for v in cam["intrinsics"][:4]])
                size = (int(cam["image_width"]), int(cam["image_height"])) if "image_width" in cam else None
                T = cam.get("T_cam_lidar_t_xyz_q_xyzw")
                return (K, size, _xyz_quat_xyzw(T) if T is not None else None, str(sensor.get("camera_model", "")),
                        [float(v) for v in cam.get("extra_params", [])])
        return None
    cam = doc.get(camera)
    if not isinstance(cam, dict):
        return None
    # The cam-lidar-imu.yaml form: one mapping per camera name.
    if "K_rect" in cam or "K" in cam:
        K = np.asarray(cam.get("K_rect", cam.get("K")), dtype=np.float64).reshape(3, 3)
    elif "intrinsics" in cam:
        K = _pinhole(*[float(v) for v in cam["intrinsics"][:4]])
    else:
        return None
    w, h = cam.get("width", cam.get("image_width")), cam.get("height", cam.get("image_height"))
    T = cam.get("T_cam_lidar_t_xyz_q_xyzw_overwrite", cam.get("T_cam_lidar_t_xyz_q_xyzw"))
    T = _xyz_quat_xyzw(T) if T is not None else (np.asarray(cam["T_cam_lidar"], dtype=np.float64).reshape(4, 4)
                                                  if "T_cam_lidar" in cam else None)
    model = "PINHOLE (rectified)" if "K_rect" in cam else str(cam.get("camera_model", ""))
    return K, (int(w), int(h)) if w and h else None, T, model, [float(v) for v in cam.get("distortion_coeffs", [])]


def _spires_calibration(seq: Path, camera: str) -> Optional[_SpiresCalibration]:
    import yaml

    candidates = [seq / "sensor.yaml"]
    for folder in (seq / "calibration", seq.parent / "calibration", seq.parent.parent / "calibration"):
        if folder.is_dir():
            candidates += sorted(folder.glob("*.yaml"), key=lambda p: natural_key(p.name))
    for path in candidates:
        if not path.is_file():
            continue
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            found = _spires_yaml_camera(doc, camera)
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, IndexError, InputError):
            continue  # not a calibration file of this form; try the next
        if found is None:
            continue
        K, size, cam_from_lidar, model, distortion = found
        base_from_camera = None
        if cam_from_lidar is not None:
            sensor = doc.get("sensor", doc)
            base = sensor.get("T_base_lidar_t_xyz_q_xyzw") or doc.get("T_base_lidar_t_xyz_q_xyzw")
            base_from_lidar = _xyz_quat_xyzw(base) if base is not None else np.eye(4)
            # Points: p_cam = T_cam_lidar p_lidar and p_base = T_base_lidar p_lidar, so the camera's
            # pose in the base frame is T_base_lidar · T_cam_lidar⁻¹.
            base_from_camera = base_from_lidar @ invert_rigid(cam_from_lidar)
        return _SpiresCalibration(K, size, base_from_camera, model, distortion, path)
    return None


def _spires_images(seq: Path, camera: str) -> List[Path]:
    folder = seq / "images"
    if (folder / camera).is_dir():
        return list_images(folder / camera)
    if folder.is_dir():
        named = sorted((d for d in folder.iterdir() if d.is_dir() and camera in d.name), key=lambda d: d.name)
        if named:
            return list_images(named[0])
        return list_images(folder)
    return []


def read_oxford_spires(root: PathLike, sequences: SequenceNames = None, camera: str = "cam0",
                       max_time_diff: float = SPIRES_MAX_TIME_DIFF) -> List[DatasetSequence]:
    """Oxford Spires (layout in the module docstring); frames without a pose within `max_time_diff`
    seconds are dropped."""
    root = _root_dir("oxford-spires", root, SPIRES_LAYOUT)
    if (root / "images").is_dir():
        found = {root.name: root}
    else:
        found = {}
        for parent in (root, root / "sequences"):
            if parent.is_dir():
                found.update({d.name: d for d in parent.iterdir() if d.is_dir() and (d / "images").is_dir()})
    if not found:
        raise _error("oxford-spires", f"{root} has no <sequence>/images/ folders, nor sequences/<sequence>/images/ "
                                      f"(expected the Oxford Spires layout: {SPIRES_LAYOUT})")
    chosen = _choose("oxford-spires", found, _requested(sequences), root)
    return [_spires_sequence(name, folder, camera, max_time_diff) for name, folder in chosen]


def _spires_trajectory(seq: Path) -> Optional[Path]:
    fixed = [seq / "processed" / "trajectory" / "gt-tum.txt", seq / "ground_truth" / "gt-tum.txt", seq / "gt-tum.txt"]
    # Any *tum*.txt at the top of the sequence, but not estimates kept beside the ground truth in
    # processed/trajectory (e.g. vilens-slam-tum.txt).
    loose = sorted(seq.glob("*tum*.txt"), key=lambda p: (not p.name.startswith("gt"), natural_key(p.name)))
    return next((p for p in fixed + loose if p.is_file()), None)


def _spires_sequence(name: str, seq: Path, camera: str, max_time_diff: float) -> DatasetSequence:
    images = _spires_images(seq, camera)
    if not images:
        raise _error("oxford-spires", f"{seq} has no images in images/{camera}/ or images/ "
                                      f"(expected the Oxford Spires layout: {SPIRES_LAYOUT})")
    size = _size_of(images[0])
    notes: List[str] = []
    intrinsics_file = _first_file(seq, ("intrinsics.json", "calib.json"))
    calib = _spires_calibration(seq, camera)
    if intrinsics_file is not None:
        K, more = _intrinsics_file(intrinsics_file, size, "oxford-spires")
        notes += more
    elif calib is not None:
        if calib.size is not None and calib.size != size:
            raise _error("oxford-spires", f"{calib.source} describes {camera} as {calib.size[0]}x{calib.size[1]} "
                                          f"but {images[0]} is {size[0]}x{size[1]}")
        K = calib.K
        if "FISHEYE" in calib.model.upper() or any(d != 0 for d in calib.distortion):
            notes.append(f"{calib.source.name}: {camera} is {calib.model or 'distorted'} with distortion "
                         f"{calib.distortion}; K is its pinhole part only (use rectified images for a pinhole model)")
    else:
        raise _error("oxford-spires", f"{seq} has no intrinsics.json, calib.json or sensor YAML for {camera} "
                                      f"(expected the Oxford Spires layout: {SPIRES_LAYOUT})")
    stamps = [_timestamp_from_name(p.stem) for p in images]
    traj_path = _spires_trajectory(seq)
    c2w = None
    if traj_path is None:
        notes.append("no gt-tum.txt: c2w is None")
        times = np.asarray(stamps, dtype=np.float64) if None not in stamps else np.arange(len(images), dtype=np.float64)
    else:
        t_gt, gt = read_tum(traj_path)
        if None in stamps:
            if len(gt) != len(images):
                bad = images[stamps.index(None)].name
                raise _error("oxford-spires", f"{bad} is not named by its timestamp and {traj_path} has {len(gt)} "
                                              f"poses for {len(images)} images, so they cannot be matched")
            notes.append("images not named by timestamp: matched to poses in order")
            keep, times = np.arange(len(images)), t_gt
        else:
            ia, ib = associate_timestamps(np.asarray(stamps), t_gt, max_time_diff)
            # The frames keep their own (camera) timestamps; each takes its matched pose as is.
            keep, times, gt = ia, np.asarray(stamps)[ia], gt[ib]
            if len(ia) < len(images):
                notes.append(f"dropped {len(images) - len(ia)} of {len(images)} frames without ground truth "
                             f"within {max_time_diff:g} s")
            if not len(ia):
                raise _error("oxford-spires", f"no image of {seq} has a pose in {traj_path} within {max_time_diff:g} s")
        images = [images[i] for i in keep]
        if calib is not None and calib.base_from_camera is not None:
            # gt-tum.txt is the pose of the base frame; the camera sits at base_from_camera in it.
            c2w = gt @ calib.base_from_camera
            notes.append(f"ground truth moved from the base frame to {camera} with {calib.source.name}")
        else:
            c2w = gt
            notes.append(f"no camera extrinsics (sensor YAML): {traj_path.name} is used as the camera's poses "
                         "(the release's gt-tum.txt is the base frame's)")
    point_cloud = None
    for folder in (seq, seq / "ground_truth_map", seq / "gt_map", seq / "map", seq / "lidar_map"):
        if folder.is_dir():
            clouds = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in POINT_CLOUD_EXTENSIONS),
                            key=lambda p: natural_key(p.name))
            if clouds:
                point_cloud = clouds[0]
                if len(clouds) > 1:
                    notes.append(f"{len(clouds)} point clouds in {folder.name}; point_cloud is {point_cloud.name}")
                break
    return DatasetSequence(name=name, image_paths=images, timestamps=times, c2w=c2w, K=K, image_size=size,
                           point_cloud=point_cloud, dataset="oxford-spires", notes=notes)


# --- generic --------------------------------------------------------------------------------------------

def _generic_images(seq: Path) -> List[Path]:
    if (seq / "images").is_dir():
        return list_images(seq / "images")
    return list_images(seq)


def _is_generic(seq: Path) -> bool:
    return _first_file(seq, GENERIC_INTRINSICS) is not None and bool(_generic_images(seq))


def read_generic(root: PathLike, sequences: SequenceNames = None) -> List[DatasetSequence]:
    """A folder of images with a trajectory and intrinsics (layout in the module docstring), or a
    folder of such folders."""
    root = _root_dir("generic", root, GENERIC_LAYOUT)
    if _is_generic(root):
        found = {root.name: root}
    else:
        found = {d.name: d for d in root.iterdir() if d.is_dir() and _is_generic(d)}
    if not found:
        has_images = bool(_generic_images(root))
        what = ("images but no intrinsics.json, intrinsics.txt or K.txt beside them" if has_images
                else "no images/ folder (nor images) with intrinsics.json, intrinsics.txt or K.txt")
        raise _error("generic", f"{root} has {what}, nor sub-folders that do (expected: {GENERIC_LAYOUT})")
    return [_generic_sequence(name, folder) for name, folder in _choose("generic", found, _requested(sequences), root)]


def _generic_sequence(name: str, seq: Path) -> DatasetSequence:
    images = _generic_images(seq)
    size = _size_of(images[0])
    K, notes = _intrinsics_file(_first_file(seq, GENERIC_INTRINSICS), size, "generic")
    traj_path = _first_file(seq, GENERIC_TRAJECTORIES)
    times = np.arange(len(images), dtype=np.float64)
    c2w = None
    if traj_path is None:
        notes.append("no trajectory file: c2w is None, timestamps are frame indices")
    else:
        t, c2w = _sniff_trajectory(traj_path, "generic")
        if len(c2w) == len(images):
            if t is not None:
                times = t
            else:
                notes.append(f"{traj_path.name} has no timestamps: they are frame indices")
        else:
            stamps = [_timestamp_from_name(p.stem) for p in images]
            if t is None or None in stamps:
                raise _error("generic", f"{traj_path} has {len(c2w)} poses for {len(images)} images "
                                        "(and they cannot be matched by timestamp)")
            # Timestamp-named images (as TUM's) with their own pose rate: match as TUM does.
            ia, ib = associate_timestamps(np.asarray(stamps), t, TUM_MAX_TIME_DIFF)
            if not len(ia):
                raise _error("generic", f"no image of {seq} has a pose in {traj_path} within {TUM_MAX_TIME_DIFF:g} s")
            notes.append(f"matched images to poses by timestamp; dropped {len(images) - len(ia)} of {len(images)}")
            images, times, c2w = [images[i] for i in ia], np.asarray(stamps)[ia], c2w[ib]
    depth_paths = None
    if (seq / "depth").is_dir():
        depth_paths = [seq / "depth" / f"{p.stem}.npy" for p in images]
        if not any(p.is_file() for p in depth_paths):
            depth_paths = None
        else:
            missing = sum(not p.is_file() for p in depth_paths)
            depth_paths = [p if p.is_file() else None for p in depth_paths]
            if missing:
                notes.append(f"{missing} of {len(images)} frames have no depth/<name>.npy")
    point_cloud = seq / "scene_points.ply" if (seq / "scene_points.ply").is_file() else None
    if point_cloud is None:
        clouds = sorted((p for p in seq.iterdir() if p.is_file() and p.suffix.lower() in POINT_CLOUD_EXTENSIONS),
                        key=lambda p: natural_key(p.name))
        point_cloud = clouds[0] if clouds else None
    return DatasetSequence(name=name, image_paths=images, timestamps=times, c2w=c2w, K=K, image_size=size,
                           depth_paths=depth_paths, depth_scale=1.0, point_cloud=point_cloud, dataset="generic",
                           notes=notes)


_READERS: Dict[str, Callable[..., List[DatasetSequence]]] = {
    "kitti": read_kitti_odometry,
    "vkitti2": read_vkitti2,
    "tum": read_tum_rgbd,
    "eth3d": read_eth3d,
    "oxford-spires": read_oxford_spires,
    "generic": read_generic,
}
