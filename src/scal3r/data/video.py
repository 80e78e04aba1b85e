"""Video files through PyAV: open with clear errors, count frames cheaply, write an mp4.

PyAV is imported lazily so that image folders work without it installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

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
    rate: average frame rate (None when unknown); height, width: coded frame size.
    """

    frames: int
    rate: Optional[Fraction]
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
    """Frame count, rate and size of a video without decoding it.

    The count comes from the container's index when it has one (mp4/mov/avi); otherwise (mkv, webm)
    from a demux-only pass over the packets, which reads the file but decodes nothing.
    """
    av = require_av()
    container, stream = open_video(path)
    try:
        frames = int(stream.frames or 0)
        if frames <= 0:
            try:
                frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            except av.FFmpegError as exc:
                raise InputError(f"cannot read video {path}: {_reason(exc)}") from None
        rate = stream.average_rate or stream.guessed_rate
        ctx = stream.codec_context
        return VideoInfo(frames=frames, rate=Fraction(rate) if rate else None, height=int(ctx.height), width=int(ctx.width))
    finally:
        container.close()


def write_video(
    path: Union[str, Path],
    frames: Iterable[Union[np.ndarray, torch.Tensor]],
    fps: float = 30.0,
    codec: Optional[str] = None,
    crf: int = 18,
) -> int:
    """Encode frames to a video file (mp4/mkv/mov/avi by extension) and return the frame count.

    frames: uint8 (H, W, 3) arrays, or float tensors (3, H, W) in [0, 1]; all the same even size
    (4:2:0 chroma needs even sides). codec: default libx264 (mpeg4 if this FFmpeg lacks it);
    mjpeg gives intra-only files.
    Frames are consumed one at a time, so a generator keeps memory flat.
    """
    av = require_av()
    rate = Fraction(fps).limit_denominator(1001)
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    # faststart puts the index first, so a partly written or streamed mp4 can still be opened.
    faststart = Path(path).suffix.lower() in (".mp4", ".mov", ".m4v")
    container = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    stream = None
    count = 0
    try:
        for frame in frames:
            rgb = _to_hwc_uint8(frame)
            if stream is None:
                h, w = rgb.shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"video frames need even sides, got {h}x{w}")
                stream = container.add_stream(codec, rate=rate)
                # MJPEG wants full-range 4:2:0; everything else the usual limited-range 4:2:0.
                stream.height, stream.width = h, w
                stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": str(crf)}
            elif rgb.shape[:2] != (stream.height, stream.width):
                raise ValueError(f"frame {count} is {rgb.shape[:2]}, the video is {(stream.height, stream.width)}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return count


def _to_hwc_uint8(frame: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """uint8 (H, W, 3) array or float (3, H, W) tensor in [0, 1] → contiguous uint8 (H, W, 3)."""
    if isinstance(frame, torch.Tensor):
        t = frame.detach().cpu()
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        if t.ndim == 3 and t.shape[0] == 3 and t.shape[-1] != 3:
            t = t.permute(1, 2, 0)
        frame = t.numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) frames, got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def _reason(exc: BaseException) -> str:
    """Short text of a PyAV/OS error without the errno noise."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
