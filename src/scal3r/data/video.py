"""Reading video files through PyAV: open with clear errors, count frames cheaply (writing: `scal3r.io.video`).

PyAV is imported lazily so that image folders work without it installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

import numpy as np

from scal3r.errors import InputError, MissingDependencyError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")


def require_av():
    """Import PyAV or raise a `MissingDependencyError` that says how to install it."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("reading or writing videos needs PyAV: pip install av") from exc
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    frames: number of frames (from the container, or counted from packets when it does not say);
    rate: average frame rate (None when unknown); rotation: counter-clockwise degrees (0/90/180/270)
    that turn a decoded frame upright, from the display matrix (phones film portrait this way);
    height, width: size of an upright frame (coded size, swapped for 90/270).
    """

    frames: int
    rate: Optional[Fraction]
    rotation: int
    height: int
    width: int


def open_video(path: Union[str, Path]):
    """Open `path` with PyAV → (container, video stream). Raises `InputError` if it cannot."""
    av = require_av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot open video {path}: {_reason(exc)}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} has no video stream")
    return container, container.streams.video[0]


def probe_video(path: Union[str, Path]) -> VideoInfo:
    """Frame count, rate, rotation and upright size of a video, decoding at most its first frame.

    The count comes from the container's index when it has one (mp4/mov/avi); otherwise (mkv, webm)
    from a demux-only pass over the packets, which reads the file but decodes nothing. The display
    rotation is only known per decoded frame, so the first frame is decoded once here.
    """
    av = require_av()
    container, stream = open_video(path)
    try:
        frames = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        height, width = int(stream.codec_context.height), int(stream.codec_context.width)
        rotation = 0
        try:
            first = next(container.decode(stream), None)
            rotation = display_rotation(first) if first is not None else 0
        except av.FFmpegError:
            pass  # an undecodable start shows up (as skipped frames) when the frames are read
    finally:
        container.close()
    if frames <= 0:
        frames = _count_packets(path)
    if rotation in (90, 270):
        height, width = width, height
    return VideoInfo(frames=frames, rate=Fraction(rate) if rate else None, rotation=rotation, height=height, width=width)


def display_rotation(frame) -> int:
    """Counter-clockwise degrees in {0, 90, 180, 270} that put a decoded PyAV frame upright."""
    return int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4 * 90


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a (H, W, 3) frame counter-clockwise by `rotation` degrees (a multiple of 90)."""
    k = rotation // 90 % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def _count_packets(path: Union[str, Path]) -> int:
    """Video packets (about one per frame) in a demux-only pass; stops quietly at a broken tail."""
    av = require_av()
    container, stream = open_video(path)
    count = 0
    try:
        for packet in container.demux(stream):
            count += packet.size > 0
    except av.FFmpegError:
        pass  # a damaged tail: the frames before it are what there is
    finally:
        container.close()
    return count


def _reason(exc: BaseException) -> str:
    """Short text of a PyAV/OS error without the errno noise."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
