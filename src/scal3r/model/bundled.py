"""Weights files that carry their own configuration, and the model that ships with the project.

A `.safetensors` file written by `scal3r train` holds, besides the tensors, string metadata:
`scal3r.model_config` (the `ModelConfig` as JSON, so no `--preset` is needed), `scal3r.inference`
(the resolution and chunking it was trained for, used as defaults) and `scal3r.train_config`.

The bundled model is `models/compact.safetensors` in the source tree (model card:
`models/README.md`); `$SCAL3R_MODELS` points elsewhere. `scal3r reconstruct` and `scal3r demo`
use it when no `--weights` (and no `--preset`/`--config`) is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from scal3r.config import ModelConfig
from scal3r.errors import CheckpointError

BUNDLED_NAME = "compact"
_META_MODEL = "scal3r.model_config"
_META_INFERENCE = "scal3r.inference"


@dataclass
class StoredModel:
    """What a weights file says about itself (empty for files without scal3r metadata)."""

    config: Optional[ModelConfig] = None
    inference: Dict[str, Any] = field(default_factory=dict)  # resolution, block_size, overlap
    step: Optional[int] = None


def models_dir() -> Path:
    env = os.environ.get("SCAL3R_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models"  # src/scal3r/model/ → repository root


def bundled_path() -> Path:
    return models_dir() / f"{BUNDLED_NAME}.safetensors"


def bundled_available() -> bool:
    return bundled_path().is_file()


def read_stored_model(path: Union[str, Path]) -> StoredModel:
    """The configuration stored in a weights file; a corrupt file raises CheckpointError naming it."""
    from scal3r.model.checkpoint import read_metadata

    meta = read_metadata(path)
    out = StoredModel()
    try:
        if _META_MODEL in meta:
            out.config = ModelConfig.from_dict(json.loads(meta[_META_MODEL]))
        if _META_INFERENCE in meta:
            out.inference = dict(json.loads(meta[_META_INFERENCE]))
        if "scal3r.step" in meta:
            out.step = int(meta["scal3r.step"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its stored model configuration is unreadable ({e})") from None
    return out


def repack(src: Union[str, Path], dst: Union[str, Path], dtype: str = "bf16",
           inference: Optional[Dict[str, Any]] = None) -> None:
    """Copy a weights file written by `scal3r train` into `dst` with its floating-point tensors in
    `dtype` ("bf16" halves the file; the model computes in fp32 on CPU either way) and its
    `scal3r.inference` defaults updated by `inference` (e.g. {"pose_refinement": "photometric"}
    for a run started before that default existed). The rest of the metadata is kept."""
    import torch
    from safetensors.torch import load_file, save_file

    from scal3r.files import atomic_write
    from scal3r.model.checkpoint import read_metadata

    if dtype not in ("bf16", "fp32"):
        raise CheckpointError(f"repack: dtype must be bf16 or fp32, got {dtype!r}")
    meta = dict(read_metadata(src))
    if _META_MODEL not in meta:
        raise CheckpointError(f"{src}: no stored model configuration (not written by `scal3r train`)")
    if inference:
        meta[_META_INFERENCE] = json.dumps({**json.loads(meta.get(_META_INFERENCE, "{}")), **inference})
    target = torch.bfloat16 if dtype == "bf16" else torch.float32
    tensors = {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in load_file(str(src)).items()}

    atomic_write(Path(dst), lambda tmp: save_file(tensors, tmp, metadata=meta))
