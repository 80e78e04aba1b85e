"""Streaming of long runs: row-wise chunk files (nothing memory-mapped), lazy per-frame depth of a
reconstruction, bounded loop detection and fusion, with results equal to the eager ones."""

from pathlib import Path

import numpy as np
import pytest

from scal3r.chunks import chunk_ranges
from scal3r.eval.simulate import SimulationConfig, road_scene, simulate_chunks, simulate_loop_chunk
from scal3r.geometry import (LoopCandidate, LoopConfig, assemble, find_loop_candidates, fuse_reconstruction,
                             loop_chunk_frames)
from scal3r.geometry.framemaps import FrameMaps
from scal3r.geometry.fuse import FusionConfig, VoxelGrid
from scal3r.io.export import write_points
from scal3r.io.ply import write_ply
from scal3r.pipeline.chunkstore import ChunkOutputStore, NpyRows, NpyRowWriter


def _mapped(folder: Path):
    """Files under `folder` this process has memory-mapped now."""
    text = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").is_file() else ""
    return [line for line in text.splitlines() if str(folder) in line]


def test_npy_rows_read_like_the_array(tmp_path):
    a = np.random.default_rng(0).random((7, 3, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    rows = NpyRows(tmp_path / "a.npy")
    assert rows.shape == a.shape and rows.dtype == a.dtype and rows.ndim == 3 and len(rows) == 7
    np.testing.assert_array_equal(rows[3], a[3])
    np.testing.assert_array_equal(rows[-1], a[-1])
    np.testing.assert_array_equal(rows[1:5], a[1:5])
    np.testing.assert_array_equal(rows[[6, 2, 3, 4]], a[[6, 2, 3, 4]])
    np.testing.assert_array_equal(rows[2, 1], a[2, 1])
    np.testing.assert_array_equal(rows[1:3, 0], a[1:3, 0])
    np.testing.assert_array_equal(rows[a[:, 0, 0] > 0.5], a[a[:, 0, 0] > 0.5])
    np.testing.assert_array_equal(np.asarray(rows), a)
    np.testing.assert_array_equal(rows.head(4)[:], a[:4])
    row = rows[0]
    row[0, 0] = -1.0  # a fresh, writable array: the file is untouched
    np.testing.assert_array_equal(rows[0], a[0])
    with pytest.raises(IndexError):
        rows[7]
    assert not _mapped(tmp_path)


def test_row_writer_writes_a_npy_file(tmp_path):
    with NpyRowWriter(tmp_path / "f.npy", (5, 3, 2, 2), np.uint8) as w:
        for i in (4, 0, 2, 1, 3):
            w.write(i, np.full((3, 2, 2), i, np.uint8))
    back = np.load(tmp_path / "f.npy")
    assert back.shape == (5, 3, 2, 2) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[:, 0, 0, 0], np.arange(5))
    assert NpyRows(tmp_path / "f.npy", 3).shape == (3, 3, 2, 2)


def test_assemble_from_chunk_files_equals_arrays_and_maps_nothing(tmp_path):
    gt = road_scene(240, loop=True, height=12, width=16, seed=3)
    ranges = chunk_ranges(240, 40, 20)
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, SimulationConfig(seed=4), as_torch=False)
    outs = [{k: np.asarray(v, np.float32) for k, v in o.items()} for o in outs]
    for o, (s, e) in zip(outs, ranges):
        o["frames"] = np.arange(s, e)
    cand = LoopCandidate(15, 225, 0.99)
    loop = simulate_loop_chunk(loop_chunk_frames(cand, ranges), gt.c2w, gt.K, gt.depth, SimulationConfig(seed=5),
                               as_torch=False)
    loop = {k: (np.asarray(v) if k == "frames" else np.asarray(v, np.float32)) for k, v in loop.items()}
    store = ChunkOutputStore(tmp_path / "chunks")
    for b, o in enumerate(outs + [loop]):
        store.write(b, o)
    m = len(ranges)
    eager = assemble(outs, ranges, loops=[loop])
    lazy = assemble([store.rows(b) for b in range(m)], ranges, loops=[store.rows(m)])
    assert not _mapped(tmp_path)
    np.testing.assert_array_equal(lazy.c2w, eager.c2w)
    np.testing.assert_array_equal(lazy.K, eager.K)
    np.testing.assert_array_equal(lazy.frame_scale, eager.frame_scale)
    assert [r.accepted for r in lazy.loops] == [r.accepted for r in eager.loops]
    assert isinstance(lazy.depth, FrameMaps) and lazy.depth.shape == (240, 12, 16) and len(lazy.depth_conf) == 240
    for i in (0, 17, 120, 239):
        np.testing.assert_array_equal(lazy.depth[i], eager.depth[i])
        np.testing.assert_array_equal(lazy.depth_conf[i], eager.depth_conf[i])
        # The map is the owning chunk's row × the frame's scale, rounded once to float32.
        b, r = lazy.src_chunk[i], lazy.src_row[i]
        expected = (outs[b]["depth"][r, ..., 0].astype(np.float64) * lazy.frame_scale[i]).astype(np.float32)
        np.testing.assert_array_equal(lazy.depth[i], expected)
        assert lazy.depth[i].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(lazy.depth), np.asarray(eager.depth))
    a = fuse_reconstruction(lazy, config=FusionConfig(voxel_size=0.5))
    b = fuse_reconstruction(eager, config=FusionConfig(voxel_size=0.5))
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not _mapped(tmp_path)


