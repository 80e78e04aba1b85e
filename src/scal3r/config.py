"""Typed model configuration with presets.

`ModelConfig.official()` has the dimensions of the released `scal3r.pt` (VGGT-1B plus four memory
units). `ModelConfig.from_release(sampler_cfg)` reads the release YAML's `model_cfg.sampler_cfg`
dict (the parity fixtures' `config.json["sampler_cfg"]`); release knobs this implementation does not
support raise a clear error instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from scal3r.errors import Scal3RError

# DINOv2 sizes by the release's `patch_embed` name: (embed_dim, depth, num_heads, mlp_ratio).
DINOV2_SIZES: Dict[str, Tuple[int, int, int, float]] = {
    "dinov2_vits14_reg": (384, 12, 6, 4.0),
    "dinov2_vitb14_reg": (768, 12, 12, 4.0),
    "dinov2_vitl14_reg": (1024, 24, 16, 4.0),
    "dinov2_vitg2_reg": (1536, 40, 24, 4.0),
}


@dataclass
class ViTConfig:
    """The DINOv2 ViT used as patch embedder (it runs whole; its normalised patch tokens are used)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    img_size: int = 518  # sets the learned position-embedding grid (img_size / patch_size)²
    patch_size: int = 14


@dataclass
class MemoryConfig:
    """Global Context Memory (the release's `ttt_cfg`)."""

    num_heads: int = 1
    inter_multi: int = 4  # hidden width of the fast SwiGLU = inter_multi × head_dim
    base_lr: float = 0.01  # per-token step sizes start at softplus(0 + softplus⁻¹(base_lr)) = base_lr
    muon_update_steps: int = 5  # Newton–Schulz iterations of the orthogonalised update
    use_modulation: bool = True  # output through LN + (shift, scale, gate) instead of one Linear
    # The release flag that all-reduces gradients across torch.distributed ranks. Here the engine
    # always combines chunk gradients (see `scal3r.engine.sync` for the order), so this only records
    # the release value.
    use_ddp_allreduce: bool = True


@dataclass
class AggregatorConfig:
    """Patch embedding + alternating frame/global attention + memory units."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_embed: str = "dinov2_vitl14_reg"  # or "conv"
    vit: Optional[ViTConfig] = None  # DINOv2 size; None = the size named by `patch_embed`
    qk_norm: bool = True
    rope_freq: float = 100.0  # <= 0 disables RoPE
    init_values: float = 0.01  # LayerScale init
    # `patch_embed="conv"` only: add a learned absolute position embedding (see
    # `scal3r.model.patch_embed.ConvPatchEmbed`); the release's conv embedder has none.
    conv_position_embedding: bool = False
    # Add an explicit cross-frame matching cue (`scal3r.model.correlation`) to the tokens; not in
    # the release, whose DINOv2 features already match across views.
    correlation_embedding: bool = False
    memory_layers: Tuple[int, ...] = (14, 17, 20, 23)  # global blocks followed by a memory unit
    intermediate_layers: Tuple[int, ...] = (4, 11, 17, 23)  # layers the heads read
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in a frame: 1 camera + registers."""
        return 1 + self.num_register_tokens

    def vit_config(self) -> ViTConfig:
        if self.vit is not None:
            return self.vit
        if self.patch_embed not in DINOV2_SIZES:
            raise Scal3RError(f"unknown patch_embed {self.patch_embed!r}; expected 'conv' or one of {sorted(DINOV2_SIZES)}")
        dim, depth, heads, ratio = DINOV2_SIZES[self.patch_embed]
        return ViTConfig(dim, depth, heads, ratio, self.num_register_tokens, self.img_size, self.patch_size)


@dataclass
class CameraHeadConfig:
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    trans_act: str = "linear"
    quat_act: str = "linear"
    fl_act: str = "relu"
    num_iterations: int = 4
    # Also read each camera token minus the chunk's mean camera token (`CameraHead`); not in the
    # release. From scratch, the tokens of a chunk's frames share a large constant part (norm ~150,
    # varying by 0.3 % across frames) that LayerNorm keeps, so the pose read from them was one
    # pose for every frame — even with the true optical flow added to the tokens.
    relative_tokens: bool = False


@dataclass
class DPTHeadConfig:
    output_dim: int = 4  # channels incl. the confidence channel
    activation: str = "inv_log"
    conf_activation: str = "expp1"
    features: int = 256
    out_channels: Tuple[int, int, int, int] = (256, 512, 1024, 1024)
    frames_chunk_size: int = 8  # frames decoded at once (bounds memory, as the release)


