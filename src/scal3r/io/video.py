"""Writing frames as an H.264 .mp4 with PyAV (optional dependency `av`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from scal3r.errors import InputError, MissingDependencyError

PathLike = Union[str, os.PathLike]


class VideoWriter:
    """`write(rgb (H, W, 3) uint8)` frame by frame, then `close()`. H.264 (libx264, yuv420p, CRF 18)
    when available, MPEG-4 Part 2 otherwise. Width and height must be even (4:2:0 chroma)."""

    def __init__(self, path: PathLike, width: int, height: int, fps: float = 10.0, crf: int = 18):
        try:
            import av
        except ImportError:
            raise MissingDependencyError("writing .mp4 needs PyAV: pip install av") from None
        if width % 2 or height % 2:
            raise InputError(f"video frames need an even width and height, got {width}×{height}")
        from fractions import Fraction

        self.width, self.height = int(width), int(height)
        self._container = av.open(str(Path(path)), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._av = av

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3):
            raise InputError(f"frame of shape {rgb.shape}, expected {(self.height, self.width, 3)}")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
