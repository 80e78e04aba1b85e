"""The output folder of `scal3r reconstruct`: written atomically, in the field's file formats.

```
trajectory_tum.txt      per frame `t tx ty tz qx qy qz qw` (camera-to-world, OpenCV axes)
trajectory_kitti.txt    per frame the top 3×4 rows of camera-to-world, row-major
mat.txt                 the release's format: per frame the 4×4 camera-to-world of the release
                        (scale of the owning chunk folded into the rotation block), 16 numbers %.6f
intrinsics.json         {"K": N×3×3, "width", "height"} at the network size, OpenCV pixel convention
                        (pixel centres at integers), plus "K_input" / "input_sizes" for the
                        original frames
frames.txt              per frame: index, source frame number, name, timestamp
depth/000000.npy …      float32 (H, W) z-depth in world units (same scale as the trajectory)
confidence/000000.npy … float32 (H, W) the network's depth confidence (≥ 1, higher is better)
points.ply              fused point cloud, binary little-endian, float xyz + uchar rgb
colmap/                 cameras.txt, images.txt, points3D.txt (COLMAP text model, PINHOLE) and
                        images/ with the frames at the size the cameras describe
trajectory.png          top-down path coloured by time, loop edges (and ground truth with --gt)
summary.json            frames, chunks, loops, time and peak memory per stage, device, versions,
                        settings, and `metrics` with --gt
```

All of it is written into a hidden temporary sibling of the target and renamed into place at the
end (`AtomicDirectory`), so an interrupted or failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from scal3r.errors import InputError
from scal3r.io.ply import write_ply
from scal3r.io.trajectory import as_c2w, matrix_to_quaternion, write_kitti, write_tum

PathLike = Union[str, os.PathLike]


# --- atomic output directory -----------------------------------------------------------------

def partial_directory(target: PathLike) -> Path:
    """Where a resumable run keeps its work until it is complete: `<target>.partial/`."""
    target = Path(os.path.expanduser(str(target)))
    return target.parent / f"{target.name}.partial"


class AtomicDirectory:
    """`with AtomicDirectory(target, overwrite) as tmp:` write into `tmp`; on success it becomes `target`.

    The refusal to overwrite is checked on entry (before any work) and again at the rename. On any
    exception, KeyboardInterrupt included, the temporary directory is removed and `target` is left
    as it was. With `overwrite`, an existing target is replaced only once the new one is complete.

    `resumable=True`: the work happens in `<target>.partial/`, which is kept when the run fails so
    that a later run with `resume=True` continues in it (a fresh resumable run refuses to start
    over an existing one; a resume needs one).
    """

    def __init__(self, target: PathLike, overwrite: bool = False, resumable: bool = False, resume: bool = False):
        self.target = Path(os.path.expanduser(str(target)))
        self.overwrite = overwrite
        self.resumable = resumable or resume
        self.resume = resume
        self.tmp = partial_directory(self.target) if self.resumable else \
            self.target.parent / f".{self.target.name}.tmp-{os.getpid()}"

    def check(self) -> None:
        if self.target.exists() and not self.target.is_dir():
            raise InputError(f"--out {self.target} exists and is a file, not a directory (choose another --out)")
        if self.target.exists() and not self.overwrite:
            raise InputError(f"output directory {self.target} already exists (choose another --out or pass --overwrite)")

    def check_partial(self) -> None:
        if self.resume and not self.tmp.is_dir():
            raise InputError(f"--resume: no interrupted run to continue ({self.tmp} does not exist); "
                             "run without --resume")
        if self.resumable and not self.resume and self.tmp.exists():
            raise InputError(f"{self.tmp} holds an interrupted run: continue it with --resume, or delete it")

    def __enter__(self) -> Path:
        self.check()
        self.check_partial()
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            if self.resume:
                return self.tmp
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir()
        except OSError as exc:
            raise InputError(f"cannot create the output directory next to {self.target}: {exc.strerror or exc}") from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            if not self.resumable:
                shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            self.check()
            if self.target.exists():
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                self.target.rename(old)
                self.tmp.rename(self.target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                self.tmp.rename(self.target)
        except BaseException:
            if not self.resumable:
                shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return False


# --- trajectories and cameras ----------------------------------------------------------------

def write_trajectories(out_dir: PathLike, c2w: np.ndarray, timestamps: np.ndarray) -> None:
    """trajectory_tum.txt and trajectory_kitti.txt for rigid c2w (N, 4, 4)."""
    out_dir = Path(out_dir)
    write_tum(out_dir / "trajectory_tum.txt", timestamps, c2w)
    write_kitti(out_dir / "trajectory_kitti.txt", c2w)


def write_release_mat(path: PathLike, release_c2w: np.ndarray) -> None:
    """The release's mat.txt: (N, 4, 4) c2w (chunk scale in the rotation block), one row of 16 per frame."""
    c2w = as_c2w(release_c2w)
    np.savetxt(path, c2w.reshape(c2w.shape[0], 16), fmt="%.6f")


