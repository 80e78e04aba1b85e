"""Training data: long sequences with depth, poses and intrinsics, cut into overlapping chunks.

Two sources yield the same `Sequence`:

- `SyntheticStream`: renders a new world per sample with `scal3r.data.synthetic` (random scene,
  seed from the *training* range, trajectory, field of view, step, frame stride, colour jitter).
- `FolderDataset`: sequences on disk in the synthetic layout (`images/`, `depth/*.npy`,
  `poses_kitti.txt`, `intrinsics.json`), one sequence folder or a folder of them, so users can
  fine-tune on their own data; a random window of each sequence is used per sample.

Seeds: training worlds use seeds in [0, 100 000) (`TRAIN_SEEDS`); every evaluation in the project
uses seeds ≥ 100 000 (`EVAL_SEED_START`), so no evaluated world was ever seen in training.

`chunk_targets` turns one chunk of a sequence into the loss's ground truth: the chunk's frames in
the order fed to the network (reference first), poses and points in the reference camera's frame,
everything divided by the chunk's scale (mean distance of its valid points to the origin, VGGT's
normalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence as Seq, Tuple

import numpy as np
import torch

from scal3r.chunks import frames_for_chunks
from scal3r.errors import InputError

TRAIN_SEEDS = (0, 100_000)  # half-open range of synthetic-world seeds used for training
EVAL_SEED_START = 100_000  # evaluation worlds: seeds ≥ this


@dataclass
class Sequence:
    """One long sequence: images (N, H, W, 3) uint8, depth (N, H, W) float32 (0 = none),
    c2w (N, 4, 4) float64 camera-to-world (OpenCV axes), K (N, 3, 3) float64 (pixel centres at
    integer + 0.5 convention irrelevant: principal point as stored), name for logs."""

    images: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    name: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def window(self, start: int, length: int) -> "Sequence":
        s = slice(start, start + length)
        return Sequence(self.images[s], self.depth[s], self.c2w[s], self.K[s], f"{self.name}[{start}:{start + length}]")


@dataclass
class DataConfig:
    """What a training sample is. Defaults model KITTI-like driving plus some walking."""

    width: int = 224
    height: int = 126
    block_size: int = 16  # frames per chunk
    overlap: int = 8  # frames shared by consecutive chunks
    max_chunks: int = 4  # K drawn per step from 1..max_chunks (the paper: 1..32, length generalisation)
    city_fraction: float = 0.75  # the rest are walks (other scale, other motion)
    fov_deg: Tuple[float, float] = (60.0, 95.0)  # horizontal FoV range: dashcams to wide action cameras
    step_scale: Tuple[float, float] = (0.6, 1.4)  # × the scene's metres per frame: speed variation
    strides: Tuple[int, ...] = (1, 1, 2)  # frame stride choices (2: a video subsampled to 5 Hz)
    # Open paths only: a training sample is tens of frames, and a closed city route is at least a
    # 60 m-block rectangle (~240 m, a figure-eight ~480 m) that the generator covers exactly once,
    # so in 20 frames it would jump 10–60 m per frame (measured: 57–69 m on seed 200 000) and the
    # frames would not overlap at all. Loops matter to the backend, not to a chunk's geometry.
    trajectories: Tuple[str, ...] = ("noloop",)
    # The window starts anywhere in the first this-many metres of its drive: a drive begins on a
    # straight stretch and the first city corner comes after one block (60–140 m), so windows at
    # the start would never turn; 160 m always passes a corner.
    window_lead_m: float = 160.0
    # Half the windows are placed where the drive turns (≥ `turn_deg` between its first and last
    # frame): rotation is only observable there, a random window turns 1 time in 10 (measured on
    # 20 training worlds), and a head that sees turns that rarely learns to predict none.
    turn_fraction: float = 0.5
    turn_deg: float = 10.0
    color_jitter: float = 0.15  # brightness / contrast / saturation change, ± fraction per sequence
    # Pixels farther than this are not supervised: KITTI's LiDAR range, and at training
    # resolution a pixel there spans metres.
    max_depth: float = 80.0
    seeds: Tuple[int, int] = TRAIN_SEEDS

    def frames_for(self, chunks: int) -> int:
        """Frames a sequence of `chunks` consecutive chunks spans."""
        return frames_for_chunks(chunks, self.block_size, self.overlap)

    def validate(self) -> None:
        if self.width % 14 or self.height % 14:
            raise InputError(f"training resolution {self.width}x{self.height} must be a multiple of 14")
        if not 0 < self.overlap < self.block_size:
            raise InputError(f"overlap must be in [1, block size), got {self.overlap} / {self.block_size}")
        if self.max_chunks < 1:
            raise InputError("max_chunks must be at least 1")
        lo, hi = self.seeds
        if lo < TRAIN_SEEDS[0] or hi > TRAIN_SEEDS[1] or lo >= hi:
            raise InputError(f"training seeds must lie in [{TRAIN_SEEDS[0]}, {TRAIN_SEEDS[1]}), got [{lo}, {hi})")


def _jitter(images: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    if amount <= 0:
        return images
    x = images.astype(np.float32) / 255
    brightness = 1 + rng.uniform(-amount, amount)
    contrast = 1 + rng.uniform(-amount, amount)
    saturation = 1 + rng.uniform(-amount, amount)
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * saturation
    mean = x.mean()
    x = (x - mean) * contrast + mean
    x = x * brightness
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _window_rotation_deg(c2w: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Rotation angle in degrees between frames s and s + length of c2w (N, 4, 4), per start s."""
    from scal3r.eval.trajectory import rotation_angle

    R = np.einsum("nji,njk->nik", c2w[starts, :3, :3], c2w[starts + length, :3, :3])
    return np.degrees(rotation_angle(R))