def test_frame_maps_index_like_an_array():
    rng = np.random.default_rng(0)
    chunks = [rng.random((4, 2, 3)).astype(np.float32), rng.random((4, 2, 3)).astype(np.float32)]
    chunk = np.array([0, 0, 0, 1, 1, 1])
    row = np.array([0, 1, 2, 1, 2, 3])
    scale = np.array([1.0, 1.0, 1.0, 2.5, 2.5, 3.0])
    maps = FrameMaps(chunks, chunk, row, (2, 3), scale=scale)
    full = np.stack([(chunks[c][r].astype(np.float64) * s).astype(np.float32) for c, r, s in zip(chunk, row, scale)])
    assert maps.shape == (6, 2, 3) and len(maps) == 6 and maps.dtype == np.float32
    np.testing.assert_array_equal(maps[4], full[4])
    np.testing.assert_array_equal(maps[-1], full[-1])
    np.testing.assert_array_equal(maps[1:5], full[1:5])
    np.testing.assert_array_equal(maps[[5, 0, 3]], full[[5, 0, 3]])
    np.testing.assert_array_equal(maps[full > 1.0], full[full > 1.0])
    np.testing.assert_array_equal(maps[2, 1], full[2, 1])
    np.testing.assert_array_equal(np.asarray(maps), full)
    np.testing.assert_array_equal(maps * 2.0, full * 2.0)
    np.testing.assert_array_equal(np.stack(list(maps)), full)
    with pytest.raises(IndexError):
        maps[6]


def test_voxel_grid_result_does_not_depend_on_merges():
    rng = np.random.default_rng(0)
    grids = [VoxelGrid(0.3, True) for _ in range(3)]
    for g, every in zip(grids, (700, 20_000, 10 ** 9)):
        g.merge_every = every
    for k in range(30):
        pts = rng.normal(size=(2000, 3)) * (1 + k / 10) + 0.2 * k
        col = rng.random((2000, 3))
        for g in grids:
            g.add(pts, col)
    a, b, c = (g.result() for g in grids)
    for x in (b, c):
        np.testing.assert_array_equal(x.points, a.points)  # bitwise: every voxel sums in point order
        np.testing.assert_array_equal(x.colors, a.colors)
        np.testing.assert_array_equal(x.counts, a.counts)
    assert np.all(np.diff(grids[0]._keys) > 0)  # voxels stay in key order
    released = grids[1].result(release=True)
    np.testing.assert_array_equal(released.points, a.points)
    assert grids[1].n_voxels == 0


def test_loop_candidates_in_blocks_equal_the_full_similarity():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(700, 64))
    d = np.concatenate([base, base + 0.2 * rng.normal(size=base.shape)])[rng.permutation(1400)].astype(np.float32)
    cfg = LoopConfig(similarity_threshold=0.8, nms_window=0)
    got = find_loop_candidates(d, cfg)
    # Direct: the whole similarity matrix at once.
    x = d.astype(np.float64)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    sim = x @ x.T
    k = cfg.top_k + 1
    want = {}
    for i in range(len(d)):
        for j in np.argsort(-sim[i], kind="stable")[:k]:
            if j != i and sim[i, j] > cfg.similarity_threshold and abs(i - j) > cfg.min_frame_gap:
                key = (min(i, j), max(i, j))
                want[key] = max(want.get(key, -np.inf), sim[i, j])
    assert {(c.frame_a, c.frame_b) for c in got} == set(want)
    for c in got:
        assert c.similarity == pytest.approx(want[(c.frame_a, c.frame_b)], abs=1e-12)


