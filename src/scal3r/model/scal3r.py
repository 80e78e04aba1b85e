"""The Scal3R network: aggregator with Global Context Memory + camera and DPT heads.

Submodule names are the release checkpoint's prefixes (`agg_regator`, `cam_decoder`, `xyz_decoder`,
`dpt_decoder`), so `scal3r.pt` loads strictly without renaming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from scal3r.config import ModelConfig
from scal3r.errors import InputError
from scal3r.model.aggregator import Aggregator
from scal3r.model.heads import CameraHead, DPTHead
from scal3r.progress import ProgressFn


class Scal3R(nn.Module):
    def __init__(self, config: Optional[ModelConfig] = None):
        super().__init__()
        config = config or ModelConfig.official()
        config.validate()
        self.config = config
        a = config.aggregator
        dim_in = 2 * a.embed_dim
        self.agg_regator = Aggregator(a)
        self.cam_decoder = CameraHead(dim_in, config.camera)
        self.xyz_decoder = DPTHead(dim_in, config.points, a.intermediate_layers, a.patch_size)
        self.dpt_decoder = DPTHead(dim_in, config.depth, a.intermediate_layers, a.patch_size)
        self.eval()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str) -> "Scal3R":
        """`official` (the released model's dimensions), `vggt`, `small` or `tiny`; random weights."""
        return cls(ModelConfig.preset(name))

    @classmethod
    def from_release_config(cls, sampler_cfg: Mapping[str, Any], vit_override: Optional[Mapping[str, Any]] = None) -> "Scal3R":
        """From the release YAML's `model_cfg.sampler_cfg` dict; random weights."""
        return cls(ModelConfig.from_release(sampler_cfg, vit_override))

    def load_checkpoint(self, path: Union[str, Path], strict: bool = True) -> List[str]:
        """Load an official Scal3R or VGGT checkpoint (.pt/.pth/.safetensors). Returns notes
        worth telling the user (e.g. memory units left at initialisation for VGGT weights)."""
        from scal3r.model.checkpoint import load_into

        return load_into(self, path, strict=strict)

    def save_checkpoint(self, path: Union[str, Path], layout: str = "scal3r") -> None:
        """Save in the release layout (`scal3r`) or VGGT's (`vggt`); format by suffix."""
        from scal3r.model.checkpoint import save_state_dict

        save_state_dict(self.state_dict(), path, layout=layout)

    # -- inference -----------------------------------------------------------------------------------
    def decode(self, features: Dict[int, Tensor], height: int, width: int,
               trace: Optional[Dict[str, Tensor]] = None, trace_prefix: str = "") -> Dict[str, Tensor]:
        """Heads on one chunk's features {layer: (1, S, P, 2C)} → per-frame outputs (CPU, float32).

        Keys: pose_enc (S, 9), depth (S, H, W, 1), depth_conf (S, H, W), world_points (S, H, W, 3),
        world_points_conf (S, H, W).
        """
        a = self.config.aggregator
        poses = self.cam_decoder(features, a.depth - 1)
        points, points_conf = self.xyz_decoder(features, height, width)
        depth, depth_conf = self.dpt_decoder(features, height, width)
        if trace is not None:
            trace[trace_prefix + "cam_map_iters"] = torch.stack([p[0] for p in poses]).float().cpu()
            for layer, f in features.items():
                trace[trace_prefix + f"agg_feat_l{layer:02d}"] = f[0].float().cpu()
        return {
            "pose_enc": poses[-1][0].float().cpu(),
            "depth": depth[0].float().cpu(),
            "depth_conf": depth_conf[0].float().cpu(),
            "world_points": points[0].float().cpu(),
            "world_points_conf": points_conf[0].float().cpu(),
        }

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        """One chunk (S, 3, H, W) in [0, 1], first frame = reference; memory from its own gradient."""
        from scal3r.engine.runner import run_chunks

        if images.ndim == 5 and images.shape[0] == 1:
            images = images[0]
        out = run_chunks(self, images, [list(range(images.shape[0]))], sync=True)[0]
        out.pop("frames")
        return out

    def infer_chunks(
        self,
        images: Tensor,
        chunk_ranges: Sequence[Tuple[int, int]],
        sync: bool = True,
        *,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
        offload: Union[bool, str, Path] = False,
        sum_order: str = "release",
        progress: Optional[ProgressFn] = None,
        trace: Optional[Dict[str, Tensor]] = None,
    ) -> Optional[List[Dict[str, Tensor]]]:
        """Multi-chunk inference with Global Context Synchronization.

        images: (N, 3, H, W) float in [0, 1]; chunk_ranges: half-open (start, end) per chunk,
        overlapping. Each chunk is fed middle frame first (its reference frame, as the release);
        outputs come back with rows in ascending frame order. `sync=False` updates each chunk's
        memory from its own gradient only (ablation). `dtype=torch.bfloat16` runs the transformer
        under autocast (memory and heads stay float32). `offload=True` (or a directory) keeps the
        per-layer chunk state in files instead of RAM, so memory stays bounded by about one chunk.
        `sum_order` chooses how chunk gradients are summed ("release": the release's chunk order,
        bit-identical for any number of ranks; "fp64": float64 all-reduce), see `scal3r.engine.sync`.

        Called in every rank of an initialised torch.distributed process group, the chunks are
        spread over the ranks and rank 0 returns all outputs (other ranks return None).
        Returns per chunk: pose_enc (n, 9), depth (n, H, W, 1), depth_conf (n, H, W),
        world_points (n, H, W, 3), world_points_conf (n, H, W), frames (n,) global indices.
        """
        from scal3r.engine.chunks import reference_first_order, validate_ranges
        from scal3r.engine.runner import run_chunks
        from scal3r.engine.state import DiskStore, MemoryStore

        if not torch.is_tensor(images) or images.ndim != 4:
            raise InputError("images must be a tensor of shape (N, 3, H, W)")
        ranges = validate_ranges(chunk_ranges, images.shape[0])
        fed = [reference_first_order(s, e) for s, e in ranges]
        device = torch.device(device) if device else None
        if offload:
            store = DiskStore(None if offload is True else offload, device=device)
        else:
            store = MemoryStore(device)  # on a GPU, chunk state waits in host RAM between layers
        outs = run_chunks(self, images, fed, sync=sync, sum_order=sum_order, store=store, device=device,
                          dtype=dtype, progress=progress, trace=trace)
        return None if outs is None else [_rows_ascending(o) for o in outs]


def _rows_ascending(out: Dict[str, Tensor]) -> Dict[str, Tensor]:
    order = torch.argsort(out["frames"])
    return {k: v[order] for k, v in out.items()}
