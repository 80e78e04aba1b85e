"""The trainer: long sequences → K synchronised chunks → VGGT losses → AdamW (design.md §4b).

One step:
    sequence = data.sample(rng(seed, step))        the same sequence on every rank
    K ~ U{1..max_chunks}; chunks = K consecutive overlapping chunks, each fed reference first
    outputs = forward_chunks(this rank's chunks)   memory gradient summed over all K chunks
    loss = Σ_chunks chunk_loss / K; backward; slow-weight gradients summed over ranks
    clip to 1.0; AdamW (memory units / the rest: two learning rates); warm-up + cosine

Every random choice of a step comes from a generator seeded by (seed, step), so a resumed run
draws exactly the samples the uninterrupted run would have drawn; the optimizer state and torch's
RNG state travel in the checkpoint too.

Outputs in the run folder: `checkpoint.pt` (model, optimizer, step, configs, RNG; written
atomically, loaded with `weights_only=True`), `model.safetensors` (weights + model configuration
in the metadata: `scal3r reconstruct --weights DIR/model.safetensors` needs no `--preset`),
`log.csv` (one row per step), `loss.png`, and TensorBoard events when `tensorboard` is installed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from scal3r.config import ModelConfig
from scal3r.errors import CheckpointError, InputError
from scal3r.files import atomic_write
from scal3r.progress import ProgressFn, report
from scal3r.chunks import chunk_ranges, reference_first_order
from scal3r.train.data import DataConfig, FolderDataset, SyntheticStream, chunk_targets
from scal3r.train.losses import LossConfig, chunk_loss

LOG_FIELDS = ("step", "loss", "camera", "cam_t", "cam_r", "cam_fov", "depth_conf", "depth_grad", "depth_reg",
              "points_conf", "points_grad", "points_reg", "lr_memory", "lr_rest", "grad_norm", "chunks", "frames",
              "seconds", "sample", "cam_spread", "match")


@dataclass
class TrainConfig:
    """Everything that determines a training run (with `data` and `loss`)."""

    preset: str = "compact"  # model preset (`scal3r.config.ModelConfig.preset`)
    steps: int = 2000
    # From scratch (no pretrained backbone here): both groups at 3e-4, the usual AdamW rate for
    # small transformers. Fine-tuning a pretrained model: the paper's 1e-4 memory / 1e-5 rest.
    lr_memory: float = 3e-4
    lr_rest: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
    clip_grad: float = 1.0
    seed: int = 0
    sync: bool = True  # memory gradients summed over the chunks of a step (GCS); False: ablation
    memory: bool = True  # False: the preset without memory units (ablation)
    activation_checkpointing: bool = True
    checkpoint_every: int = 25  # steps between checkpoints (each is a resume point)
    freeze: Tuple[str, ...] = ()  # parameter-name prefixes kept fixed, e.g. "agg_regator.patch_embed"
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @staticmethod
    def preset_for(name: str, **overrides) -> "TrainConfig":
        """`compact`: the shipped model's recipe. `tiny`: seconds per step, for tests."""
        if name == "tiny":
            base = TrainConfig(preset="tiny", steps=20, warmup_steps=2, checkpoint_every=5,
                               data=DataConfig(width=84, height=56, block_size=6, overlap=3, max_chunks=3))
        else:
            base = TrainConfig(preset=name)
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: Dict) -> "TrainConfig":
        d = dict(d)
        data = DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("data").items()})
        loss = LossConfig(**d.pop("loss"))
        d["freeze"] = tuple(d.get("freeze", ()))
        return TrainConfig(**d, data=data, loss=loss)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine to `min_lr_ratio` at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    t = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _is_memory(name: str) -> bool:
    from scal3r.model.checkpoint import MEMORY_MARKER

    return MEMORY_MARKER in name


def _decays(name: str, p: torch.nn.Parameter) -> bool:
    """Weight decay applies to weight matrices and kernels, not to 1-D gains/biases or tokens."""
    return p.ndim >= 2 and not name.rsplit(".", 1)[-1].endswith(("token", "tokens"))


