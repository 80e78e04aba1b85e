"""Training windows (`scal3r.train.data.render_sequence`): real driving speed, turns included."""

import numpy as np
import pytest

pytest.importorskip("moderngl")

from scal3r.data.render import egl_available
from scal3r.data.synthetic import SynthConfig
from scal3r.geometry.camera import invert_rigid
from scal3r.train.data import DataConfig, render_sequence

pytestmark = pytest.mark.skipif(not egl_available(), reason="no EGL renderer")

SMALL = dict(width=84, height=56, color_jitter=0.0)


def _turn_deg(c2w: np.ndarray) -> float:
    R = (invert_rigid(c2w[0]) @ c2w[-1])[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_windows_move_at_the_configured_speed(seed):
    """No window is a loop squeezed into a few frames (v1-v3 trained on 10-60 m per frame)."""
    cfg = DataConfig(**SMALL, strides=(1,))
    rng = np.random.default_rng(seed)
    seq = render_sequence(cfg, rng, 12, cfg.seeds, scene="city")
    steps = np.linalg.norm(np.diff(seq.c2w[:, :3, 3], axis=0), axis=1)
    base = SynthConfig.preset("city").step
    lo, hi = cfg.step_scale
    # Turns slow the car down (never speed it up), so the mean step is at most the straight speed.
    assert steps.max() <= hi * base * 1.05 and steps.mean() >= 0.3 * lo * base, steps


def test_turn_fraction_places_windows_on_turns():
    """The same drives (the draws do not depend on turn_fraction): asked for turns, a window turns on
    every drive where one without that request turned, and on more."""
    def turning_seeds(turn_fraction):
        cfg = DataConfig(**SMALL, strides=(1,), turn_fraction=turn_fraction)
        turns = {s: _turn_deg(render_sequence(cfg, np.random.default_rng(s), 12, cfg.seeds, scene="city").c2w)
                 for s in range(21, 33)}
        return {s for s, deg in turns.items() if deg >= cfg.turn_deg}

    anywhere, on_turns = turning_seeds(0.0), turning_seeds(1.0)
    assert anywhere <= on_turns and len(on_turns) > len(anywhere), (anywhere, on_turns)
