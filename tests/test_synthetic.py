"""Synthetic generator: determinism, exact and self-consistent ground truth, on-disk layout, reader."""

import json

import numpy as np
import pytest

from scal3r.data.render import egl_available
from scal3r.data.synthetic import (SynthConfig, SyntheticSequence, build_world, generate, shortest_closed_route,
                                   unproject_depth)
from scal3r.data.textures import make_texture_array
from scal3r.errors import InputError, MissingDependencyError
from scal3r.io.intrinsics import read_intrinsics
from scal3r.io.ply import read_ply
from scal3r.io.trajectory import read_kitti, read_tum

pytest.importorskip("moderngl")


needs_egl = pytest.mark.skipif(not egl_available(), reason="no headless EGL context on this machine")

SMALL = dict(width=160, height=96)


def render_all(world, indices):
    with world.renderer() as r:
        return [world.render(r, i) for i in indices]


@pytest.fixture(scope="module")
def city_drive():
    """A short open city drive at 1 m per frame: (world, [(rgb, depth)] for every frame)."""
    world = build_world(SynthConfig.preset("city", frames=24, trajectory="noloop", seed=3, **SMALL))
    return world, render_all(world, range(24))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A small walk written to disk, with its world."""
    cfg = SynthConfig.preset("walk", frames=16, seed=5, step=0.4, **SMALL)
    out = generate(cfg, tmp_path_factory.mktemp("seq") / "walk", video=False)
    return cfg, out, build_world(cfg)


# --- determinism -------------------------------------------------------------------------------------

def test_textures_are_deterministic():
    a, b = make_texture_array(7, 64), make_texture_array(7, 64)
    assert a.dtype == np.uint8 and a.shape[1:] == (64, 64, 4)
    assert np.array_equal(a, b) and not np.array_equal(a, make_texture_array(8, 64))


@needs_egl
def test_same_seed_same_world_and_pixels(city_drive):
    world, frames = city_drive
    again = build_world(world.config)
    assert np.array_equal(again.c2w, world.c2w)
    assert np.array_equal(again.mesh.vertices, world.mesh.vertices)
    rgb, depth = render_all(again, [5])[0]
    assert np.array_equal(rgb, frames[5][0]) and np.array_equal(depth, frames[5][1])
    other = build_world(SynthConfig.preset("city", frames=24, trajectory="noloop", seed=4, **SMALL))
    assert not np.allclose(other.c2w, world.c2w)


@needs_egl
def test_written_files_are_reproducible(written, tmp_path):
    cfg, out, _ = written
    again = generate(cfg, tmp_path / "again")
    for name in ("poses_kitti.txt", "poses_tum.txt", "intrinsics.json", "scene_points.ply",
                 "images/000007.png", "depth/000007.npy"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


# --- trajectories ---------------------------------------------------------------------------------------

def test_default_drive_looks_like_kitti():
    from scal3r.data.trajectories import DRIVING, camera_poses, fit_city_route, plan_city_route

    rng = np.random.default_rng(0)
    route = plan_city_route("loop", 1000.0, rng)
    route, path = fit_city_route(route, 1000.0, 2.0, 10.0)
    c2w = camera_poses(path, 1000, DRIVING, rng)
    steps = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1)
    assert path.length >= 1000.0 - 1e-6 and steps.sum() > 990
    assert 0.9 < np.median(steps) < 1.15 and steps.max() < 1.3
    assert np.all(np.abs(c2w[:, 2, 3] - 1.65) < 0.1)  # camera height above the road
    # Loop: the last frame is one step before the first, same heading.
    assert np.linalg.norm(c2w[-1, :3, 3] - c2w[0, :3, 3]) < 1.5
    assert c2w[-1, :3, 2] @ c2w[0, :3, 2] > 0.99
    # OpenCV axes: y (down) points down, rotations are proper.
    assert np.all(c2w[:, 2, 1] < -0.99)
    np.testing.assert_allclose(np.linalg.det(c2w[:, :3, :3]), 1, atol=1e-12)
    K = SynthConfig.preset("city").intrinsics()
    assert abs(2 * np.degrees(np.arctan(518 / 2 / K[0, 0])) - 80) < 1e-9


@pytest.mark.parametrize("scene", ["city", "walk"])
def test_trajectory_kinds_revisit_or_not(scene):
    from dataclasses import replace

    from scal3r.data.trajectories import (DRIVING, WALKING, camera_poses, fit_city_route, plan_city_route,
                                          plan_walk_path)

    n, step = 400, (2.0 if scene == "city" else 0.3)
    style = replace(DRIVING if scene == "city" else WALKING, step=step)
    for kind in ("loop", "figure8", "noloop"):
        rng = np.random.default_rng(1)
        if scene == "city":
            route, path = fit_city_route(plan_city_route(kind, n * step, rng), n * step, 2.0, 10.0)
        else:
            path = plan_walk_path(kind, n * step, rng)
        p = camera_poses(path, n, style, rng)[:, :2, 3]
        d = np.linalg.norm(p[:, None] - p[None], axis=2)
        far_in_time = np.abs(np.arange(n)[:, None] - np.arange(n)[None]) > n // 5
        revisit = d[far_in_time].min()
        if kind == "noloop":
            assert revisit > 5 * step, kind
        else:
            assert revisit < 2 * step, kind
        if kind == "figure8":
            # The middle of the sequence passes the start again (the crossing).
            mid = np.arange(n // 3, 2 * n // 3)
            assert d[0, mid].min() < 3 * step


# --- ground truth consistency ----------------------------------------------------------------------------

def reprojection_errors(world, frames, i, j):
    """Unproject frame i with its depth and pose, reproject into frame j: relative depth errors on
    co-visible pixels and the fraction of in-view points that were co-visible."""
    K, (h, w) = world.K, frames[i][1].shape
    pts, _ = unproject_depth(frames[i][1], K, world.c2w[i])
    cam = (pts - world.c2w[j][:3, 3]) @ world.c2w[j][:3, :3]
    z = cam[:, 2]
    front = z > 0.5
    cam, z = cam[front], z[front]
    u = K[0, 0] * cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / z + K[1, 2]
    inside = (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1)
    u, v, z = u[inside], v[inside], z[inside]
    # Bilinear in inverse depth, which is affine in pixel coordinates on a plane: exact within a
    # pixel cell of one surface, so what is left is the renderer's error, not the sampling's.
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0
    d = frames[j][1]
    corners = np.stack([d[v0, u0], d[v0, u0 + 1], d[v0 + 1, u0], d[v0 + 1, u0 + 1]], 1).astype(np.float64)
    one_surface = (corners.min(1) > 0) & (corners.max(1) < 1.05 * corners.min(1))
    inv = 1 / np.where(corners > 0, corners, 1)
    weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], 1)
    dj = 1 / (inv * weights).sum(1)
    rel = np.abs(dj - z) / z
    visible = one_surface & (rel < 0.1)  # beyond 10 %: occluded in j, or hit the sky
    return rel[visible], visible.mean()


@needs_egl
def test_depth_is_consistent_across_views(city_drive):
    world, frames = city_drive
    for i, j in ((2, 5), (10, 11), (20, 14)):
        rel, covisible = reprojection_errors(world, frames, i, j)
        assert covisible > 0.25 and rel.size > 1000
        assert np.median(rel) < 0.01, (i, j, np.median(rel))


@needs_egl
def test_walk_depth_is_consistent_across_views():
    world = build_world(SynthConfig.preset("walk", frames=40, trajectory="noloop", seed=2, **SMALL))
    frames = dict(zip((3, 9, 30, 33), render_all(world, (3, 9, 30, 33))))
    for i, j in ((3, 9), (33, 30)):
        rel, covisible = reprojection_errors(world, frames, i, j)
        assert covisible > 0.25 and rel.size > 1000 and np.median(rel) < 0.01


@needs_egl
def test_depth_and_images_are_sane(city_drive):
    world, frames = city_drive
    rgb, depth = frames[0]
    assert rgb.shape == (96, 160, 3) and rgb.dtype == np.uint8
    assert depth.shape == (96, 160) and depth.dtype == np.float32
    assert (depth == 0).any() and (depth[0] == 0).mean() > 0.3  # sky at the top of a street view
    # The bottom row sees the road 1.65 m below: z = f · h / (v − cy) on flat ground.
    K = world.K
    v = 95
    expected = K[1, 1] * 1.65 / (v - K[1, 2])
    assert abs(np.median(depth[v]) - expected) / expected < 0.08
    assert rgb.std() > 20  # textured, not flat colour


@needs_egl
def test_scene_points_cover_the_first_frame(written):
    cfg, out, world = written
    cloud = read_ply(out / "scene_points.ply")
    assert cloud.colors is not None and len(cloud.points) > 1000
    depth = np.load(out / "depth" / "000000.npy")
    pts, _ = unproject_depth(depth, world.K, world.c2w[0], cfg.points_stride, cfg.points_max_depth)
    from scipy.spatial import cKDTree

    d = cKDTree(cloud.points).query(pts)[0]
    # Frame 0 is sampled first, so each point it contributed has a representative in its voxel…
    assert d.max() < cfg.points_voxel * np.sqrt(3) * 1.01 + 1e-6
    # …and the cloud holds nothing but surface points: each is one some frame's depth unprojects to.
    frame_points = [unproject_depth(np.load(out / "depth" / f"{i:06d}.npy"), world.K, world.c2w[i],
                                    cfg.points_stride, cfg.points_max_depth)[0] for i in range(0, 16, cfg.points_every)]
    frame_points.append(unproject_depth(np.load(out / "depth" / "000015.npy"), world.K, world.c2w[15],
                                        cfg.points_stride, cfg.points_max_depth)[0])
    d = cKDTree(np.concatenate(frame_points)).query(cloud.points)[0]
    assert d.max() < 1e-4


# --- files and reader ----------------------------------------------------------------------------------------

@needs_egl
def test_layout_and_exact_round_trip(written):
    cfg, out, world = written
    names = sorted(p.name for p in out.iterdir())
    assert names == ["depth", "images", "intrinsics.json", "meta.json", "poses_kitti.txt", "poses_tum.txt",
                     "scene_points.ply"]
    assert len(list((out / "images").glob("*.png"))) == 16 and (out / "images" / "000015.png").is_file()
    assert np.array_equal(read_kitti(out / "poses_kitti.txt"), world.c2w)
    t, c2w = read_tum(out / "poses_tum.txt")
    assert np.array_equal(t, np.arange(16) / cfg.fps)
    np.testing.assert_allclose(c2w, world.c2w, atol=1e-12)
    np.testing.assert_array_equal(world.c2w[0], np.eye(4))  # world frame = first camera
    intr = read_intrinsics(out / "intrinsics.json")
    assert np.array_equal(intr.K, world.K) and (intr.width, intr.height) == (160, 96)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["scene"] == "walk" and meta["frames"] == 16
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp dirs left


@needs_egl
def test_reader_yields_frames_with_ground_truth(written):
    cfg, out, world = written
    seq = SyntheticSequence(out)
    assert len(seq) == 16 and seq.K.shape == (3, 3) and (seq.width, seq.height) == (160, 96)
    frame = seq[7]
    rgb, depth = render_all(world, [7])[0]
    assert np.array_equal(frame.image, rgb) and np.array_equal(frame.depth, depth)
    assert np.array_equal(frame.c2w, world.c2w[7]) and frame.timestamp == pytest.approx(0.7)
    assert [f.index for f in seq][-1] == 15
    assert seq[-1].index == 15
    assert len(seq.scene_points().points) > 0
    with pytest.raises(IndexError):
        seq[16]


def test_reader_rejects_bad_directories(tmp_path):
    with pytest.raises(InputError):
        SyntheticSequence(tmp_path / "missing")
    with pytest.raises(InputError):
        SyntheticSequence(tmp_path)


@needs_egl
def test_output_directory_is_never_half_written(tmp_path):
    cfg = SynthConfig.preset("walk", frames=6, **SMALL)
    generate(cfg, tmp_path / "a")
    with pytest.raises(InputError, match="exists"):
        generate(cfg, tmp_path / "a")

    def interrupt(stage, done, total):
        if stage == "render" and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(cfg, tmp_path / "b", progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    generate(cfg, tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_invalid_configs_raise():
    for bad in (dict(frames=1), dict(width=4), dict(fov_deg=200.0), dict(trajectory="spiral"), dict(step=0.0)):
        with pytest.raises(InputError):
            SynthConfig.preset("city", **bad).validate()
    with pytest.raises(InputError):
        SynthConfig.preset("moon")


def test_missing_egl_says_what_to_install(monkeypatch):
    import moderngl

    from scal3r.data.render import create_context

    def fail(*args, **kwargs):
        raise Exception("libEGL.so.1: cannot open shared object file\nsecond line")

    monkeypatch.setattr(moderngl, "create_standalone_context", fail)
    with pytest.raises(MissingDependencyError, match="libegl1 libegl-mesa0 libgl1-mesa-dri") as e:
        create_context()
    assert "\n" not in str(e.value)


@needs_egl
def test_video_has_every_frame(tmp_path):
    av = pytest.importorskip("av")
    cfg = SynthConfig.preset("walk", frames=12, **SMALL)
    out = generate(cfg, tmp_path / "v", video=True)
    with av.open(str(out / "video.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (96, 160, 3)
    first = np.asarray(SyntheticSequence(out).image(0), dtype=np.float64)
    assert np.abs(frames[0] - first).mean() < 6  # lossy, but the same picture
    with pytest.raises(InputError, match="even"):
        generate(SynthConfig.preset("walk", frames=4, width=161, height=96), tmp_path / "odd", video=True)


@needs_egl
def test_cli_synth(tmp_path, capsys):
    from scal3r.cli import main

    out = tmp_path / "seq"
    args = ["synth", "--scene", "walk", "--frames", "6", "--width", "64", "--height", "48", "--no-loop",
            "--seed", "9", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "6 frames of walk (noloop)" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["trajectory"] == "noloop" and meta["config"]["seed"] == 9
    assert len(SyntheticSequence(out)) == 6
    assert main(args) == 2  # exists
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["loop", "figure8"])
def test_a_closed_route_too_long_for_the_frames_is_refused(kind):
    """A closed route is driven exactly once; squeezed into too few frames it would silently become
    a drive at many times the configured speed (a 12-frame city loop: ~17 m per frame)."""
    shortest = shortest_closed_route(kind)
    assert 150 < shortest < 600  # blocks of at least 60 m
    with pytest.raises(InputError, match="noloop"):
        build_world(SynthConfig.preset("city", frames=12, trajectory=kind, seed=1, **SMALL))
    # Enough frames: the drive keeps its configured speed on average.
    frames = int(np.ceil(shortest))
    world = build_world(SynthConfig.preset("city", frames=frames, trajectory=kind, seed=1, **SMALL))
    mean_step = world.path_length / frames
    assert 0.8 < mean_step < 1.25, mean_step
