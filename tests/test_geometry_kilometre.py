"""Backend at kilometre scale (issue 9): end-only revisits, ~9× scale drift, a false loop.

Simulated chunk predictions (scal3r.eval.simulate) of 75-frame chunks with 30 frames of overlap,
each in its own random Sim(3) frame, with per-row heading drift (0.005°/frame) and optionally
scale drift (0.035 %/frame) growing away from each chunk's reference row, depth noise and 2%
outliers; loop chunks come from simulated place descriptors and have their own frame and noise.
"""


import numpy as np
import pytest

from scal3r.eval.simulate import (SimulationConfig, road_scene, simulate_chunks, simulate_descriptors,
                                  simulate_false_loop_chunk, simulate_loop_chunk)
from scal3r.eval.trajectory import ate_rmse
from scal3r.geometry import BackendConfig, LoopCandidate, assemble, find_loop_candidates, loop_chunk_frames
from scal3r.geometry.sim3 import sim3_inverse, sim3_split


def _ranges(n, block=75, overlap=30):
    stride = block - overlap
    return [(i * stride, min(i * stride + block, n)) for i in range((n - overlap + stride - 1) // stride)]


@pytest.fixture(scope="module")
def long_drive():
    # 4530 frames, 1 m apart: 100 chunks; the drive re-drives its first 3% at the very end.
    return road_scene(4530, loop=True, height=24, width=32, seed=1, revisit=0.03)


def _run(gt, cfg, seed):
    ranges = _ranges(gt.c2w.shape[0])
    truth = []
    outs = simulate_chunks(gt.c2w, gt.K, gt.depth, ranges, cfg, truth=truth)
    cands = find_loop_candidates(simulate_descriptors(gt.c2w, seed=seed))
    loops = [simulate_loop_chunk(loop_chunk_frames(c, ranges), gt.c2w, gt.K, gt.depth, cfg, key=k)
             for k, c in enumerate(cands)]
    return ranges, outs, cands, loops, np.stack(truth)


def test_end_only_revisit_of_a_4500_frame_drive(long_drive):
    gt = long_drive
    ranges, outs, cands, loops, _ = _run(gt, SimulationConfig(heading_drift_deg=0.005, drift_jitter=0.0, seed=1), 1)
    assert len(ranges) == 100 and gt.path_length > 4400
    assert cands and all(c.frame_b > 4300 and c.frame_a < 200 for c in cands)  # revisits only at the end
    chain = assemble(outs, ranges)
    closed = assemble(outs, ranges, loops=loops)
    assert ate_rmse(chain.c2w, gt.c2w) > 50.0  # what the drift does without loops
    assert all(r.accepted for r in closed.loops)
    assert ate_rmse(closed.c2w, gt.c2w) <= 1.0


def test_nine_fold_scale_drift(long_drive):
    gt = long_drive
    cfg = SimulationConfig(heading_drift_deg=0.005, scale_drift=0.00035, drift_jitter=0.0, seed=1)
    ranges, outs, cands, loops, truth = _run(gt, cfg, 1)
    chain = assemble(outs, ranges)
    # Scale drift accumulated by the sequential alignments along the drive: ~9×.
    truth = sim3_inverse(truth[0]) @ truth
    drift = float(sim3_split(chain.chunk_sim3[-1])[0] / sim3_split(truth[-1])[0])
    assert 7.0 < max(drift, 1 / drift) < 13.0
    closed = assemble(outs, ranges, loops=loops)
    assert ate_rmse(closed.c2w, gt.c2w) <= 1.0


def test_false_loop_is_rejected_and_changes_nothing():
    gt = road_scene(1000, loop=True, height=24, width=32, seed=1, revisit=0.3)
    cfg = SimulationConfig(heading_drift_deg=0.005, scale_drift=0.00035, drift_jitter=0.0, seed=1)
    ranges, outs, cands, loops, _ = _run(gt, cfg, 1)
    assert len(loops) >= 4
    # A confident false revisit between two places 350 m apart.
    frames = loop_chunk_frames(LoopCandidate(250, 600, 0.95), ranges)
    false = simulate_false_loop_chunk(frames[:20], frames[20:], gt.c2w, gt.K, gt.depth, cfg, key=99)
    chain = assemble(outs, ranges)
    closed = assemble(outs, ranges, loops=loops)
    with pytest.warns(RuntimeWarning, match=f"loop {len(loops)} dropped"):
        with_false = assemble(outs, ranges, loops=loops + [false])
    ate_chain, ate_closed, ate_false = (ate_rmse(r.c2w, gt.c2w) for r in (chain, closed, with_false))
    assert not with_false.loops[-1].accepted and "inconsistent" in with_false.loops[-1].reason
    assert all(r.accepted for r in with_false.loops[:-1])
    assert ate_false <= 1.1 * ate_closed
    assert ate_closed * 5 <= ate_chain
    # The release's graph (unit weights, no robust kernel) is pulled away by the false loop.
    release = assemble(outs, ranges, loops=loops + [false], config=BackendConfig.release())
    assert ate_rmse(release.c2w, gt.c2w) > 10 * ate_false
