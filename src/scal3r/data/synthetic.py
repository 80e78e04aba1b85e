"""Synthetic long videos with exact ground truth: generator (`generate`) and reader (`SyntheticSequence`).

A sequence directory holds:

```
images/000000.png …      RGB, 8-bit
depth/000000.npy …       float32 (H, W) z-depth in metres along the optical axis; 0 where no
                         surface was hit (sky)
poses_kitti.txt          per frame the 3×4 camera-to-world matrix, row-major (OpenCV camera axes:
                         x right, y down, z forward)
poses_tum.txt            per frame `t tx ty tz qx qy qz qw` (camera-to-world, t = frame / fps)
intrinsics.json          {"K": 3×3, "width": W, "height": H}
scene_points.ply         reference point cloud on the surfaces the cameras saw (with colours)
meta.json                the configuration and facts about the sequence
video.mp4                the frames as H.264 (on request)
```

World frame on disk: the first camera's frame (as in KITTI's ground truth), so pose 0 is the
identity, +y points down and the ground lies at y ≈ +camera height. Depth and poses are exact for
the rendered geometry: unprojecting a pixel with its depth and pose lands on the surface it shows.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Tuple, Union

import numpy as np

from scal3r.data.mesh import Mesh
from scal3r.data.render import Lighting, Renderer
from scal3r.data.scenes import CityParams, WalkParams, build_city, build_walk
from scal3r.data.textures import make_texture_array
from scal3r.data.trajectories import (DRIVING, TRAJECTORY_KINDS, WALKING, TrajectoryKind, camera_poses,
                                      fit_city_route, frame_arclengths, plan_city_route, plan_walk_path)
from scal3r.errors import InputError
from scal3r.io.intrinsics import read_intrinsics, write_intrinsics
from scal3r.io.ply import PointCloud, read_ply, write_ply
from scal3r.io.trajectory import read_kitti, read_tum, write_kitti, write_tum
from scal3r.progress import ProgressFn, report

SceneKind = Literal["city", "walk"]
SCENE_KINDS = ("city", "walk")
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic sequence; the same config gives the same files.

    step: metres per frame on straight stretches (closed trajectories adjust it slightly so that the
    sequence ends where it started). fov_deg: horizontal field of view. Reference points: every
    `points_every`-th frame, every `points_stride`-th pixel up to `points_max_depth` metres, one
    point per `points_voxel` cube."""

    scene: SceneKind = "city"
    frames: int = 1000
    seed: int = 0
    trajectory: TrajectoryKind = "loop"
    width: int = 518
    height: int = 294
    fov_deg: float = 80.0
    fps: float = 10.0
    step: float = 1.0
    near: float = 0.3
    far: float = 1000.0
    points_every: int = 5
    points_stride: int = 2
    points_max_depth: float = 60.0
    points_voxel: float = 0.2
    texture_size: int = 256

    @staticmethod
    def preset(scene: SceneKind, **overrides) -> "SynthConfig":
        """Defaults for a scene: `city` drives like KITTI (1 m per frame at 10 Hz, camera 1.65 m
        high, 80° FoV); `walk` walks (0.15 m per frame, 1.6 m, 75° FoV) through a courtyard."""
        if scene == "city":
            base = SynthConfig(scene="city")
        elif scene == "walk":
            base = SynthConfig(scene="walk", fov_deg=75.0, step=0.15, near=0.05, far=400.0, points_every=8,
                               points_max_depth=25.0, points_voxel=0.05)
        else:
            raise InputError(f"unknown scene {scene!r} (choose {', '.join(SCENE_KINDS)})")
        return replace(base, **overrides)

    def validate(self) -> None:
        if self.scene not in SCENE_KINDS:
            raise InputError(f"unknown scene {self.scene!r} (choose {', '.join(SCENE_KINDS)})")
        if self.trajectory not in TRAJECTORY_KINDS:
            raise InputError(f"unknown trajectory {self.trajectory!r} (choose {', '.join(TRAJECTORY_KINDS)})")
        if self.frames < 2:
            raise InputError(f"need at least 2 frames, got {self.frames}")
        if not (16 <= self.width <= 8192 and 16 <= self.height <= 8192):
            raise InputError(f"image size {self.width}×{self.height} is outside 16…8192 pixels")
        if not 10.0 <= self.fov_deg <= 150.0:
            raise InputError(f"field of view {self.fov_deg}° is outside 10…150°")
        if self.step <= 0 or self.fps <= 0:
            raise InputError("step and fps must be positive")
        if self.points_every < 1 or self.points_stride < 1 or self.points_voxel <= 0:
            raise InputError("points_every, points_stride and points_voxel must be positive")

    def intrinsics(self) -> np.ndarray:
        """K (3, 3): square pixels, principal point at the image centre ((W−1)/2, (H−1)/2 in the
        OpenCV convention where pixel centres are integers)."""
        f = (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)
        return np.array([[f, 0.0, (self.width - 1) / 2], [0.0, f, (self.height - 1) / 2], [0.0, 0.0, 1.0]])


