"""Writing frames as a video with PyAV (mp4/mkv/mov/avi by extension).

`VideoWriter` takes frames one at a time (memory stays flat); `write_video` encodes an iterable.
Reading and probing videos is `scal3r.data.video`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from scal3r.errors import InputError, MissingDependencyError

PathLike = Union[str, os.PathLike]


class VideoWriter:
    """`write(frame)` frame by frame, then `close()` (or use as a context manager).

    codec: default H.264 (libx264, yuv420p, CRF `crf`), MPEG-4 Part 2 where this FFmpeg lacks
    libx264; "mjpeg" gives intra-only files. Width and height must be even (4:2:0 chroma).
    """

    def __init__(self, path: PathLike, width: int, height: int, fps: float = 10.0, crf: int = 18,
                 codec: Optional[str] = None):
        try:
            import av
        except ImportError:
            raise MissingDependencyError("writing videos needs PyAV: pip install av") from None
        if width % 2 or height % 2:
            raise InputError(f"video frames need an even width and height, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.count = 0
        codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        # faststart puts the index first, so a partly written or streamed mp4 can still be opened.
        faststart = Path(path).suffix.lower() in (".mp4", ".mov", ".m4v")
        self._container = av.open(str(path), mode="w", options={"movflags": "faststart"} if faststart else {})
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height = self.width, self.height
        # MJPEG wants full-range 4:2:0; everything else the usual limited-range 4:2:0.
        self._stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._av = av

    def write(self, frame: Union[np.ndarray, torch.Tensor]) -> None:
        """frame: uint8 (H, W, 3) array, or a float (3, H, W) tensor in [0, 1]."""
        rgb = to_hwc_uint8(frame)
        if rgb.shape != (self.height, self.width, 3):
            raise InputError(f"frame {self.count} has shape {rgb.shape}, the video is {(self.height, self.width, 3)}")
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: PathLike, frames: Iterable[Union[np.ndarray, torch.Tensor]], fps: float = 30.0,
                codec: Optional[str] = None, crf: int = 18) -> int:
    """Encode frames (all the same even size) and return how many were written."""
    writer = None
    try:
        for frame in frames:
            rgb = to_hwc_uint8(frame)
            if writer is None:
                writer = VideoWriter(path, rgb.shape[1], rgb.shape[0], fps=fps, crf=crf, codec=codec)
            writer.write(rgb)
        if writer is None:
            raise InputError("no frames to write")
        return writer.count
    finally:
        if writer is not None:
            writer.close()


def to_hwc_uint8(frame: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
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
        raise InputError(f"expected uint8 (H, W, 3) frames, got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)
