"""The Scal3R network: aggregator with Global Context Memory + camera and DPT heads.

The network is entered through the engine (`scal3r.engine.infer_chunks` for inference,
`scal3r.engine.forward_chunks` for training), which runs it layer-synchronously over chunks; this
module holds the layers and heads only. Submodule names are the release checkpoint's prefixes (`agg_regator`, `cam_decoder`, `xyz_decoder`,
`dpt_decoder`), so `scal3r.pt` loads strictly without renaming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from scal3r.config import ModelConfig
from scal3r.model.aggregator import Aggregator
from scal3r.model.heads import CameraHead, DPTHead


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

    def load_checkpoint(self, path: Union[str, Path], strict: bool = True, drop_memory: bool = False) -> List[str]:
        """Load an official Scal3R or VGGT checkpoint (.pt/.pth/.safetensors). Returns notes
        worth telling the user (e.g. memory units left at initialisation for VGGT weights).
        drop_memory: this model has no memory units; the file's are left out."""
        from scal3r.model.checkpoint import load_into

        return load_into(self, path, strict=strict, drop_memory=drop_memory)

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
