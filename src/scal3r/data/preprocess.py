"""The release's frame preprocessing: resize to a target width, height to a multiple of 14, crop.

The official loader (`load_and_preprocess_images` in the release's `scal3r/utils/image_utils.py`)
does, per frame, on an RGB image with values u8/255:

1. Target size, from the FIRST frame only: `target_w = resolution`,
   `target_h = int(H / W * resolution)` (float64 product, truncated), then both floored to a multiple
   of `align` (at least `align`). `resolution <= 0` keeps the native size (still floored).
2. Resize to cover the target: `ratio = max(target_h / H, target_w / W)`; resized side =
   `max(align, round(side * ratio / align) * align)` with Python's round (half to even). The resize
   is PIL bicubic on uint8 (values `(x * 255).astype(uint8)`), skipped when the size does not change.
3. Crop to the target: centred on the dummy camera's principal point (start = round(cy) - target // 2,
   cy = H/2 scaled by the resize in float32; this is (resized - target) // 2 for even sizes, and
   zero-pads where an odd `align` pushes it past the edge), or from the top-left corner when
   `center_crop` is false.

Because every decoded pixel is u8/255 and `(u8 / 255 * 255).astype(uint8) == u8` for all 256 values
in float32, running the whole rule on uint8 arrays and dividing by 255 at the end is bit-identical
to the release's float path; this module therefore works on uint8 (H, W, 3) arrays.

Intrinsics follow the same steps as the release's dummy camera: scale rows by resized / original,
then subtract the crop offset from the principal point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from PIL import Image

from scal3r.errors import InputError

HW = Tuple[int, int]


@dataclass(frozen=True)
class PreprocessOptions:
    """The release's `dataset_cfg` knobs that shape a frame.

    resolution: target width in pixels (`proc_max_size`, 518 in the release); <= 0 keeps the native size.
    align: both output sides are multiples of this (`proc_align_size`, the patch size 14).
    center_crop: crop the centre of the covering resize (release default) instead of the top-left.
    """

    resolution: int = 518
    align: int = 14
    center_crop: bool = True

    def __post_init__(self) -> None:
        if self.align < 1:
            raise InputError(f"alignment must be a positive number of pixels, got {self.align}")
        if 0 < self.resolution < self.align:
            raise InputError(f"resolution {self.resolution} is below the patch size {self.align}")


@dataclass(frozen=True)
class FrameTransform:
    """How one frame went from its decoded size to the network size.

    input_hw: decoded (H, W); resized_hw: after the covering resize; crop_tl: (top, left) offset of
    the crop inside the resized image; output_hw: the network input size (the same for all frames).
    """

    input_hw: HW
    resized_hw: HW
    crop_tl: HW
    output_hw: HW

    @property
    def scale_xy(self) -> Tuple[float, float]:
        """Pixel scale factors (sx, sy) from input to resized/output pixels."""
        return self.resized_hw[1] / self.input_hw[1], self.resized_hw[0] / self.input_hw[0]

    def intrinsics_to_output(self, K: torch.Tensor) -> torch.Tensor:
        """Map input-pixel intrinsics (..., 3, 3) to output pixels, as the release's dummy camera.

        Row 0 (fx, skew, cx) scales by sx, row 1 (fy, cy) by sy, then the crop shifts cx, cy.
        """
        sx, sy = self.scale_xy
        out = K.clone()
        out[..., 0, :] = out[..., 0, :] * sx
        out[..., 1, :] = out[..., 1, :] * sy
        out[..., 0, 2] = out[..., 0, 2] - self.crop_tl[1]
        out[..., 1, 2] = out[..., 1, 2] - self.crop_tl[0]
        return out

    def intrinsics_to_input(self, K: torch.Tensor) -> torch.Tensor:
        """Inverse of `intrinsics_to_output`: output-pixel intrinsics (..., 3, 3) to input pixels."""
        sx, sy = self.scale_xy
        out = K.clone()
        out[..., 0, 2] = out[..., 0, 2] + self.crop_tl[1]
        out[..., 1, 2] = out[..., 1, 2] + self.crop_tl[0]
        out[..., 0, :] = out[..., 0, :] / sx
        out[..., 1, :] = out[..., 1, :] / sy
        return out


def target_size(height: int, width: int, options: PreprocessOptions = PreprocessOptions()) -> HW:
    """Network input size (h, w) for a sequence whose first frame is height x width (release rule)."""
    a = options.align
    if options.resolution > 0:
        # Float64 product then truncation, exactly as the release (56/84*84 must stay 56).
        th, tw = int(height / width * options.resolution), options.resolution
    else:
        th, tw = height, width
    return max(a, th // a * a), max(a, tw // a * a)


def plan_transform(input_hw: HW, output_hw: HW, options: PreprocessOptions = PreprocessOptions()) -> FrameTransform:
    """Covering resize and crop that takes a frame of `input_hw` to `output_hw` (release rule)."""
    h, w = input_hw
    th, tw = output_hw
    a = options.align
    ratio = max(th / max(h, 1), tw / max(w, 1))
    rh = max(a, round(h * ratio / a) * a)
    rw = max(a, round(w * ratio / a) * a)
    if options.center_crop:
        # The release centres on the dummy principal point (W/2, H/2), scaled by the resize in
        # float32 and rounded; reproduce that instead of assuming (rh - th) // 2.
        # (A scale of exactly 1 leaves the float32 value unchanged, so no special case is needed.)
        cy = np.float32(h / 2.0) * np.float32(rh / h)
        cx = np.float32(w / 2.0) * np.float32(rw / w)
        top, left = int(round(float(cy))) - th // 2, int(round(float(cx))) - tw // 2
    else:
        top, left = 0, 0
    # With an even `align` the crop always fits; with an odd one, round(cy) can push it one pixel
    # past the edge, where the release zero-pads (`apply_transform` does the same).
    return FrameTransform(input_hw=(h, w), resized_hw=(rh, rw), crop_tl=(top, left), output_hw=(th, tw))


def apply_transform(rgb: np.ndarray, transform: FrameTransform) -> np.ndarray:
    """Resize (PIL bicubic, as the release) and crop a uint8 (H, W, 3) frame → uint8 (h, w, 3)."""
    if rgb.shape[:2] != transform.input_hw:
        raise ValueError(f"frame is {rgb.shape[:2]}, transform expects {transform.input_hw}")
    if transform.resized_hw != transform.input_hw:
        rh, rw = transform.resized_hw
        rgb = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.Resampling.BICUBIC))
    top, left = transform.crop_tl
    th, tw = transform.output_hw
    rh, rw = rgb.shape[:2]
    if top >= 0 and left >= 0 and top + th <= rh and left + tw <= rw:
        return np.ascontiguousarray(rgb[top:top + th, left:left + tw])
    out = np.zeros((th, tw) + rgb.shape[2:], dtype=rgb.dtype)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + th, rh), min(left + tw, rw)
    out[y0 - top:y1 - top, x0 - left:x1 - left] = rgb[y0:y1, x0:x1]
    return out


def preprocess_rgb(rgb: np.ndarray, output_hw: HW, options: PreprocessOptions = PreprocessOptions()):
    """Release preprocessing of one uint8 (H, W, 3) RGB frame to `output_hw`.

    Returns (uint8 (h, w, 3) array, FrameTransform).
    """
    transform = plan_transform(rgb.shape[:2], output_hw, options)
    return apply_transform(rgb, transform), transform


def to_float(rgb8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) → float32 in [0, 1], the release's u8/255 (bit-identical)."""
    return rgb8.to(torch.float32).div(255.0)


def hwc_to_chw(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) array → uint8 (3, H, W) contiguous tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