@dataclass
class SyntheticWorld:
    """A built world and its camera path, ready to render.

    c2w: (N, 4, 4) camera-to-world in the output frame (first camera = identity); K: (3, 3);
    world_from_output: (4, 4) the internal z-up world pose of the output frame (camera 0)."""

    config: SynthConfig
    mesh: Mesh
    textures: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    world_from_output: np.ndarray
    lighting: List[Lighting]
    path_length: float
    info: Dict[str, object] = field(default_factory=dict)

    def renderer(self) -> Renderer:
        cfg = self.config
        return Renderer(self.mesh, self.textures, cfg.width, cfg.height, near=cfg.near, far=cfg.far)

    def render(self, renderer: Renderer, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Frame `index` → (rgb (H, W, 3) uint8, depth (H, W) float32 metres, 0 = sky)."""
        return renderer.render(self.world_from_output @ self.c2w[index], self.K, self.lighting[index])


def _lighting(rng: np.random.Generator, n: int) -> List[Lighting]:
    """Sun from a random azimuth and elevation, drifting a few degrees; exposure varying ±10 %
    along the sequence; clouds drifting. Smooth in the frame index."""
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = np.radians(rng.uniform(30, 60))
    drift = np.radians(rng.uniform(-4, 4))
    phases = rng.uniform(0, 2 * np.pi, 3)
    warm = rng.uniform(-0.05, 0.05)
    i = np.arange(n)
    exposure = 1 + 0.06 * np.sin(2 * np.pi * i / 311 + phases[0]) + 0.04 * np.sin(2 * np.pi * i / 97 + phases[1])
    az = azimuth + drift * np.sin(2 * np.pi * i / max(n, 1) + phases[2])
    wind = rng.normal(size=2) * 0.002
    out = []
    for k in range(n):
        sun = (math.cos(az[k]) * math.cos(elevation), math.sin(az[k]) * math.cos(elevation), math.sin(elevation))
        out.append(Lighting(sun_direction=sun, sun_color=(0.75 + warm, 0.72, 0.65 - warm), exposure=float(exposure[k]),
                            cloud_offset=(float(wind[0] * k), float(wind[1] * k))))
    return out


# The driven line: the right-hand lane's centre, corners filleted like a car turning at ~15 km/h.
CITY_LANE_OFFSET = 2.0
CITY_TURN_RADIUS = 10.0


def shortest_closed_route(kind: TrajectoryKind) -> float:
    """Length in metres of the shortest closed city route of `kind` (the smallest block spacing)."""
    route = plan_city_route(kind, 0.0, np.random.default_rng(0))
    return fit_city_route(route, 0.0, lane_offset=CITY_LANE_OFFSET, turn_radius=CITY_TURN_RADIUS)[1].length


def drivable_city_trajectory(frames: int, step: float) -> TrajectoryKind:
    """"loop" when `frames` at `step` metres per frame can drive the smallest block rectangle, else
    "noloop" (a loop squeezed into fewer frames would be a much faster drive)."""
    return "loop" if frames * step >= shortest_closed_route("loop") else "noloop"


def build_world(config: SynthConfig) -> SyntheticWorld:
    """Plan the path, build the scene around it, place the cameras (deterministic in the config)."""
    config.validate()
    root = np.random.default_rng([config.seed, 0x5CA1])
    rng_route, rng_scene, rng_motion, rng_light = (np.random.default_rng(s) for s in root.integers(0, 2 ** 63, 4))
    target = config.step * config.frames
    if config.scene == "city":
        style = replace(DRIVING, step=config.step)
        route = plan_city_route(config.trajectory, target, rng_route)
        route, path = fit_city_route(route, target, lane_offset=CITY_LANE_OFFSET, turn_radius=CITY_TURN_RADIUS)
        # A closed route is covered exactly once, so one shorter than its smallest block rectangle
        # would silently become a much faster drive (e.g. 12 frames round a 210 m loop: 17 m per
        # frame, frames that barely overlap). 25 % is well above what `fit_city_route` leaves.
        if path.closed and path.length > 1.25 * target:
            raise InputError(f"a closed city {config.trajectory} is at least {path.length:.0f} m, but {config.frames} "
                             f"frames at {config.step:g} m per frame drive {target:.0f} m: use at least "
                             f"{math.ceil(path.length / config.step)} frames, a larger step, or trajectory noloop")
        if not path.closed:
            path = path.truncated(float(frame_arclengths(path, config.frames, style)[-1]) + 1.0)
        mesh = build_city(route, rng_scene, CityParams())
        info = {"block_spacing_m": route.spacing, "route_nodes": route.nodes.tolist()}
    else:
        style = replace(WALKING, step=config.step)
        path = plan_walk_path(config.trajectory, target, rng_route)
        if not path.closed:
            path = path.truncated(float(frame_arclengths(path, config.frames, style)[-1]) + 1.0)
        mesh = build_walk(path, rng_scene, WalkParams())
        info = {}
    c2w_world = camera_poses(path, config.frames, style, rng_motion)
    world_from_output = c2w_world[0].copy()
    c2w = np.linalg.inv(world_from_output) @ c2w_world
    # Exact [0 0 0 1] rows and orthonormal rotations (the inverse adds ~1e-16 noise otherwise).
    c2w[:, 3, :] = (0.0, 0.0, 0.0, 1.0)
    u, _, vt = np.linalg.svd(c2w[:, :3, :3])
    c2w[:, :3, :3] = u @ vt
    c2w[0] = np.eye(4)
    info.update(triangles=mesh.triangle_count, path_length_m=round(path.length, 3))
    return SyntheticWorld(config=config, mesh=mesh, textures=make_texture_array(config.seed, config.texture_size),
                          c2w=c2w, K=config.intrinsics(), world_from_output=world_from_output,
                          lighting=_lighting(rng_light, config.frames), path_length=float(path.length), info=info)


# --- reference points -------------------------------------------------------------------------------

def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, stride: int = 1,
                    max_depth: float = np.inf) -> Tuple[np.ndarray, np.ndarray]:
    """World points of the valid pixels of a depth map (every `stride`-th row and column).

    depth (H, W) z-depth, K (3, 3), c2w (4, 4) → (points (M, 3) float64, flat pixel indices (M,))."""
    h, w = depth.shape
    v, u = np.mgrid[0:h:stride, 0:w:stride]
    d = depth[v, u].astype(np.float64)
    ok = (d > 0) & (d <= max_depth) & np.isfinite(d)
    u, v, d = u[ok], v[ok], d[ok]
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], axis=1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3], v * w + u


class _VoxelPoints:
    """Accumulates coloured points, keeping the first point that lands in each voxel."""

    def __init__(self, voxel: float):
        self.voxel = voxel
        self.points = np.zeros((0, 3))
        self.colors = np.zeros((0, 3), np.uint8)
        self._pending: List[Tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        self._pending.append((points, colors))
        self._pending_n += len(points)
        if self._pending_n > 500_000:  # bounded memory; the merge is a sort of ~2M keys
            self._reduce()

    def _reduce(self) -> None:
        if not self._pending:
            return
        pts = np.concatenate([self.points] + [p for p, _ in self._pending])
        cols = np.concatenate([self.colors] + [c for _, c in self._pending])
        self._pending, self._pending_n = [], 0
        keys = np.floor(pts / self.voxel).astype(np.int64)
        if np.abs(keys).max(initial=0) < 2 ** 20:
            # One int64 per voxel (21 bits per axis): much faster and leaner than unique rows.
            k = keys + 2 ** 20
            _, first = np.unique((k[:, 0] << 42) | (k[:, 1] << 21) | k[:, 2], return_index=True)
        else:
            _, first = np.unique(keys, axis=0, return_index=True)
        first.sort()  # keep the earliest sample of each voxel, in order of arrival
        self.points, self.colors = pts[first], cols[first]

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        self._reduce()
        return self.points, self.colors


# --- writing -----------------------------------------------------------------------------------------

def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    # Level 1: ~3× faster than the default for ~15 % larger files.
    Image.fromarray(rgb).save(path, compress_level=1)


def _save_frame(root: Path, index: int, rgb: np.ndarray, depth: np.ndarray) -> None:
    _save_png(root / "images" / f"{index:06d}.png", rgb)
    np.save(root / "depth" / f"{index:06d}.npy", depth)


def generate(config: SynthConfig, out_dir: PathLike, video: bool = False, overwrite: bool = False,
             progress: Optional[ProgressFn] = None, workers: int = 2) -> Path:
    """Render `config` into `out_dir` (layout in the module docstring) and return its path.

    Written into a temporary sibling directory and renamed at the end, so `out_dir` is never left
    half-written. Raises InputError if `out_dir` exists and `overwrite` is False."""
    config.validate()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists (choose another --out or pass --overwrite)")
    if video and (config.width % 2 or config.height % 2):
        raise InputError(f"an H.264 video needs an even width and height, got {config.width}×{config.height}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "depth").mkdir()
    try:
        report(progress, "build world", 0, 1)
        world = build_world(config)
        report(progress, "build world", 1, 1)
        _render_into(world, tmp, video, progress, workers)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _render_into(world: SyntheticWorld, root: Path, video: bool, progress: Optional[ProgressFn], workers: int) -> None:
    cfg = world.config
    n = cfg.frames
    points = _VoxelPoints(cfg.points_voxel)
    video_writer = None
    if video:
        from scal3r.io.video import VideoWriter

        video_writer = VideoWriter(root / "video.mp4", cfg.width, cfg.height, cfg.fps)
    # Encoding and file writes run beside the renderer; PIL and zlib release the GIL.
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    video_pool = ThreadPoolExecutor(max_workers=1) if video_writer else None
    pending: List[Future] = []
    try:
        with world.renderer() as renderer:
            for i in range(n):
                rgb, depth = world.render(renderer, i)
                pending.append(pool.submit(_save_frame, root, i, rgb, depth))
                if video_pool is not None:
                    pending.append(video_pool.submit(video_writer.write, rgb))
                if i % cfg.points_every == 0 or i == n - 1:
                    pts, pix = unproject_depth(depth, world.K, world.c2w[i], cfg.points_stride, cfg.points_max_depth)
                    points.add(pts, rgb.reshape(-1, 3)[pix])
                # Bound the queue: frames waiting to be written hold memory.
                while len(pending) > 8:
                    pending.pop(0).result()
                report(progress, "render", i + 1, n)
        for f in pending:
            f.result()
    finally:
        pool.shutdown(wait=True)
        if video_pool is not None:
            video_pool.shutdown(wait=True)
        if video_writer is not None:
            video_writer.close()
    timestamps = np.arange(n) / cfg.fps
    write_kitti(root / "poses_kitti.txt", world.c2w)
    write_tum(root / "poses_tum.txt", timestamps, world.c2w)
    write_intrinsics(root / "intrinsics.json", world.K, cfg.width, cfg.height)
    pts, cols = points.result()
    write_ply(root / "scene_points.ply", pts, cols)
    meta = {
        "generator": "scal3r synth",
        "config": asdict(cfg),
        "frames": n,
        "world_frame": "camera 0 (OpenCV axes: x right, y down, z forward)",
        "depth": "float32 z-depth in metres along the optical axis; 0 = no surface (sky)",
        "timestamps": "frame index / fps, seconds",
        "path_length_m": round(world.path_length, 3),
        "scene_points": int(len(pts)),
        "closed_loop": cfg.trajectory != "noloop",
        **world.info,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


# --- reading -----------------------------------------------------------------------------------------

@dataclass
class GroundTruthFrame:
    """One frame: image (H, W, 3) uint8, depth (H, W) float32 (0 = none), c2w (4, 4), K (3, 3)."""

    index: int
    timestamp: float
    image: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    K: np.ndarray


class SyntheticSequence:
    """Reads a sequence directory written by `generate` (or any directory in the same layout).

    c2w: (N, 4, 4) float64; timestamps: (N,) seconds; K: (3, 3); width, height; meta: dict
    (empty when there is no meta.json). Indexing gives `GroundTruthFrame`s."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"not a directory: {self.root}")
        self.c2w = read_kitti(self.root / "poses_kitti.txt")
        tum = self.root / "poses_tum.txt"
        self.timestamps = read_tum(tum)[0] if tum.is_file() else np.arange(len(self.c2w), dtype=np.float64)
        intr = read_intrinsics(self.root / "intrinsics.json")
        if intr.K.ndim != 2:
            raise InputError(f"{self.root / 'intrinsics.json'}: expected one shared 3×3 K")
        self.K, self.width, self.height = intr.K, intr.width, intr.height
        meta = self.root / "meta.json"
        self.meta = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
        self.image_paths = sorted((self.root / "images").glob("*.png"))
        if len(self.image_paths) != len(self.c2w) or len(self.timestamps) != len(self.c2w):
            raise InputError(f"{self.root}: {len(self.image_paths)} images, {len(self.timestamps)} timestamps and "
                             f"{len(self.c2w)} poses do not match")

    def __len__(self) -> int:
        return len(self.c2w)

    def image(self, index: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.image_paths[index]) as im:
            return np.asarray(im.convert("RGB"))

    def depth(self, index: int) -> np.ndarray:
        path = self.root / "depth" / f"{self.image_paths[index].stem}.npy"
        if not path.is_file():
            raise InputError(f"missing depth map {path}")
        return np.load(path)

    def __getitem__(self, index: int) -> GroundTruthFrame:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return GroundTruthFrame(index=index, timestamp=float(self.timestamps[index]), image=self.image(index),
                                depth=self.depth(index), c2w=self.c2w[index].copy(), K=self.K.copy())

    def __iter__(self) -> Iterator[GroundTruthFrame]:
        for i in range(len(self)):
            yield self[i]

    def scene_points(self) -> PointCloud:
        return read_ply(self.root / "scene_points.ply")
