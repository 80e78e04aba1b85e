"""Frame sources: an image folder, a video file, a text list of images, or in-memory arrays.

`open_frames(INPUT, options)` returns a `FrameSource` that knows how many frames it plans to give
(`len`), the network input size (`size`), and yields `Frame`s lazily: each frame is decoded once,
preprocessed with the release's rule (`scal3r.data.preprocess`) and only then handed out, so at most
one full-size frame is alive at a time (a video's first frame is also decoded once up front, to read
its display rotation). `read_frames` collects a source into a uint8 `FrameStack`
at the network size (a quarter of the float32 memory, and lossless: every value is u8/255).

Bad input raises `InputError` with one line a user can act on. A frame that cannot be decoded is
skipped with an `InputWarning` (the first one named, the rest summarised at the end), or raises
with `strict=True`; frames of another size than the first are resized to cover the first frame's
network size and cropped, as the release does, with one warning per distinct size.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from scal3r.data.preprocess import (
    HW,
    FrameTransform,
    PreprocessOptions,
    apply_transform,
    hwc_to_chw,
    plan_transform,
    target_size,
    to_float,
)
from scal3r.data.video import VIDEO_EXTENSIONS, display_rotation, open_video, probe_video, require_av, upright
from scal3r.errors import InputError
from scal3r.progress import ProgressFn, report

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
MIN_FRAMES = 2


class _ImageError(InputError):
    """An unreadable image; `reason` is the decoder's complaint without the path."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class InputWarning(UserWarning):
    """Something in the input was skipped or changed (corrupt frame, other size, short video)."""


@dataclass(frozen=True)
class FrameOptions:
    """How to read and preprocess an input.

    resolution, align, center_crop: the release's preprocessing (see `PreprocessOptions`).
    stride: keep every stride-th frame (after `fps` sampling for videos).
    fps: videos only; sample the video at this rate (nearest source frame to each k / fps seconds).
    max_frames: keep at most this many frames (None or <= 0: all).
    strict: an undecodable frame raises instead of being skipped with a warning.
    """

    resolution: int = 518
    align: int = 14
    center_crop: bool = True
    stride: int = 1
    fps: Optional[float] = None
    max_frames: Optional[int] = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"max frames must be at least 1, got {self.max_frames} (leave it out for all frames)")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise InputError(f"fps must be a positive number, got {self.fps}")
        PreprocessOptions(resolution=self.resolution, align=self.align)  # raises on a bad size

    @property
    def preprocess(self) -> PreprocessOptions:
        return PreprocessOptions(resolution=self.resolution, align=self.align, center_crop=self.center_crop)


@dataclass(frozen=True)
class Frame:
    """One preprocessed frame.

    index: position among the frames this source yielded (0, 1, 2, ... with no gaps).
    source_index: frame number in the video, or position in the folder / list / array.
    name: file name for images, `frame_{source_index:06d}` otherwise.
    rgb8: uint8 (3, H, W) at the network size; `image` is the float32 view the network takes.
    transform: how the decoded frame became (H, W) (resize, crop; maps intrinsics both ways).
    time: seconds from the start of a video, else None.
    """

    index: int
    source_index: int
    name: str
    rgb8: torch.Tensor
    transform: FrameTransform
    time: Optional[float] = None

    @property
    def image(self) -> torch.Tensor:
        """float32 (3, H, W) in [0, 1], bit-identical to the release's loader output."""
        return to_float(self.rgb8)


@dataclass
class FrameStack:
    """All frames of a source at the network size, stored as uint8.

    rgb8: uint8 (N, 3, H, W); the other lists are per frame, in order.
    """

    rgb8: torch.Tensor
    names: List[str]
    source_indices: List[int]
    transforms: List[FrameTransform]
    times: List[Optional[float]]
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rgb8.shape[0])

    @property
    def size(self) -> HW:
        """Network input size (H, W)."""
        return int(self.rgb8.shape[2]), int(self.rgb8.shape[3])

    def images(self, start: int = 0, end: Optional[int] = None) -> torch.Tensor:
        """float32 (n, 3, H, W) in [0, 1] for frames [start, end)."""
        return to_float(self.rgb8[start:end])

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        """float32 (len(indices), 3, H, W) in [0, 1], in the given order (e.g. a chunk's feed order)."""
        return to_float(self.rgb8[torch.as_tensor(list(indices), dtype=torch.long)])