@dataclass
class ModelConfig:
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    camera: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    points: DPTHeadConfig = field(default_factory=lambda: DPTHeadConfig(4, "inv_log", "expp1"))
    depth: DPTHeadConfig = field(default_factory=lambda: DPTHeadConfig(2, "exp", "expp1"))
    gradient_checkpointing: bool = False  # the release's `use_checkpoint` (training only)

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def official(cls) -> "ModelConfig":
        """The released model: VGGT-1B dimensions, memory after global blocks 14, 17, 20, 23."""
        return cls(gradient_checkpointing=True)

    @classmethod
    def vggt(cls) -> "ModelConfig":
        """Plain VGGT-1B (no memory units), for VGGT checkpoints used as they are.

        A VGGT checkpoint loaded into the `official` preset instead keeps the memory units at their
        initialisation (where Scal3R training starts from); their gated output is not zero there.
        """
        cfg = cls.official()
        cfg.aggregator.memory_layers = ()
        return cfg

    @classmethod
    def small(cls) -> "ModelConfig":
        """A conv-embed model of ~25M parameters for CPU experiments and benchmarks."""
        return cls(
            aggregator=AggregatorConfig(
                img_size=518, embed_dim=256, depth=8, num_heads=4, patch_embed="conv",
                memory_layers=(4, 7), intermediate_layers=(1, 3, 5, 7),
            ),
            camera=CameraHeadConfig(trunk_depth=2, num_heads=8),
            points=DPTHeadConfig(4, "inv_log", "expp1", features=64, out_channels=(32, 64, 128, 128)),
            depth=DPTHeadConfig(2, "exp", "expp1", features=64, out_channels=(32, 64, 128, 128)),
        )

    @classmethod
    def compact(cls) -> "ModelConfig":
        """The model trained here and shipped with the project (`models/`): ~7M parameters, sized
        so that a training step on a few chunks takes seconds on 2 CPU cores.

        Trained from scratch, so its residual blocks start fully open (LayerScale 1.0, a plain
        pre-norm ViT): VGGT's 0.01 suits fine-tuning from a pretrained DINOv2 but, from scratch,
        left every attention block at ~1% of the residual stream (measured on the first run: all
        LayerScale gains 0.006–0.008 after 600 steps), so the aggregator passed the patch
        embedding through and no frame ever saw another. Its conv patch embedder adds an absolute
        position embedding (DINOv2 has one): without it the camera tokens varied by 0.3 % between
        frames after 1,675 training steps and the pose head could not tell them apart."""
        return cls(
            aggregator=AggregatorConfig(
                img_size=224, embed_dim=128, depth=6, num_heads=4, patch_embed="conv",
                memory_layers=(3, 5), intermediate_layers=(1, 3, 4, 5), init_values=1.0,
                conv_position_embedding=True, correlation_embedding=True,
            ),
            camera=CameraHeadConfig(trunk_depth=2, num_heads=8, init_values=1.0, relative_tokens=True),
            points=DPTHeadConfig(4, "inv_log", "expp1", features=48, out_channels=(32, 64, 96, 96)),
            depth=DPTHeadConfig(2, "exp", "expp1", features=48, out_channels=(32, 64, 96, 96)),
        )

    @classmethod
    def tiny(cls) -> "ModelConfig":
        """The `tiny_conv` parity fixture's dimensions: fast enough for unit tests."""
        return cls(
            aggregator=AggregatorConfig(
                img_size=84, embed_dim=64, depth=6, num_heads=4, patch_embed="conv",
                memory_layers=(3, 5), intermediate_layers=(1, 2, 4, 5),
            ),
            points=DPTHeadConfig(4, "inv_log", "expp1", features=32, out_channels=(16, 32, 64, 64)),
            depth=DPTHeadConfig(2, "exp", "expp1", features=32, out_channels=(16, 32, 64, 64)),
        )

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        presets = {"official": cls.official, "vggt": cls.vggt, "small": cls.small, "compact": cls.compact,
                   "tiny": cls.tiny}
        if name not in presets:
            raise Scal3RError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
        return presets[name]()

    # -- plain data (checkpoint metadata) ---------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict`; unknown keys are refused (a config from a newer version)."""
        def build(dc, data):
            data = dict(data)
            unknown = set(data) - _field_names(dc)
            if unknown:
                raise Scal3RError(f"unknown {dc.__name__} keys {sorted(unknown)} in a stored model configuration")
            kwargs = {}
            for f in dataclasses.fields(dc):
                if f.name not in data:
                    continue
                value = data[f.name]
                sub = _NESTED.get((dc.__name__, f.name))
                if sub is not None and value is not None:
                    value = build(sub, value)
                elif isinstance(value, list):
                    value = tuple(value)
                kwargs[f.name] = value
            return dc(**kwargs)

        out = build(cls, d)
        out.validate()
        return out

    # -- the release's sampler_cfg ---------------------------------------------------------------
    @classmethod
    def from_release(cls, sampler_cfg: Mapping[str, Any], vit_override: Optional[Mapping[str, Any]] = None) -> "ModelConfig":
        """Build from the release YAML's `model_cfg.sampler_cfg` (same defaults as the release).

        `vit_override` replaces sizes of the DINOv2 patch-embed ViT (`embed_dim`, `depth`,
        `num_heads`, `mlp_ratio`), as the small DINOv2 parity fixture was built.
        """
        cfg = dict(sampler_cfg)
        agg = dict(cfg.get("agg_regator_cfg", {"img_size": 518, "patch_size": 14, "embed_dim": 1024}))
        _reject_unsupported(agg)
        ttt = dict(agg.pop("ttt_cfg", {}) or {})
        ttt.pop("type", None)
        memory = MemoryConfig(**{k: ttt[k] for k in ttt if k in _field_names(MemoryConfig)})
        unknown = set(ttt) - _field_names(MemoryConfig)
        if unknown:
            raise Scal3RError(f"unsupported ttt_cfg keys in the release config: {sorted(unknown)}")

        aggregator = AggregatorConfig(
            img_size=int(agg.get("img_size", 518)),
            patch_size=int(agg.get("patch_size", 14)),
            embed_dim=int(agg.get("embed_dim", 1024)),
            depth=int(agg.get("depth", 24)),
            num_heads=int(agg.get("num_heads", 16)),
            mlp_ratio=float(agg.get("mlp_ratio", 4.0)),
            num_register_tokens=int(agg.get("num_register_tokens", 4)),
            patch_embed=str(agg.get("patch_embed", "dinov2_vitl14_reg")),
            qk_norm=bool(agg.get("qk_norm", True)),
            rope_freq=float(agg.get("rope_freq", 100)),
            init_values=float(agg.get("init_values", 0.01)),
            # The release enables memory on global blocks only when global_use_ttt is set.
            memory_layers=tuple(int(i) for i in agg.get("ttt_layer_idx", range(24))) if agg.get("global_use_ttt", False) else (),
            intermediate_layers=tuple(int(i) for i in agg.get("intermediate_layer_idx", (4, 11, 17, 23))),
            memory=memory,
        )
        if aggregator.patch_embed != "conv":
            vit = aggregator.vit_config()
            override = dict(vit_override or {})
            bad = set(override) - {"embed_dim", "depth", "num_heads", "mlp_ratio"}
            if bad:
                raise Scal3RError(f"vit_override accepts embed_dim, depth, num_heads, mlp_ratio; got {sorted(bad)}")
            aggregator.vit = dataclasses.replace(vit, **override)
        elif vit_override:
            raise Scal3RError("vit_override only applies to a DINOv2 patch embed, not 'conv'")

        camera = CameraHeadConfig(**_pick(cfg.get("cam_decoder_cfg", {}), CameraHeadConfig, {"dim_in"}))
        points = _dpt_from_release(cfg.get("xyz_decoder_cfg"), DPTHeadConfig(4, "inv_log", "expp1"))
        depth = _dpt_from_release(cfg.get("dpt_decoder_cfg"), DPTHeadConfig(2, "exp", "expp1"))
        out = cls(aggregator, camera, points, depth, gradient_checkpointing=bool(cfg.get("use_checkpoint", False)))
        out.validate()
        return out

    def validate(self) -> None:
        """Check the invariants the network relies on; raise `Scal3RError` naming the knob."""
        a = self.aggregator
        if a.embed_dim % a.num_heads:
            raise Scal3RError(f"embed_dim {a.embed_dim} is not divisible by num_heads {a.num_heads}")
        if (a.embed_dim // a.num_heads) % 4:
            raise Scal3RError("2D RoPE needs a head dimension divisible by 4")
        if a.depth - 1 not in a.intermediate_layers:
            raise Scal3RError(f"the last layer ({a.depth - 1}) must be an intermediate layer: the camera head reads it")
        if len(a.intermediate_layers) != 4:
            raise Scal3RError("the DPT heads read exactly 4 intermediate layers")
        for name, layers in (("memory_layers", a.memory_layers), ("intermediate_layers", a.intermediate_layers)):
            if any(not 0 <= i < a.depth for i in layers):
                raise Scal3RError(f"{name} {list(layers)} outside 0..{a.depth - 1}")
        if a.patch_embed != "conv" and a.vit_config().embed_dim != a.embed_dim:
            raise Scal3RError(f"the DINOv2 patch embed has dim {a.vit_config().embed_dim}, the aggregator {a.embed_dim}")
        if self.camera.num_iterations < 1:
            raise Scal3RError("camera head needs at least one refinement iteration")


# Release knobs that change the network in ways this implementation does not reproduce, with the
# release default that we do support.
_UNSUPPORTED_DEFAULTS = {
    "permutation_equivariant": False, "num_camera_tokens": 1, "qkv_bias": True, "proj_bias": True,
    "ffn_bias": True, "aa_order": ["frame", "global"], "aa_block_size": 1, "use_cam_emb": False,
    "use_cam_token": False, "num_global_tokens": 0, "frame_use_ttt": False, "num_block_tokens": 0,
    "use_chunkwise_checkpoint": False,
}
_IGNORED = {"use_reentrant", "cam_emb_layer", "cam_embed_cfg", "use_checkpoint"}


def _reject_unsupported(agg: Dict[str, Any]) -> None:
    for key, default in _UNSUPPORTED_DEFAULTS.items():
        if key in agg and agg[key] != default and not (key == "aa_order" and list(agg[key]) == default):
            raise Scal3RError(f"release option {key}={agg[key]!r} is not supported (only {default!r})")
    known = set(_UNSUPPORTED_DEFAULTS) | _IGNORED | {
        "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_register_tokens",
        "patch_embed", "qk_norm", "rope_freq", "init_values", "ttt_layer_idx", "intermediate_layer_idx",
        "ttt_cfg", "global_use_ttt", "block_fn",
    }
    unknown = set(agg) - known
    if unknown:
        raise Scal3RError(f"unknown agg_regator_cfg keys in the release config: {sorted(unknown)}")


_NESTED = {
    ("ModelConfig", "aggregator"): AggregatorConfig, ("ModelConfig", "camera"): CameraHeadConfig,
    ("ModelConfig", "points"): DPTHeadConfig, ("ModelConfig", "depth"): DPTHeadConfig,
    ("AggregatorConfig", "vit"): ViTConfig, ("AggregatorConfig", "memory"): MemoryConfig,
}


def _field_names(dc) -> set:
    return {f.name for f in dataclasses.fields(dc)}


def _pick(d: Optional[Mapping[str, Any]], dc, ignore: set) -> Dict[str, Any]:
    d = dict(d or {})
    names = _field_names(dc)
    unknown = set(d) - names - ignore
    if "pose_encoding_type" in d and d["pose_encoding_type"] != "absT_quaR_FoV":
        raise Scal3RError(f"pose_encoding_type {d['pose_encoding_type']!r} is not supported (only absT_quaR_FoV)")
    unknown -= {"pose_encoding_type"}
    if unknown:
        raise Scal3RError(f"unsupported head config keys in the release config: {sorted(unknown)}")
    return {k: v for k, v in d.items() if k in names}


def _dpt_from_release(d: Optional[Mapping[str, Any]], default: DPTHeadConfig) -> DPTHeadConfig:
    if d is None:
        return default
    d = dict(d)
    for key, ok in (("patch_size", None), ("pos_embed", True), ("feature_only", False), ("down_ratio", 1)):
        if key in d and ok is not None and d[key] != ok:
            raise Scal3RError(f"DPT head option {key}={d[key]!r} is not supported")
    kwargs = _pick(d, DPTHeadConfig, {"dim_in", "intermediate_layer_idx", "patch_size", "pos_embed",
                                      "feature_only", "down_ratio", "use_checkpoint"})
    if "out_channels" in kwargs:
        kwargs["out_channels"] = tuple(kwargs["out_channels"])
    return dataclasses.replace(default, **kwargs)
