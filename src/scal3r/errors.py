"""User-facing errors.

Library code raises `Scal3RError` (or a subclass) for anything a user can cause and fix: bad input,
a checkpoint that does not fit, a missing optional dependency. `scal3r.cli` turns it into one line on
stderr and a non-zero exit; everything else is a bug and keeps its traceback.
"""


class Scal3RError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class CheckpointError(Scal3RError):
    """A checkpoint is unreadable, unsafe, truncated, or does not fit the model."""


class InputError(Scal3RError):
    """Frames, videos, trajectories or other inputs are missing, unreadable or inconsistent."""


class MissingDependencyError(Scal3RError):
    """An optional package or system library is needed for this feature."""