class SyntheticStream:
    """Renders a fresh synthetic world per sample (deterministic in the sample's seed)."""

    def __init__(self, cfg: DataConfig):
        cfg.validate()
        self.cfg = cfg

    def sample(self, rng: np.random.Generator, frames: int) -> Sequence:
        return render_sequence(self.cfg, rng, frames, self.cfg.seeds)


def render_sequence(cfg: DataConfig, rng: np.random.Generator, frames: int, seeds: Tuple[int, int],
                    scene: Optional[str] = None) -> Sequence:
    """One rendered window of a drive with the training recipe's random choices (scene, world seed
    in the half-open range `seeds`, stride, window start, trajectory, FoV, speed, colour jitter)
    drawn from `rng`, in that order. `SyntheticStream` passes the training seeds; held-out probes
    (`benchmarks/heldout_probe.py`) pass seeds ≥ `EVAL_SEED_START` and may fix the scene."""
    from dataclasses import replace

    from scal3r.data.synthetic import SynthConfig, build_world

    drawn = "city" if rng.random() < cfg.city_fraction else "walk"
    scene = scene or drawn
    seed = int(rng.integers(*seeds))
    stride = int(rng.choice(cfg.strides))
    want_turn = rng.random() < cfg.turn_fraction
    base = SynthConfig.preset(scene)
    span = frames * stride
    trajectory = str(rng.choice(cfg.trajectories))
    fov = float(rng.uniform(*cfg.fov_deg))
    step = base.step * float(rng.uniform(*cfg.step_scale))
    lead = max(int(math.ceil(cfg.window_lead_m / step)), 1)
    synth = replace(base, frames=lead - 1 + span, seed=seed, width=cfg.width, height=cfg.height,
                    trajectory=trajectory, fov_deg=fov, step=step, texture_size=128)
    world = build_world(synth)
    starts = np.arange(lead)
    if want_turn:
        turning = starts[_window_rotation_deg(world.c2w, starts, span - 1) >= cfg.turn_deg]
        starts = turning if len(turning) else starts
    start = int(rng.choice(starts))
    images, depth = [], []
    with world.renderer() as renderer:
        for i in range(start, start + frames * stride, stride):
            rgb, d = world.render(renderer, i)
            images.append(rgb)
            depth.append(d)
    images = _jitter(np.stack(images), rng, cfg.color_jitter)
    c2w = world.c2w[start::stride][:frames]
    K = np.repeat(world.K[None], frames, axis=0)
    return Sequence(images, np.stack(depth).astype(np.float32), c2w, K, f"{scene}-{seed}-s{stride}@{start}")