class FrameSource:
    """A planned sequence of frames, read lazily. Subclasses provide `_decoded`.

    len(source): frames planned after stride / fps / max_frames; iteration yields fewer only when
    frames are undecodable (then `skipped` says which). input_size: decoded (H, W) of the first
    frame, read from headers without decoding; size: network input (H, W).
    """

    kind = "frames"

    def __init__(self, description: str, selected: Sequence[int], input_size: HW, options: FrameOptions):
        self.description = description
        self.selected = list(selected)
        self.input_size = input_size
        self.options = options
        self.size = target_size(*input_size, options.preprocess)
        self.skipped: List[str] = []
        _check_count(description, len(self.selected))

    def __len__(self) -> int:
        return len(self.selected)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def __repr__(self) -> str:
        h, w = self.size
        return f"{type(self).__name__}({self.description!r}, {len(self)} frames, {w}x{h})"

    def _decoded(self) -> Iterator[Tuple[int, str, Union[np.ndarray, str], Optional[float]]]:
        """Yield (source_index, name, uint8 (H, W, 3) RGB or a one-line failure reason, time) per selected frame."""
        raise NotImplementedError

    def frames(self, progress: Optional[ProgressFn] = None) -> Iterator[Frame]:
        """Decode, check and preprocess the planned frames one at a time."""
        opts = self.options.preprocess
        self.skipped = []
        warned_sizes = {self.input_size}
        total, count, done = len(self), 0, 0
        for source_index, name, rgb, time in self._decoded():
            done += 1
            if isinstance(rgb, str):
                self._skip(rgb)
                report(progress, "decode", done, total)
                continue
            hw = rgb.shape[:2]
            if hw not in warned_sizes:
                warned_sizes.add(hw)
                warnings.warn(
                    f"{self.description}: {name} is {hw[1]}x{hw[0]} but the first frame is "
                    f"{self.input_size[1]}x{self.input_size[0]}; resizing it to cover {self.size[1]}x{self.size[0]} "
                    "and cropping (as the release does)",
                    InputWarning,
                    stacklevel=2,
                )
            transform = plan_transform(hw, self.size, opts)
            rgb8 = hwc_to_chw(apply_transform(rgb, transform))
            yield Frame(index=count, source_index=source_index, name=name, rgb8=rgb8, transform=transform, time=time)
            count += 1
            report(progress, "decode", done, total)
        if count == 0:
            raise InputError(f"no decodable frames in {self.description}")
        if count < MIN_FRAMES:
            raise InputError(f"only {count} of {total} frames of {self.description} could be decoded; at least {MIN_FRAMES} are needed")
        if len(self.skipped) > 1:
            warnings.warn(f"{self.description}: skipped {len(self.skipped)} of {total} frames that could not be decoded", InputWarning, stacklevel=2)

    def _skip(self, what: str) -> None:
        if self.options.strict:
            raise InputError(f"{self.description}: {what}; refusing it in strict mode")
        if not self.skipped:
            warnings.warn(f"{self.description}: skipping {what}", InputWarning, stacklevel=3)
        self.skipped.append(what)


# --- image files -----------------------------------------------------------------------------

def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: frame2 < frame10 (case-insensitive, then exact)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name


def decode_image(path: Union[str, Path]) -> np.ndarray:
    """Decode an image file to uint8 (H, W, 3) RGB. Raises `InputError` if it is not a readable image.

    Like the release (OpenCV's IMREAD_UNCHANGED) this ignores EXIF orientation. Grey and palette
    images become RGB, alpha is dropped, 16-bit images are scaled to 8 bits.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(im, dtype=np.float64) * (255.0 / 65535.0)
                arr = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _ImageError(f"cannot decode image {path}: {_first_line(exc)}", reason=_first_line(exc)) from None


def image_size(path: Union[str, Path]) -> HW:
    """(H, W) of an image from its header only. Raises `InputError` if the header is unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        return int(h), int(w)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


