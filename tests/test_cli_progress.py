"""The terminal progress line: rate and ETA from what this process did."""

import scal3r.cli as cli


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _render(monkeypatch, capsys, calls):
    clock = _Clock()
    monkeypatch.setattr(cli.time, "monotonic", clock)
    bar = cli.TerminalProgress(min_interval=0.0)
    for t, done, total in calls:
        clock.now = 100.0 + t
        bar("train · loss 1.0", done, total)
    return capsys.readouterr().err.split("\r")[-1]


def test_rate_and_eta_from_a_fresh_start(monkeypatch, capsys):
    line = _render(monkeypatch, capsys, [(0.0, 0, 100), (10.0, 20, 100)])
    assert "20/100 (2.00/s, ETA 40s)" in line


def test_resumed_run_counts_only_its_own_steps(monkeypatch, capsys):
    # a run resumed at step 900 of 1800 that did 5 steps in 25 s: 0.2 steps/s, 895 left -> 4475 s
    line = _render(monkeypatch, capsys, [(0.0, 900, 1800), (25.0, 905, 1800)])
    assert "905/1800 (0.20/s, ETA 4475s)" in line