class FolderDataset:
    """Sequences in the synthetic layout; one folder or a folder of sequence folders.

    Every sequence is checked when opened: matching counts of images, depth maps and poses,
    intrinsics present, finite depth, and at least `min_frames` frames. Frames are resized to the
    training resolution (intrinsics scaled, depth nearest-neighbour)."""

    def __init__(self, root, cfg: DataConfig, min_frames: Optional[int] = None):
        cfg.validate()
        self.cfg = cfg
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"training data folder not found: {root}")
        if (root / "poses_kitti.txt").is_file() or (root / "images").is_dir():
            dirs = [root]
        else:
            dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not dirs:
                raise InputError(f"{root}: expected a sequence folder (images/, depth/, poses_kitti.txt, "
                                 "intrinsics.json) or a folder of them, found neither")
        need = min_frames if min_frames is not None else cfg.block_size
        self.sequences = [self._check(d, need) for d in dirs]

    @staticmethod
    def _check(d: Path, need: int):
        from scal3r.io.intrinsics import read_intrinsics
        from scal3r.io.trajectory import read_kitti

        for name in ("images", "depth"):
            if not (d / name).is_dir():
                raise InputError(f"{d}: missing {name}/ (expected images/, depth/, poses_kitti.txt, intrinsics.json)")
        for name in ("poses_kitti.txt", "intrinsics.json"):
            if not (d / name).is_file():
                raise InputError(f"{d}: missing {name} (expected images/, depth/, poses_kitti.txt, intrinsics.json)")
        images = sorted(p for p in (d / "images").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        depths = sorted((d / "depth").glob("*.npy"))
        try:
            c2w = read_kitti(d / "poses_kitti.txt")
            intr = read_intrinsics(d / "intrinsics.json")
        except InputError as e:
            raise InputError(f"{d}: {e}") from None
        if not (len(images) == len(depths) == len(c2w)):
            raise InputError(f"{d}: {len(images)} images, {len(depths)} depth maps and {len(c2w)} poses do not match")
        if len(images) < need:
            raise InputError(f"{d}: {len(images)} frames, fewer than one chunk ({need})")
        if [p.stem for p in images] != [p.stem for p in depths]:
            raise InputError(f"{d}: image and depth file names do not match (e.g. {images[0].name} / {depths[0].name})")
        return d, images, depths, c2w, intr

    def __len__(self) -> int:
        return len(self.sequences)

    def sample(self, rng: np.random.Generator, frames: int) -> Sequence:
        from PIL import Image

        cfg = self.cfg
        d, images, depths, c2w, intr = self.sequences[int(rng.integers(len(self.sequences)))]
        frames = min(frames, len(images))
        start = int(rng.integers(0, len(images) - frames + 1))
        K_all = intr.K if intr.K.ndim == 3 else np.repeat(intr.K[None], len(images), axis=0)
        sx, sy = cfg.width / intr.width, cfg.height / intr.height
        imgs, deps, Ks = [], [], []
        for i in range(start, start + frames):
            with Image.open(images[i]) as im:
                imgs.append(np.asarray(im.convert("RGB").resize((cfg.width, cfg.height), Image.BILINEAR)))
            dep = np.load(depths[i]).astype(np.float32)
            if dep.ndim != 2:
                raise InputError(f"{depths[i]}: depth must be (H, W), got {dep.shape}")
            if not np.isfinite(dep).all():
                raise InputError(f"{depths[i]}: depth contains NaN or infinite values")
            rows = np.minimum((np.arange(cfg.height) + 0.5) * dep.shape[0] / cfg.height, dep.shape[0] - 1).astype(int)
            cols = np.minimum((np.arange(cfg.width) + 0.5) * dep.shape[1] / cfg.width, dep.shape[1] - 1).astype(int)
            deps.append(dep[rows][:, cols])
            K = K_all[i].copy()
            # Pixel-centre-consistent rescale: (c + 0.5)·s − 0.5 keeps centres on centres.
            K[0, 0] *= sx
            K[1, 1] *= sy
            K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
            K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
            Ks.append(K)
        return Sequence(np.stack(imgs), np.stack(deps), c2w[start:start + frames].copy(), np.stack(Ks),
                        f"{d.name}[{start}:{start + frames}]")


def chunk_targets(seq: Sequence, frames: Seq[int], max_depth: float) -> Dict[str, torch.Tensor]:
    """Inputs and normalised ground truth of one chunk, frames in the fed order (reference first).

    Returns "images" (S, 3, H, W) float32 in [0, 1], "pose_enc" (S, 9) (world-to-camera of each
    frame in the reference camera's frame, translation / scale, quaternion xyzw, FoV h, w),
    "depth" (S, H, W) / scale, "world_points" (S, H, W, 3) / scale in the reference frame,
    "valid" (S, H, W) bool, "match_ref" / "match_prev" (S, H, W, 2) where each pixel is seen in
    the reference / the previous fed frame and their masks "match_ref_valid" / "match_prev_valid"
    (`true_matches`), "scale" () the chunk's scale in the sequence's units.
    """
    from scal3r.geometry.camera import encode_pose_encoding, invert_rigid

    idx = list(frames)
    depth = seq.depth[idx].astype(np.float64)
    H, W = depth.shape[1:]
    c2w = seq.c2w[idx]
    K = seq.K[idx]
    ref_from_world = invert_rigid(c2w[0])
    c2w_ref = ref_from_world[None] @ c2w  # camera → reference frame
    valid = (depth > 0) & (depth <= max_depth) & np.isfinite(depth)
    # Pixel (u, v) centre in the synthetic/OpenCV convention where K's principal point is stored.
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x = (u[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None] * depth
    y = (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None] * depth
    cam = np.stack([x, y, depth], axis=-1)
    points = np.einsum("sij,shwj->shwi", c2w_ref[:, :3, :3], cam) + c2w_ref[:, None, None, :3, 3]
    dist = np.linalg.norm(points, axis=-1)[valid]
    scale = float(dist.mean()) if dist.size else 1.0
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    w2c = invert_rigid(c2w_ref)
    previous = [0] + list(range(len(idx) - 1))
    match_ref, match_ref_valid = true_matches(points, valid, w2c, K, depth, [0] * len(idx))
    match_prev, match_prev_valid = true_matches(points, valid, w2c, K, depth, previous)
    w2c[:, :3, 3] /= scale
    # The network's FoV convention: fx = W / 2 / tan(fov_w / 2) (principal point at the centre).
    pose_enc = encode_pose_encoding(w2c, K, H, W)
    images = torch.from_numpy(np.ascontiguousarray(seq.images[idx])).permute(0, 3, 1, 2).float() / 255
    return {
        "images": images,
        "pose_enc": torch.from_numpy(pose_enc).float(),
        "depth": torch.from_numpy(np.where(valid, depth / scale, 0.0)).float(),
        "world_points": torch.from_numpy(np.where(valid[..., None], points / scale, 0.0)).float(),
        "valid": torch.from_numpy(valid),
        "match_ref": torch.from_numpy(match_ref).float(),
        "match_ref_valid": torch.from_numpy(match_ref_valid),
        "match_prev": torch.from_numpy(match_prev).float(),
        "match_prev_valid": torch.from_numpy(match_prev_valid),
        "scale": torch.tensor(scale),
    }


# A pixel counts as seen by the other frame when its depth there agrees with the other frame's
# depth map to this fraction (z-buffer test; the renderer's depth is exact, so this only absorbs
# the nearest-pixel lookup at depth edges).
OCCLUSION_TOLERANCE = 0.05


def true_matches(points: np.ndarray, valid: np.ndarray, w2c: np.ndarray, K: np.ndarray, depth: np.ndarray,
                 target: Seq[int]):
    """Where each pixel of every frame is seen in frame `target[s]`.

    points (S, H, W, 3) in the reference frame, valid (S, H, W), w2c (S, 4, 4) reference → camera
    (same units as points), K (S, 3, 3), depth (S, H, W). Returns positions (S, H, W, 2) as (x, y)
    in [−1, 1] over the target image (pixel centres, `scal3r.model.correlation.cell_coordinates`'s
    convention) and a mask (S, H, W): valid, in front of the target camera, inside its image and
    not hidden there by something nearer."""
    S, H, W = valid.shape
    t = np.asarray(target)
    cam = np.einsum("sij,shwj->shwi", w2c[t, :3, :3], points) + w2c[t, None, None, :3, 3]
    z = cam[..., 2]
    zs = np.where(z > 1e-6, z, 1.0)
    u = K[t, 0, 0, None, None] * cam[..., 0] / zs + K[t, 0, 2, None, None]
    v = K[t, 1, 1, None, None] * cam[..., 1] / zs + K[t, 1, 2, None, None]
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    inside = valid & (z > 1e-6) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    seen_depth = depth[t[:, None, None], np.clip(vi, 0, H - 1), np.clip(ui, 0, W - 1)]
    visible = inside & (np.abs(seen_depth - z) <= OCCLUSION_TOLERANCE * z)
    position = np.stack([(u + 0.5) / W * 2 - 1, (v + 0.5) / H * 2 - 1], axis=-1)
    return np.where(visible[..., None], position, 0.0), visible