def opencv_intrinsics(K: np.ndarray) -> np.ndarray:
    """K with pixel centres at (u + 0.5, v + 0.5) (scal3r.geometry, COLMAP) → OpenCV's (centres at integers)."""
    K = np.array(K, dtype=np.float64, copy=True)
    K[..., 0, 2] -= 0.5
    K[..., 1, 2] -= 0.5
    return K


def write_intrinsics_json(path: PathLike, K: np.ndarray, width: int, height: int,
                          K_input: Optional[np.ndarray] = None,
                          input_sizes: Optional[Sequence[Sequence[int]]] = None) -> None:
    """K (N, 3, 3) in the geometry's convention (pixel centres at +0.5) → intrinsics.json.

    The file follows `scal3r.io.intrinsics` (readable with `read_intrinsics`): OpenCV pixel
    convention, network-size `width`/`height`. `K_input` (N, 3, 3, same convention as K) and
    `input_sizes` [(W, H)] describe the original frames (before resize and crop).
    """
    doc = {"K": opencv_intrinsics(K).tolist(), "width": int(width), "height": int(height),
           "convention": "OpenCV: pixel centres at integer coordinates; K maps camera coordinates "
                         "(x right, y down, z forward) to pixels"}
    if K_input is not None:
        doc["K_input"] = opencv_intrinsics(K_input).tolist()
    if input_sizes is not None:
        doc["input_sizes"] = [[int(w), int(h)] for w, h in input_sizes]
    write_json(path, doc)