def test_write_points_in_blocks_gives_the_bytes_of_write_ply(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 3)).astype(np.float32)
    for colors in (rng.random((1000, 3)).astype(np.float32), rng.integers(0, 256, (1000, 3)).astype(np.uint8), None):
        write_ply(tmp_path / "a.ply", pts, colors)
        write_points(tmp_path / "b.ply", pts, colors, block=96)
        assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_voxel_grid_spilled_to_disk_equals_the_grid_in_memory(tmp_path):
    rng = np.random.default_rng(3)
    memory, spilled = VoxelGrid(0.25, True), VoxelGrid(0.25, True, spill_dir=tmp_path / "spill", max_voxels=3000)
    spilled.range_entries = 512  # many key ranges in the final merge
    for g in (memory, spilled):
        g.merge_every = 4000
    batches = []
    for k in range(40):
        # A drive: each batch mostly new ground, partly revisiting the previous batch's voxels.
        pts = rng.normal(size=(3000, 3)) * [3.0, 1.0, 0.5] + [1.5 * k, 0.0, 0.0]
        batches.append((pts, rng.random((3000, 3))))
    for pts, col in batches:
        memory.add(pts, col)
        spilled.add(pts, col)
    assert len(spilled._runs) > 3
    a, b = memory.result(), spilled.result()
    assert isinstance(b.points, NpyRows) and not spilled._runs
    assert b.points.shape == a.points.shape
    np.testing.assert_array_equal(b.counts[:], a.counts)  # same voxels, same order
    # Voxels whose points straddle a spill sum run by run: float64 rounding, invisible in float32
    # but for rare ties.
    np.testing.assert_allclose(b.points[:], a.points, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b.colors[:], a.colors, rtol=0, atol=1e-6)
    assert np.mean(np.all(b.points[:] == a.points, axis=1)) > 0.99
    # Batches that never share a voxel: bit-identical.
    memory, spilled = VoxelGrid(0.25, False), VoxelGrid(0.25, False, spill_dir=tmp_path / "s2", max_voxels=1000)
    for g in (memory, spilled):
        g.merge_every = 1
    for k in range(12):
        pts = rng.uniform(0, 2, size=(2000, 3)) + [10.0 * k, 0, 0]
        memory.add(pts)
        spilled.add(pts)
    a, b = memory.result(), spilled.result()
    assert b.colors is None
    np.testing.assert_array_equal(b.points[:], a.points)
    np.testing.assert_array_equal(b.counts[:], a.counts)
    cloud_files = tmp_path / "s2" / "cloud"
    write_points(tmp_path / "a.ply", a.points, None)
    write_points(tmp_path / "b.ply", b.points, None, block=700)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
    assert not _mapped(cloud_files)


def test_offload_run_with_a_spilling_grid_writes_the_same_outputs(tmp_path, monkeypatch):
    """reconstruct --offload: frames in a file read by rows, the backend over chunk files, and a
    voxel grid forced to spill every merge give the outputs of the grid in memory."""
    import scal3r.geometry.fuse as fuse
    from scal3r.io.ply import read_ply
    from scal3r.pipeline import ReconstructConfig, reconstruct

    from test_cli_reconstruct import _write_frames

    frames = _write_frames(tmp_path / "frames", 12)

    def run(out):
        cfg = ReconstructConfig(input=str(frames), out=str(tmp_path / out), preset="tiny", block_size=4, overlap=2,
                                loop=False, offload=True, plot=False)
        return reconstruct(cfg)

    a = run("memory")

    class Spilling(fuse.VoxelGrid):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            assert self.spill_dir is not None  # offload spills
            self.max_voxels, self.merge_every, self.range_entries = 50, 300, 64

    monkeypatch.setattr(fuse, "VoxelGrid", Spilling)
    b = run("spilled")
    assert a.points == b.points > 50
    pa, pb = read_ply(tmp_path / "memory" / "points.ply"), read_ply(tmp_path / "spilled" / "points.ply")
    np.testing.assert_allclose(pb.points, pa.points, atol=1e-5)
    for name in ("trajectory_kitti.txt", "colmap/points3D.txt", "depth/000007.npy", "confidence/000011.npy"):
        if name.endswith(".txt") and name.startswith("colmap"):
            assert len((tmp_path / "memory" / name).read_text().splitlines()) == \
                len((tmp_path / "spilled" / name).read_text().splitlines())
        else:
            assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "spilled" / name).read_bytes()
