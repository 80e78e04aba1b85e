"""Progress reporting without a terminal.

Library functions take an optional `progress: ProgressFn` and call it as
`progress(stage, done, total)`; only `scal3r.cli` renders it. `total` may be 0 when unknown.
"""

from typing import Callable, Optional

ProgressFn = Callable[[str, int, int], None]


def report(progress: Optional[ProgressFn], stage: str, done: int, total: int) -> None:
    """Call `progress` if one was given."""
    if progress is not None:
        progress(stage, done, total)
