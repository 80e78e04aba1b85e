"""Synthetic generator throughput: frames rendered and written per second.

    python benchmarks/synth.py                       # default city drive, 1000 frames at 518×294
    python benchmarks/synth.py --frames 200 --scene walk
    python benchmarks/synth.py --contact-sheet docs/synthetic_contact_sheet.png

Times `scal3r.data.synthetic.generate` end to end (world building, rendering with llvmpipe, PNG +
depth .npy writing, reference points, pose files) into a temporary directory, which is removed
afterwards unless --keep is given. The issue's target: 1000 city frames in under 60 s on 2 cores.
With --contact-sheet it also draws a PNG of a few frames and depth maps of both scenes and a top
view of the drive, so a person can see what the worlds look like.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scal3r.data.synthetic import SynthConfig, SyntheticSequence, build_world, generate


def depth_colors(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """(H, W) metres → (H, W, 3) uint8 on a log scale from `near` (yellow) to `far` (purple); sky black."""
    stops = np.array([[240, 249, 33], [248, 149, 64], [204, 71, 120], [126, 3, 168], [13, 8, 135]], dtype=np.float64)
    valid = depth > 0
    x = np.zeros(depth.shape)
    x[valid] = np.clip(np.log(np.maximum(depth[valid], near) / near) / np.log(far / near), 0, 1)
    pos = x * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    rgb = stops[i] * (1 - f) + stops[i + 1] * f
    rgb[~valid] = 0
    return rgb.astype(np.uint8)


def top_view(seq_dir: Path, size: int = 588) -> np.ndarray:
    """Bird's-eye view (size, size, 3) of a sequence's reference points with its camera path in red."""
    seq = SyntheticSequence(seq_dir)
    cloud = seq.scene_points()
    # Output world frame: y is down (first camera), so the ground plane is x–z.
    pts = cloud.points[:, [0, 2]]
    path = seq.c2w[:, [0, 2], 3]
    lo, hi = path.min(0) - 40, path.max(0) + 40
    scale = (size - 1) / float(np.max(hi - lo))
    img = np.full((size, size, 3), 255, np.uint8)
    # Coloured by height above the first camera (y is down): ground grey, walls and trees by
    # height; higher points drawn last so that facades show as the block outlines.
    height = -cloud.points[:, 1]
    order = np.argsort(height)
    ij = ((pts[order] - lo) * scale).astype(int)
    ok = (ij >= 0).all(1) & (ij < size).all(1)
    shade = depth_colors(np.clip(height[order] + 3.0, 0.5, None)[None], 1.0, 40.0)[0]
    img[size - 1 - ij[ok, 1], ij[ok, 0]] = shade[ok]
    pij = ((path - lo) * scale).astype(int)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            img[np.clip(size - 1 - pij[:, 1] + di, 0, size - 1), np.clip(pij[:, 0] + dj, 0, size - 1)] = (220, 20, 20)
    return img


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((6, 4), text)
    draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text((6, 4), text, fill=(255, 255, 255))
    return np.asarray(im)


def contact_sheet(path: Path, city_dir: Path, frames: int) -> None:
    """Two frames (RGB | depth) of the default city drive and of a walk, and the drive's top view."""
    from PIL import Image

    rows = []
    for scene, seed, (near, far) in (("city", 0, (2.0, 300.0)), ("walk", 1, (1.0, 80.0))):
        cfg = SynthConfig.preset(scene, frames=frames, seed=seed)
        world = build_world(cfg)
        with world.renderer() as renderer:
            for i in (frames // 8, frames * 5 // 8):
                rgb, depth = world.render(renderer, int(i))
                rows.append(np.concatenate([
                    _caption(rgb, f"{scene} {cfg.trajectory}, seed {seed}, frame {i}"),
                    _caption(depth_colors(depth, near, far), f"depth, log scale {near:g}-{far:g} m, sky = 0")], 1))
    grid = np.concatenate(rows, 0)
    top = _caption(top_view(city_dir, size=grid.shape[0]), "top view: city reference points, camera path in red")
    sheet = np.concatenate([grid, np.full((grid.shape[0], 6, 3), 255, np.uint8), top], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", choices=("city", "walk"), default="city")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--width", type=int, default=518)
    ap.add_argument("--height", type=int, default=294)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="write the sequence here and keep it")
    ap.add_argument("--contact-sheet", default=None, help="also write a contact sheet PNG here (needs --scene city)")
    args = ap.parse_args()

    cfg = SynthConfig.preset(args.scene, frames=args.frames, seed=args.seed, width=args.width, height=args.height)
    tmp = Path(tempfile.mkdtemp(prefix="scal3r-synth-bench-"))
    out = Path(args.keep) if args.keep else tmp / "seq"
    try:
        stages = {}

        def progress(stage, done, total):
            now = time.perf_counter()
            stages.setdefault(stage, [now, now])[1] = now

        t0 = time.perf_counter()
        generate(cfg, out, overwrite=bool(args.keep), progress=progress)
        total = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"scene {cfg.scene} ({cfg.trajectory}), {cfg.frames} frames at {cfg.width}x{cfg.height}, "
              f"{os.cpu_count()} CPUs")
        build = stages["build world"][1] - stages["build world"][0] if "build world" in stages else float("nan")
        print(f"  world build      {build:6.1f} s")
        if "render" in stages:
            r = stages["render"][1] - stages["render"][0]
            print(f"  render + write   {r:6.1f} s   ({cfg.frames / r:.1f} frames/s)")
        print(f"  total            {total:6.1f} s   ({cfg.frames / total:.1f} frames/s end to end), "
              f"{size / 2 ** 20:.0f} MiB on disk")
        if args.contact_sheet:
            if cfg.scene != "city":
                print("--contact-sheet needs --scene city", file=sys.stderr)
                return 2
            contact_sheet(Path(args.contact_sheet), out, frames=min(cfg.frames, 1000))
            print(f"contact sheet: {args.contact_sheet}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