def list_images(folder: Union[str, Path]) -> List[Path]:
    """Image files directly in `folder` (png/jpg/jpeg/bmp, any case, no hidden files), natural order."""
    folder = Path(folder)
    try:
        names = [
            e.name
            for e in os.scandir(folder)
            if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        ]
    except OSError as exc:
        raise InputError(f"cannot list folder {folder}: {_first_line(exc)}") from None
    return [folder / n for n in sorted(names, key=natural_key)]


def read_image_list(list_file: Union[str, Path]) -> List[Path]:
    """Image paths from a text file: one per line, relative to the file's folder; blank and # lines skipped."""
    list_file = Path(list_file)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read image list {list_file}: {exc}") from None
    paths = []
    for lineno, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(os.path.expanduser(entry))
        if not path.is_absolute():
            path = list_file.parent / path
        if not path.is_file():
            raise InputError(f"{list_file}:{lineno}: no such image file {entry!r}")
        paths.append(path)
    return paths


class ImageFilesSource(FrameSource):
    """Frames from image files (a folder or a list), decoded one at a time."""

    def __init__(self, paths: Sequence[Path], description: str, options: FrameOptions, kind: str):
        self.kind = kind
        self.paths = list(paths)
        selected = _select(range(len(self.paths)), options)
        _check_count(description, len(selected))
        super().__init__(description, selected, self._first_size(selected, description), options)

    def _first_size(self, selected: Sequence[int], description: str) -> HW:
        # The release sizes the whole sequence from its first frame; a header is enough for that.
        # A file without a readable header is passed over here and skipped (or, strict, refused)
        # while iterating; if no file has one, nothing is decodable.
        for i in selected:
            try:
                return image_size(self.paths[i])
            except InputError:
                continue
        raise InputError(f"no decodable frames in {description}")

    def _decoded(self):
        for i in self.selected:
            path = self.paths[i]
            try:
                rgb = decode_image(path)
            except _ImageError as exc:
                yield i, path.name, f"{path.name} (not a readable image: {exc.reason})", None
                continue
            yield i, path.name, rgb, None


# --- videos ----------------------------------------------------------------------------------

