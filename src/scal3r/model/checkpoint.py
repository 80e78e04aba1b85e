"""Checkpoints in the official layouts, loaded safely.

Layouts (module prefixes of the state-dict keys):
  scal3r  `agg_regator.`, `cam_decoder.`, `xyz_decoder.`, `dpt_decoder.`   (release `scal3r.pt`)
  vggt    `aggregator.`, `camera_head.`, `point_head.`, `depth_head.`, `track_head.`  (VGGT-1B)
A VGGT checkpoint has no memory units: they keep their initialisation (and the caller is told);
the tracking head has no counterpart here and is skipped.

Formats: `.safetensors`, or a torch zip/pickle file read with `torch.load(weights_only=True)` —
arbitrary pickled objects are refused, never executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from scal3r.errors import CheckpointError

# release prefix -> VGGT prefix
VGGT_PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("agg_regator.", "aggregator."),
    ("cam_decoder.", "camera_head."),
    ("xyz_decoder.", "point_head."),
    ("dpt_decoder.", "depth_head."),
)
MEMORY_MARKER = ".ttt."
_WRAPPER_KEYS = ("state_dict", "model", "module", "sampler")


def read_state_dict(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Read a flat {name: tensor} dict from .safetensors or a torch file, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - safetensors is a dependency
            raise CheckpointError("reading .safetensors needs the 'safetensors' package") from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"cannot read {path} as safetensors (truncated or corrupt?): {first_sentence(e)}") from e
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither a torch zip archive nor a legacy pickle
        raise CheckpointError(f"{path} is not a checkpoint: neither a torch file (.pt/.pth) nor .safetensors")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "UnpicklingError" in type(e).__name__:
            raise CheckpointError(
                f"{path} contains pickled Python objects beyond tensors; refusing to unpickle it "
                "(convert it to a plain state dict or .safetensors)") from e
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a torch file?): {first_sentence(e)}") from e
    return _as_state_dict(obj, path)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def first_sentence(e: Exception) -> str:
    """The first sentence of an error's first line (library messages run on for paragraphs)."""
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    line = text[0]
    if "central directory" in line or "failed reading zip archive" in line:
        return "incomplete zip archive"
    end = line.find(". ")
    return (line[: end + 1] if end > 0 else line)[:200]


def _as_state_dict(obj, path: Path) -> Dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping) and not torch.is_tensor(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} does not hold a state dict")
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors, e.g. {bad[0]!r}")
    out = dict(obj)
    # Checkpoints saved from DistributedDataParallel / torch.compile wrappers.
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def detect_layout(state: Mapping[str, Tensor]) -> str:
    """'scal3r' or 'vggt', from the key prefixes."""
    keys = list(state)
    if any(k.startswith("agg_regator.") for k in keys):
        return "scal3r"
    if any(k.startswith("aggregator.") for k in keys):
        return "vggt"
    raise CheckpointError(
        "checkpoint has neither Scal3R ('agg_regator.*') nor VGGT ('aggregator.*') keys; "
        f"first key: {keys[0]!r}")


def to_release_layout(state: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], str, List[str]]:
    """Rename a VGGT state dict to the release's prefixes; returns (state, layout, skipped keys)."""
    layout = detect_layout(state)
    if layout == "scal3r":
        return dict(state), layout, []
    out, skipped = {}, []
    for key, value in state.items():
        for ours, theirs in VGGT_PREFIXES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
                break
        else:
            skipped.append(key)
    return out, layout, skipped


def load_into(model: nn.Module, path: Union[str, Path], strict: bool = True, drop_memory: bool = False) -> List[str]:
    """Load a checkpoint into `model`; strict by default. Returns notes for the user.

    drop_memory: `model` has no memory units (the ablation) and the file's are left out."""
    state, layout, skipped = to_release_layout(read_state_dict(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    notes = []
    # Our compact preset's conv position embedding and correlation embedding are newer than some
    # of our checkpoints: both start as a zero addition, exactly the model those were trained as.
    if layout == "scal3r":
        for what, is_part in (
                ("conv position embedding", lambda k: k.endswith("patch_embed.pos_embed") and "patch_embed.patch_embed" not in k),
                ("correlation embedding", lambda k: k.startswith("agg_regator.correlation."))):
            absent = [k for k in missing if is_part(k)]
            if absent:
                missing = [k for k in missing if k not in absent]
                notes.append(f"{Path(path).name}: no {what}; it starts as a zero addition (the model it was trained as)")
    if drop_memory:
        dropped = [k for k in unexpected if MEMORY_MARKER in k]
        unexpected = [k for k in unexpected if MEMORY_MARKER not in k]
        if dropped:
            notes.append(f"{Path(path).name}: its {len({k.split(MEMORY_MARKER)[0] for k in dropped})} memory units "
                         "are left out (a model without memory)")
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if layout == "vggt":
        memory_missing = [k for k in missing if MEMORY_MARKER in k]
        missing = [k for k in missing if MEMORY_MARKER not in k]
        if memory_missing:
            notes.append(f"VGGT checkpoint: the {len({k.split(MEMORY_MARKER)[0] for k in memory_missing})} memory units "
                         "keep their initialisation (no test-time-training weights in VGGT)")
        if skipped:
            notes.append(f"VGGT checkpoint: skipped {len(skipped)} tensors without a counterpart here (e.g. {skipped[0]})")
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({layout} layout): " + "; ".join(problems)
                              + " — wrong --preset or config?")
    for key, value in state.items():
        if key in own and value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"checkpoint {path}: tensor {key} contains NaN or infinite values")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return notes


def from_release_layout(state: Mapping[str, Tensor], layout: str) -> Dict[str, Tensor]:
    """Our state dict in `layout` ('scal3r' as is; 'vggt' renamed, memory units dropped)."""
    if layout == "scal3r":
        return dict(state)
    if layout != "vggt":
        raise CheckpointError(f"unknown checkpoint layout {layout!r} (scal3r or vggt)")
    out = {}
    for key, value in state.items():
        if MEMORY_MARKER in key:
            continue
        for ours, theirs in VGGT_PREFIXES:
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = value
                break
    return out


def read_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The string metadata of a .safetensors file ({} for other formats or none stored)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"cannot read {path} as safetensors (truncated or corrupt?): {first_sentence(e)}") from e


def save_state_dict(state: Mapping[str, Tensor], path: Union[str, Path], layout: str = "scal3r",
                    metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write atomically (temp file + rename): .safetensors by suffix (with `metadata`), else torch.save."""
    from scal3r.files import atomic_write

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in from_release_layout(state, layout).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata) if metadata else None))
    else:
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