class Trainer:
    """Builds model, data and optimizer from a `TrainConfig`; `run()` trains into `out`."""

    def __init__(self, cfg: TrainConfig, out, *, data_folder: Optional[str] = None, init: Optional[str] = None,
                 resume: bool = False, resume_steps: Optional[int] = None, device: str = "cpu", dtype: Optional[torch.dtype] = None,
                 progress: Optional[ProgressFn] = None, group=None):
        from scal3r.model.scal3r import Scal3R

        self.out = Path(out)
        self.device = torch.device(device)
        self.dtype = dtype
        self.progress = progress
        self.group = group
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        self.rank, self.world = (dist.get_rank(group), dist.get_world_size(group)) if self.distributed else (0, 1)
        ckpt_path = self.out / "checkpoint.pt"
        state = None
        if resume:
            if not ckpt_path.is_file():
                raise InputError(f"--resume: no checkpoint in {self.out} (expected {ckpt_path})")
            state = _load_checkpoint(ckpt_path)
            stored = TrainConfig.from_dict(json.loads(state["train_config"]))
            if (stored.preset, stored.memory) != (cfg.preset, cfg.memory):
                raise CheckpointError(f"--resume: {ckpt_path} was trained with preset {stored.preset!r}"
                                      f"{'' if stored.memory else ' without memory'}, not {cfg.preset!r}"
                                      f"{'' if cfg.memory else ' without memory'}")
            # The run continues with its own recipe; only the step budget may change.
            cfg = stored if resume_steps is None else dataclasses.replace(stored, steps=resume_steps)
        self.cfg = cfg
        self.model_config = ModelConfig.preset(cfg.preset)
        self.model_config.gradient_checkpointing = cfg.activation_checkpointing
        if not cfg.memory:
            self.model_config.aggregator.memory_layers = ()
        torch.manual_seed(cfg.seed)  # the initial weights are part of the run's recipe
        self.model = Scal3R(self.model_config).to(self.device)
        if init and state is None:
            for note in self.model.load_checkpoint(init, drop_memory=not cfg.memory):
                report(progress, f"note: {note}", 0, 0)
        for name, p in self.model.named_parameters():
            if any(name.startswith(prefix) for prefix in cfg.freeze):
                p.requires_grad_(False)
        groups = []
        for is_memory, lr in ((True, cfg.lr_memory), (False, cfg.lr_rest)):
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and _is_memory(n) == is_memory]
            # Weight decay shrinks matrices only: on gains, biases, norms and tokens it would pull
            # LayerScale and the learned tokens to zero (the usual ViT exclusion).
            decayed = [p for n, p in named if _decays(n, p)]
            kept = [p for n, p in named if not _decays(n, p)]
            groups += [{"params": decayed, "lr": lr, "base_lr": lr},
                       {"params": kept, "lr": lr, "base_lr": lr, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise InputError("every parameter is frozen; nothing to train")
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        if cfg.data.max_chunks < self.world:
            raise InputError(f"{self.world} ranks need at least as many chunks per step; max_chunks is "
                             f"{cfg.data.max_chunks}")
        self.data = FolderDataset(data_folder, cfg.data) if data_folder else SyntheticStream(cfg.data)
        self.step = 0
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            torch.set_rng_state(state["torch_rng"])
        self._tb = None
        self.saved_step: Optional[int] = self.step if state is not None else None

    # -- one step ---------------------------------------------------------------------------------
    def _sample(self, step: int):
        """The sequence, chunk count and per-chunk frame lists (fed order) of `step`."""
        d = self.cfg.data
        rng = np.random.default_rng([self.cfg.seed, step])
        # Every rank holds at least one chunk (the same draw on every rank).
        n_chunks = max(int(rng.integers(1, d.max_chunks + 1)), self.world)
        seq = self.data.sample(rng, d.frames_for(n_chunks))
        if len(seq) < d.frames_for(n_chunks):  # a short sequence on disk: as many chunks as fit
            n_chunks = max(1, (len(seq) - d.overlap) // (d.block_size - d.overlap))
            if n_chunks < self.world:  # the same on every rank, so all stop together
                raise InputError(f"{seq.name}: {len(seq)} frames make {n_chunks} chunks, fewer than the "
                                 f"{self.world} ranks")
        ranges = chunk_ranges(d.frames_for(n_chunks), d.block_size, d.overlap)
        fed = [reference_first_order(s, e) for s, e in ranges]
        return seq, fed

    def _local_chunks(self, n: int) -> range:
        from scal3r.engine.runner import rank_chunks

        return rank_chunks(n, self.rank, self.world)

    def forward_backward(self):
        """Loss and slow-weight gradients (summed over ranks) of the current step's sample.

        Returns (summed loss terms of this rank's chunks, number of chunks, the sequence)."""
        from scal3r.engine.differentiable import forward_chunks
        from scal3r.engine.runner import _autocast

        cfg = self.cfg
        seq, fed = self._sample(self.step)
        mine = self._local_chunks(len(fed))
        targets = [chunk_targets(seq, fed[b], cfg.data.max_depth) for b in mine]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms_sum: Dict[str, torch.Tensor] = {}
        if targets:
            outs = forward_chunks(self.model, [t["images"].to(self.device) for t in targets], sync=cfg.sync,
                                  activation_checkpointing=cfg.activation_checkpointing, dtype=self.dtype,
                                  group=self.group)
            agg = self.model.agg_regator
            loss = 0.0
            for out, tgt in zip(outs, targets):
                if agg.correlation is not None and cfg.loss.match_weight > 0:
                    # Recomputed rather than kept from the forward pass: a few conv layers on S
                    # frames, and the engine stays a pure forward.
                    with _autocast(self.device, self.dtype):
                        out = dict(out, cost_volumes=agg.cost_volumes(tgt["images"].to(self.device)))
                terms = chunk_loss(out, {k: v.to(self.device) for k, v in tgt.items()}, cfg.loss)
                loss = loss + terms["total"]
                for k, v in terms.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + v.detach().float()
            (loss / len(fed)).backward()
        if self.distributed:
            self._all_reduce_grads(self._params())
        return terms_sum, len(fed), seq

    def _params(self) -> List[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def train_step(self) -> Dict[str, float]:
        """One optimisation step; returns the logged figures."""
        t0 = time.perf_counter()
        cfg = self.cfg
        factor = lr_factor(self.step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        terms_sum, n_chunks, seq = self.forward_backward()
        params = self._params()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad))
        if not math.isfinite(grad_norm):
            raise InputError(f"step {self.step}: non-finite gradient norm (diverged); lower the learning rate")
        self.optimizer.step()
        figures = self._reduce_terms(terms_sum, n_chunks)
        figures.update(step=self.step, lr_memory=cfg.lr_memory * factor, lr_rest=cfg.lr_rest * factor,
                       grad_norm=grad_norm, chunks=n_chunks, frames=len(seq),
                       seconds=time.perf_counter() - t0, sample=seq.name)
        self.step += 1
        return figures

    def _all_reduce_grads(self, params: List[torch.nn.Parameter]) -> None:
        """Σ over ranks of every slow-weight gradient (the loss is a sum over all ranks' chunks)."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        i = 0
        for p in params:
            p.grad.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()

    def _reduce_terms(self, terms: Dict[str, torch.Tensor], n: int) -> Dict[str, float]:
        names = ["total", "camera", "cam_t", "cam_r", "cam_fov", "depth_conf", "depth_grad", "depth_reg",
                 "points_conf", "points_grad", "points_reg", "cam_spread", "match"]
        vec = torch.stack([torch.as_tensor(terms.get(k, 0.0), dtype=torch.float32).reshape(()).cpu() for k in names])
        if self.distributed:
            dist.all_reduce(vec, group=self.group)
        vec = vec / n
        out = dict(zip(names, vec.tolist()))
        out["loss"] = out.pop("total")
        return out

    # -- the run ----------------------------------------------------------------------------------
    def run(self, stop_after: Optional[int] = None) -> Path:
        """Train until `cfg.steps` (or `stop_after` more steps, a time slot: the schedule still
        spans `cfg.steps`), checkpointing every `checkpoint_every` steps and when stopping."""
        self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "log.csv"
        if self.rank == 0:
            self._trim_log(log_path)
            self._open_tensorboard()
        start = self.step
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, start + stop_after)
        t_start = time.perf_counter()
        while self.step < end:
            figures = self.train_step()
            if self.rank == 0:
                self._append_log(log_path, figures)
                if self._tb is not None:
                    for k in ("loss", "camera", "depth_reg", "points_reg", "grad_norm", "lr_rest"):
                        self._tb.add_scalar(k, figures[k], figures["step"])
            rate = (self.step - start) / max(time.perf_counter() - t_start, 1e-9)
            report(self.progress, f"train · loss {figures['loss']:.3f}, {rate:.3f} steps/s, "
                                  f"{figures['frames'] / figures['seconds']:.1f} frames/s", self.step, self.cfg.steps)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == end:
                self.save()
        if self.step == start:
            self.save()
        return self.out

    def save(self) -> None:
        """checkpoint.pt + model.safetensors + loss.png, each written atomically (rank 0 only)."""
        if self.rank != 0:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "train_config": json.dumps(self.cfg.to_dict()),
            "model_config": json.dumps(self.model_config.to_dict()),
        }
        atomic_write(self.out / "checkpoint.pt", lambda tmp: torch.save(state, tmp))
        self.saved_step = self.step
        save_model(self.model, self.out / "model.safetensors", self.cfg, self.step)
        try:
            plot_loss_curve(self.out / "log.csv", self.out / "loss.png")
        except ImportError:
            pass

    def _trim_log(self, path: Path) -> None:
        """On resume, drop log rows past the checkpoint's step (they will be redone)."""
        if not path.is_file():
            return
        rows = read_log(path)
        kept = [r for r in rows if int(float(r["step"])) < self.step]
        if len(kept) != len(rows):
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
                w.writeheader()
                w.writerows(kept)

    def _append_log(self, path: Path, figures: Dict) -> None:
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in figures.items()})

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: CSV and PNG only
            return
        self._tb = SummaryWriter(str(self.out / "tensorboard"))


def _load_checkpoint(path: Path) -> Dict:
    from scal3r.model.checkpoint import first_sentence

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read training checkpoint {path}: {first_sentence(e)}") from e


def save_model(model, path: Path, cfg: Optional[TrainConfig] = None, step: Optional[int] = None,
               inference: Optional[Dict] = None) -> None:
    """Weights as .safetensors with the model configuration (and how it was trained) in the metadata."""
    from scal3r.model.checkpoint import save_state_dict

    meta = {"scal3r.model_config": json.dumps(model.config.to_dict())}
    if cfg is not None:
        d = cfg.data
        meta["scal3r.train_config"] = json.dumps(cfg.to_dict())
        # What the model was trained on is what it should be run with by default.
        # Poses refined photometrically: a camera head trained here from scratch lags its depth head
        # by far (docs/training.md), and direct alignment through that depth recovers the
        # relative poses (scal3r.geometry.photometric).
        inference = inference or {"resolution": d.width, "block_size": d.block_size, "overlap": d.overlap,
                                  "pose_refinement": "photometric"}
    if inference is not None:
        meta["scal3r.inference"] = json.dumps(inference)
    if step is not None:
        meta["scal3r.step"] = str(step)
    save_state_dict(model.state_dict(), path, metadata=meta)


def read_train_config(path) -> TrainConfig:
    """The `TrainConfig` stored in weights written by `scal3r train` (`save_model`)."""
    from scal3r.model.checkpoint import read_metadata

    meta = read_metadata(path)
    if "scal3r.train_config" not in meta:
        raise InputError(f"{path}: no training configuration in its metadata (not made by `scal3r train`)")
    return TrainConfig.from_dict(json.loads(meta["scal3r.train_config"]))


def read_log(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_loss_curve(log_path: Path, png_path: Path) -> None:
    """Loss (and its camera / depth / points parts) against step, smoothed, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return
    steps = np.array([float(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label in (("loss", "total"), ("camera", "camera"), ("depth_reg", "depth L1 (normalised)"),
                       ("points_reg", "points L2 (normalised)")):
        y = np.array([float(r[key]) for r in rows])
        k = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=label)
    ax.set_xlabel("step")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(png_path, fig.savefig)
    finally:
        plt.close(fig)