def _video_frame_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame → upright uint8 (H, W, 3) RGB (only called for frames that are kept).

    The display matrix is applied as FFmpeg's command line does by default, so portrait phone
    videos come out portrait, as frames extracted with `ffmpeg -i` for the release would.
    """
    return upright(frame.to_ndarray(format="rgb24"), display_rotation(frame))


class VideoSource(FrameSource):
    """Frames of a video's first video stream, decoded in one pass, turned upright.

    Frames that stride / fps / max_frames leave out are decoded (inter-frame codecs need them) but
    never converted to RGB. A packet the decoder refuses counts as one lost frame, so the frame
    numbers after it stay right.
    """

    kind = "video"

    def __init__(self, path: Path, options: FrameOptions):
        self.path = path
        info = probe_video(path)
        self.info = info
        if info.frames <= 0:
            raise InputError(f"no decodable frames in video {path}")
        indices: Sequence[int] = range(info.frames)
        if options.fps is not None:
            if info.rate is None:
                raise InputError(f"cannot tell the frame rate of {path}; use stride instead of fps")
            indices = fps_indices(info.frames, info.rate, options.fps)
        selected = _select(indices, options)
        _check_count(f"video {path}", len(selected))
        super().__init__(f"video {path}", selected, (info.height, info.width), options)

    def _decoded(self):
        av = require_av()
        container, stream = open_video(self.path)
        stream.thread_type = "AUTO"
        wanted = iter(self.selected)
        want = next(wanted, None)
        src = 0  # presentation-order number of the next frame the decoder gives
        try:
            packets = container.demux(stream)
            while want is not None:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError:
                    break  # the container ends in garbage: what follows counts as missing
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    if packet.size > 0:
                        # One packet holds one frame for the codecs we meet; counting the lost one
                        # keeps later frame numbers (and the fps / stride plan) aligned.
                        if src == want:
                            yield src, f"frame_{src:06d}", f"frame {src} (undecodable: {_first_line(exc)})", None
                            want = next(wanted, None)
                        src += 1
                    continue
                for frame in decoded:
                    if src == want:
                        yield src, f"frame_{src:06d}", _video_frame_rgb(frame), frame.time
                        want = next(wanted, None)
                        if want is None:
                            break
                    src += 1
        finally:
            container.close()
        while want is not None:
            yield want, f"frame_{want:06d}", f"frame {want} (the video ends after {src} of {self.info.frames} frames: truncated or broken)", None
            want = next(wanted, None)


def fps_indices(n_frames: int, rate: Fraction, fps: float) -> List[int]:
    """Source frame numbers sampling a video of `rate` frames/s at `fps`: nearest frame to each k / fps s.

    All frames when fps >= rate. Exact rational arithmetic, so the plan never drifts on long videos.
    """
    target = Fraction(repr(float(fps)))
    if target >= rate:
        return list(range(n_frames))
    step = Fraction(rate) / target  # source frames per sample, > 1
    out, k = [], 0
    while True:
        i = math.floor(k * step + Fraction(1, 2))
        if i >= n_frames:
            return out
        out.append(i)
        k += 1


# --- in-memory frames ------------------------------------------------------------------------

class TensorSource(FrameSource):
    """Frames given as arrays; floats are quantised to uint8 as saving them as 8-bit PNGs would."""

    kind = "tensor"

    def __init__(self, frames: Sequence[np.ndarray], names: Optional[Sequence[str]], options: FrameOptions):
        self._frames = frames
        self._names = list(names) if names is not None else [f"frame_{i:06d}" for i in range(len(frames))]
        if len(self._names) != len(frames):
            raise InputError(f"{len(self._names)} names for {len(frames)} frames")
        selected = _select(range(len(frames)), options)
        _check_count("the given frames", len(selected))
        super().__init__("the given frames", selected, frames[selected[0]].shape[:2], options)

    def _decoded(self):
        for i in self.selected:
            yield i, self._names[i], self._frames[i], None


def frames_from_tensor(
    frames: Union[torch.Tensor, np.ndarray, Sequence[Union[torch.Tensor, np.ndarray]]],
    options: FrameOptions = FrameOptions(),
    names: Optional[Sequence[str]] = None,
) -> FrameSource:
    """A `FrameSource` over in-memory frames.

    frames: (N, 3, H, W) or (N, H, W, 3), or a sequence of (3, H, W) / (H, W, 3) frames (sizes may
    differ); uint8, or float in [0, 1]. Channels-first wins when both axes have 3 entries.
    Rejects NaN/inf, values outside [0, 1], other dtypes and shapes with an `InputError`.
    """
    if options.fps is not None:
        raise InputError("fps applies to videos only; use stride to thin in-memory frames")
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        if frames.ndim != 4:
            raise InputError(f"frames must be (N, 3, H, W) or (N, H, W, 3), got shape {tuple(frames.shape)}")
        items = [frames[i] for i in range(frames.shape[0])]
    else:
        items = list(frames)
    return TensorSource([_as_hwc_uint8(f, i) for i, f in enumerate(items)], names, options)


def _as_hwc_uint8(frame: Union[torch.Tensor, np.ndarray], i: int) -> np.ndarray:
    """Validate one in-memory frame and return it as uint8 (H, W, 3)."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        frame = frame.float().numpy() if frame.dtype in (torch.float16, torch.bfloat16) else frame.numpy()
    a = np.asarray(frame)
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[-1]):
        raise InputError(f"frame {i} must be (3, H, W) or (H, W, 3), got shape {a.shape}")
    if a.shape[0] == 3:
        a = a.transpose(1, 2, 0)
    if min(a.shape[:2]) < 1:
        raise InputError(f"frame {i} is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"frame {i} has dtype {a.dtype}; give uint8, or float in [0, 1]")
    if not np.isfinite(a).all():
        raise InputError(f"frame {i} contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"frame {i} has values in [{lo:.4g}, {hi:.4g}]; float frames must lie in [0, 1]")
    return np.ascontiguousarray(np.rint(a.astype(np.float64) * 255.0).astype(np.uint8))


# --- entry points ----------------------------------------------------------------------------

def open_frames(path: Union[str, Path], options: FrameOptions = FrameOptions()) -> FrameSource:
    """Open INPUT: a folder of images, a video file, or a text file listing image paths.

    Nothing is decoded yet beyond headers (images) or the container index (videos).
    Raises `InputError` for a missing path, an empty folder, a single image, an unreadable list,
    a video PyAV cannot open, or fewer than 2 planned frames.
    """
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise InputError(f"no such file or directory: {path}")
    suffix = path.suffix.lower()
    if path.is_dir():
        _no_fps(options, f"folder {path}")
        paths = list_images(path)
        if not paths:
            raise InputError(f"no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in folder {path}")
        return ImageFilesSource(paths, f"folder {path}", options, kind="folder")
    if suffix in LIST_EXTENSIONS:
        _no_fps(options, f"image list {path}")
        paths = read_image_list(path)
        if not paths:
            raise InputError(f"image list {path} names no images")
        return ImageFilesSource(paths, f"image list {path}", options, kind="list")
    if suffix in IMAGE_EXTENSIONS:
        raise InputError(f"{path} is a single image; at least {MIN_FRAMES} frames are needed (pass their folder)")
    # Anything else is tried as a video; PyAV knows more containers than VIDEO_EXTENSIONS lists.
    try:
        return VideoSource(path, options)
    except InputError as exc:
        if suffix in VIDEO_EXTENSIONS:
            raise
        raise InputError(f"{path} is not an image folder, an image list ({'/'.join(LIST_EXTENSIONS)}) or a readable video ({exc})") from None


def read_frames(source: FrameSource, progress: Optional[ProgressFn] = None) -> FrameStack:
    """Decode and preprocess every frame of `source` into a uint8 `FrameStack` (one pass).

    Memory: one full-size frame at a time plus len(source) x 3 x H x W bytes at the network size.
    Reports progress as ("decode", done, total).
    """
    h, w = source.size
    rgb8 = torch.empty((len(source), 3, h, w), dtype=torch.uint8)
    names, indices, transforms, times = [], [], [], []
    for frame in source.frames(progress):
        rgb8[frame.index] = frame.rgb8
        names.append(frame.name)
        indices.append(frame.source_index)
        transforms.append(frame.transform)
        times.append(frame.time)
    n = len(names)
    return FrameStack(rgb8=rgb8[:n].clone() if n < len(source) else rgb8, names=names, source_indices=indices,
                      transforms=transforms, times=times, skipped=list(source.skipped))


def load_frames(path: Union[str, Path], options: FrameOptions = FrameOptions(), progress: Optional[ProgressFn] = None) -> FrameStack:
    """`read_frames(open_frames(path, options), progress)`."""
    return read_frames(open_frames(path, options), progress)


# --- helpers ---------------------------------------------------------------------------------

def _select(indices: Sequence[int], options: FrameOptions) -> List[int]:
    """Apply stride then max_frames to candidate frame numbers."""
    out = list(indices)[:: options.stride]
    if options.max_frames is not None and options.max_frames > 0:
        out = out[: options.max_frames]
    return out


def _check_count(description: str, n: int) -> None:
    if n < MIN_FRAMES:
        raise InputError(f"{description} gives {n} frame(s); at least {MIN_FRAMES} are needed")


def _no_fps(options: FrameOptions, description: str) -> None:
    if options.fps is not None:
        raise InputError(f"fps applies to videos only ({description} is not one); use stride instead")


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]
