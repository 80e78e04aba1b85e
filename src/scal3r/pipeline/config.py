"""`ReconstructConfig`: every setting of `scal3r reconstruct`, typed, with the issue's defaults.

The CLI fills one from its options; library users build one directly. `resolve_device` and
`resolve_dtype` turn the "auto" choices into concrete ones and refuse impossible requests (CUDA
on a machine without it) with one line a user can act on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from scal3r.errors import InputError, Scal3RError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16")


POSE_REFINEMENTS = ("none", "photometric")


@dataclass
class ReconstructConfig:
    """Settings of one reconstruction.

    input: image folder, video file or text list of images; out: the output directory.
    Model: `weights` (checkpoint), `preset` (official | small | tiny | vggt) or `model_config` (a
    release-style YAML/JSON `{"model_cfg": {"sampler_cfg": ...}}`, which wins over `preset`).
    resolution: network input width (None: the model's own `img_size`, 518 for the official model).
    Chunking: `block_size` frames per chunk, consecutive chunks sharing `overlap` frames.
    loop: detect revisits and run loop chunks (in the same memory-synchronised pass).
    offload: keep the network's per-layer chunk state on disk (bounded RAM for very long videos).
    resumable: work in `<out>.partial/` and keep it if the run fails (per-phase chunk state on
    disk, a manifest of the settings and the input); resume: continue such a run.
    gt: ground truth to evaluate against (a synthetic-world directory or a TUM/KITTI file).
    intrinsics: a known calibration (`scal3r.io.intrinsics.read_known_intrinsics`: JSON, 3×3 text,
    one per frame, or a KITTI calib.txt), used instead of the predicted field of view wherever
    depth becomes points (alignment, loops, fusion, exports).
    """

    input: str
    out: str
    weights: Optional[str] = None
    preset: Optional[str] = None
    model_config: Optional[str] = None
    block_size: Optional[int] = None  # None: what the weights were trained for, else the release's 60
    overlap: Optional[int] = None  # None: likewise, else 30
    sync: bool = True  # memory gradients summed over all chunks (GCS); False: each chunk alone (ablation)
    # "photometric": each chunk's poses refined by direct alignment through the reference frame's
    # predicted depth (scal3r.geometry.photometric); "none": the camera head's poses as they come.
    # None: what the weights were trained for (models from `scal3r train`: photometric), else none.
    pose_refinement: Optional[str] = None
    loop: bool = True
    device: str = "auto"
    dtype: str = "auto"
    resolution: Optional[int] = None
    offload: bool = False
    resumable: bool = False
    resume: bool = False  # implies resumable
    seed: int = 0
    stride: int = 1
    fps: Optional[float] = None
    max_frames: Optional[int] = None
    strict: bool = False
    overwrite: bool = False
    gt: Optional[str] = None
    intrinsics: Optional[str] = None
    # Outputs. "input": depth/, confidence/ and colmap/ at each frame's original size (intrinsics
    # rescaled with them; colmap/images/ are the original frames), "network": at the network size.
    output_resolution: str = "network"
    save_depth: bool = True  # depth/ and confidence/ per frame
    colmap: bool = True  # colmap/ text model
    colmap_images: bool = True  # colmap/images/ with the network-size frames the cameras describe
    colmap_max_points: int = 200_000  # points3D.txt is a random subset of the fused cloud
    plot: bool = True  # trajectory.png
    # Fusion (see scal3r.geometry.FusionConfig).
    conf_ratio: float = 0.75
    voxel_size: Optional[float] = None  # world units; None: 1% of the first frame's median depth
    # Loop detection (see scal3r.geometry.LoopConfig); None keeps the backend's default.
    loop_threshold: Optional[float] = None
    loop_min_gap: Optional[int] = None
    max_loops: int = 50  # at most this many loop chunks (strongest first): each costs one chunk
    # Evaluation with gt.
    eval_threshold: Optional[float] = None  # F1 precision/recall distance; None: scal3r.eval.F1_THRESHOLD
    eval_voxel: Optional[float] = 0.2  # downsample both clouds before Chamfer/F1 (ground-truth units)

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)} "
                             "(fp16 is not supported: the memory update needs bf16's range)")
        if self.block_size is not None and self.block_size < 2:
            raise InputError(f"--block-size must be at least 2, got {self.block_size}")
        if self.overlap is not None and self.overlap < 1:
            raise InputError(f"--overlap must be at least 1, got {self.overlap}")
        if self.block_size is not None and self.overlap is not None and not 0 < self.overlap < self.block_size:
            raise InputError(f"--overlap must be in [1, block size), got {self.overlap} with block size "
                             f"{self.block_size} (consecutive chunks must share frames to be aligned)")
        if self.resolution is not None and self.resolution < 14:
            raise InputError(f"--resolution must be at least 14 pixels, got {self.resolution}")
        if self.intrinsics is not None and not Path(self.intrinsics).is_file():
            raise InputError(f"--intrinsics: file not found: {self.intrinsics}")
        if self.output_resolution not in ("network", "input"):
            raise InputError(f"--output-resolution must be network or input, got {self.output_resolution!r}")
        if self.pose_refinement not in (None,) + POSE_REFINEMENTS:
            raise InputError(f"--pose-refinement must be one of {', '.join(POSE_REFINEMENTS)}, got {self.pose_refinement!r}")
        if self.max_loops < 0:
            raise InputError(f"max_loops must be >= 0, got {self.max_loops}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(name: str) -> str:
    """"auto" → "cuda" when available, else "cpu"; "cuda" without CUDA is an error."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise Scal3RError("--device cuda was requested but CUDA is not available on this machine "
                          "(no GPU, or a CPU-only torch build); use --device cpu or auto")
    return name


def resolve_dtype(name: str, device: str):
    """"auto" → bfloat16 on CUDA, float32 on CPU. Returns a torch dtype."""
    import torch

    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    if name == "auto":
        name = "bf16" if device == "cuda" else "fp32"
    if name == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise Scal3RError("this GPU does not support bfloat16; use --dtype fp32")
    return torch.bfloat16 if name == "bf16" else torch.float32