def write_frame_list(path: PathLike, source_indices: Sequence[int], names: Sequence[str],
                     timestamps: Sequence[float]) -> None:
    lines = ["# index source_index name timestamp"]
    for i, (src, name, t) in enumerate(zip(source_indices, names, timestamps)):
        lines.append(f"{i} {int(src)} {name.replace(' ', '_')} {float(t)!r}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def frame_file(index: int) -> str:
    return f"{index:06d}.npy"


def write_frame_maps(folder: PathLike, maps: Iterable[np.ndarray]) -> int:
    """One float32 (H, W) .npy per frame, `000000.npy` … in order. Returns the count."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, m in enumerate(maps):
        np.save(folder / frame_file(i), np.ascontiguousarray(m, dtype=np.float32))
        n += 1
    return n


# --- COLMAP text model -----------------------------------------------------------------------

def write_colmap(folder: PathLike, c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                 image_names: Sequence[str], points: Optional[np.ndarray] = None,
                 colors: Optional[np.ndarray] = None) -> None:
    """A COLMAP text model: cameras.txt (one PINHOLE camera per frame), images.txt, points3D.txt.

    c2w (N, 4, 4) rigid, OpenCV axes (COLMAP's too); K (N, 3, 3) with pixel centres at +0.5
    (COLMAP's convention); image_names: file names under the model's image folder. points (P, 3)
    and colors (P, 3) (uint8 or floats in [0, 1]) become points without tracks, which is what
    Gaussian-splatting and NeRF tools read for initialisation.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c2w = as_c2w(c2w)
    n = c2w.shape[0]
    K = np.asarray(K, dtype=np.float64).reshape(n, 3, 3)
    if len(image_names) != n:
        raise InputError(f"{len(image_names)} image names for {n} cameras")
    w2c = np.linalg.inv(c2w)
    q = matrix_to_quaternion(w2c[:, :3, :3])  # (qx, qy, qz, qw)
    cams = ["# Camera list with one line of data per camera:",
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
            f"# Number of cameras: {n}"]
    imgs = ["# Image list with two lines of data per image:",
            "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
            "#   POINTS2D[] as (X, Y, POINT3D_ID)",
            f"# Number of images: {n}, mean observations per image: 0"]
    for i in range(n):
        fx, fy, cx, cy = (float(v) for v in (K[i, 0, 0], K[i, 1, 1], K[i, 0, 2], K[i, 1, 2]))
        cams.append(f"{i + 1} PINHOLE {int(width)} {int(height)} {fx!r} {fy!r} {cx!r} {cy!r}")
        qx, qy, qz, qw = (float(v) for v in q[i])
        tx, ty, tz = (float(v) for v in w2c[i, :3, 3])
        imgs.append(f"{i + 1} {qw!r} {qx!r} {qy!r} {qz!r} {tx!r} {ty!r} {tz!r} {i + 1} {image_names[i]}")
        imgs.append("")  # no 2D points
    (folder / "cameras.txt").write_text("\n".join(cams) + "\n", encoding="utf-8")
    (folder / "images.txt").write_text("\n".join(imgs) + "\n", encoding="utf-8")
    _write_points3d(folder / "points3D.txt", points, colors)


def _write_points3d(path: Path, points: Optional[np.ndarray], colors: Optional[np.ndarray]) -> None:
    points = np.zeros((0, 3)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = points.shape[0]
    if colors is None:
        rgb = np.full((p, 3), 128, dtype=np.int64)
    else:
        colors = np.asarray(colors)
        scale = 255.0 if np.issubdtype(colors.dtype, np.floating) else 1.0
        rgb = np.clip(np.rint(colors.astype(np.float64) * scale), 0, 255).astype(np.int64)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# 3D point list with one line of data per point:\n"
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                f"# Number of points: {p}, mean track length: 0\n")
        # Chunks of rows through numpy's formatter: a Python loop over 200k points is slow.
        for start in range(0, p, 65536):
            end = min(start + 65536, p)
            table = np.column_stack([np.arange(start + 1, end + 1), points[start:end], rgb[start:end],
                                     np.zeros(end - start)])
            np.savetxt(f, table, fmt=["%d", "%.6f", "%.6f", "%.6f", "%d", "%d", "%d", "%.1f"])


def read_colmap_images(path: PathLike) -> List[dict]:
    """images.txt → [{"id", "q" (qw, qx, qy, qz), "t" (3,), "camera_id", "name"}] (for tests and tools)."""
    out = []
    lines = [l for l in Path(path).read_text(encoding="utf-8").splitlines() if not l.startswith("#")]
    for k in range(0, len(lines) - 1, 2):
        parts = lines[k].split()
        if not parts:
            continue
        out.append({"id": int(parts[0]), "q": np.array([float(v) for v in parts[1:5]]),
                    "t": np.array([float(v) for v in parts[5:8]]), "camera_id": int(parts[8]),
                    "name": " ".join(parts[9:])})
    return out


# --- point cloud and summary -----------------------------------------------------------------

def write_points(path: PathLike, points: np.ndarray, colors: Optional[np.ndarray], block: int = 1 << 16) -> None:
    """Binary coloured PLY (colours as floats in [0, 1] or uint8): the bytes of
    `scal3r.io.ply.write_ply`, converted and written `block` points at a time so that a large
    cloud is never copied whole. points and colors may be row sources (`NpyRows` of a spilled
    cloud), read a block at a time."""
    if isinstance(points, np.ndarray) or not hasattr(points, "shape"):
        points = np.asarray(points).reshape(-1, 3)
    if colors is not None and (isinstance(colors, np.ndarray) or not hasattr(colors, "shape")):
        colors = np.asarray(colors)
    n = int(points.shape[0])
    if tuple(points.shape) != (n, 3):
        raise InputError(f"expected points of shape (N, 3), got {tuple(points.shape)}")
    if colors is not None and tuple(colors.shape) != (n, 3):
        raise InputError(f"expected colours of shape ({n}, 3), got {tuple(colors.shape)}")
    if n <= block:
        write_ply(path, np.asarray(points[:], dtype=np.float32), None if colors is None else np.asarray(colors[:]))
        return
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", "comment written by scal3r", f"element vertex {n}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        for start in range(0, n, block):
            p = np.asarray(points[start:start + block], dtype=np.float32).reshape(-1, 3)
            record = np.empty(p.shape[0], dtype=fields)
            record["x"], record["y"], record["z"] = p[:, 0], p[:, 1], p[:, 2]
            if colors is not None:
                c = np.asarray(colors[start:start + block])
                if c.dtype != np.uint8:
                    scale = 255.0 if np.issubdtype(c.dtype, np.floating) else 1.0
                    c = np.clip(np.rint(c.astype(np.float64) * scale), 0, 255).astype(np.uint8)
                record["red"], record["green"], record["blue"] = c[:, 0], c[:, 1], c[:, 2]
            f.write(record.tobytes())


def json_ready(x):
    """NaN/inf → None (JSON has no NaN), numpy values → Python ones, recursively."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: PathLike, doc: dict) -> None:
    Path(path).write_text(json.dumps(json_ready(doc), indent=1) + "\n", encoding="utf-8")
