"""How to train: TrainConfig, its learning-rate schedule, and the one place a train config is resolved.

A train config is TrainConfig's defaults, then the variant's ``train_defaults``, then the user's
values; ``vaezoo.train``, ``vaezoo train`` and the benchmarks all resolve it here.

>>> resolve_train_config(vaezoo.get_model_class("vae-mlp"), "example", epochs=5).epochs  # doctest: +SKIP
5
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from vaezoo.core.config import check_finite_floats, config_fields, config_from_dict
from vaezoo.core.distributed import check_device_name
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count
from vaezoo.data.splits import check_seed
from vaezoo.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in the run's config.json under "train"."""

    epochs: int = 20  # passes over the training split, per stage
    stage_epochs: tuple[int, ...] = ()  # per-stage epochs for multi-stage variants (e.g. vq-vae prior); () = epochs each
    batch_size: int = 128  # global batch (split across ranks under torchrun)
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0  # linear learning-rate warm-up from 0
    lr_schedule: str = "cosine"  # "cosine" (decay to min_lr_ratio * lr by the last step) | "constant"
    min_lr_ratio: float = 0.05
    grad_clip: float = 0.0  # max global gradient norm; 0 = no clipping
    # Skip an update whose gradient norm (before clipping) is above this or not finite, as VDVAE does (Child 2021,
    # sec. 3.3: rare huge gradients otherwise throw the weights off); its loss terms are left out of the epoch's
    # means and the count is reported as skipped_updates. 0 = off (it costs one host sync per step when on).
    grad_skip_threshold: float = 0.0
    ema_decay: float = 0.0  # EMA of weights for evaluation and export (e.g. 0.999); 0 = off
    early_stopping: int = 0  # stop after this many epochs without a better validation -ELBO (or stage loss); 0 = off
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    compile: bool | None = None  # torch.compile the training step; None: where it pays (compile_this_stage)
    bf16: bool = True  # bfloat16 autocast on GPU (ignored on CPU)
    eval_batch_size: int = 1000
    progress: bool = True  # show a progress bar (rank 0 only)
    log_every: int = 25  # steps between progress-bar refreshes (the only per-step host sync)

    def __post_init__(self) -> None:
        check_finite_floats(self)
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            check_count(getattr(self, name), name, error=ConfigError)
        check_seed(self.seed)
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in self.stage_epochs):
            raise ConfigError(f"stage_epochs={list(self.stage_epochs)} must hold positive integers, one per training "
                              "stage (a stage of 0 epochs would export untrained weights)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr={self.lr} must be a positive number")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"optimizer={self.optimizer!r} is unknown; use 'adam' or 'adamw'")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr_schedule={self.lr_schedule!r} is unknown; use 'cosine' or 'constant'")
        for name in ("weight_decay", "grad_clip", "grad_skip_threshold", "lr_warmup_steps", "early_stopping"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay={self.ema_decay} must be in [0, 1); 0 turns EMA off")
        check_device_name(self.device)
        if self.compile not in (None, True, False):
            raise ConfigError(f"compile={self.compile!r} must be true, false or null (null: where it was measured to pay)")


def compile_this_stage(config: TrainConfig, model_class: type[VAE], steps: int, device: torch.device, distributed: bool) -> bool:
    """Whether a stage of ``steps`` steps compiles its training step: ``config.compile`` when given; by default
    (None) only where benchmarks/compile_default.py measured torch.compile to pay for itself: in one CPU process,
    for a stage at least as long as the variant's ``compile_pays_after_steps`` (compiling costs seconds to
    minutes up front and saves a little per step, so a short run is faster eager). GPUs and torchrun runs
    have no measurement yet and stay eager unless asked."""
    if config.compile is not None:
        return config.compile
    pays_after = model_class.compile_pays_after_steps
    return device.type == "cpu" and not distributed and pays_after is not None and steps >= pays_after


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (Loshchilov and Hutter 2017)."""
    if config.lr_warmup_steps and step < config.lr_warmup_steps:
        return config.lr * (step + 1) / config.lr_warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step - config.lr_warmup_steps) / max(1, total_steps - config.lr_warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def resolve_train_config(model: VAE | type[VAE], source: str = "train()", /, **overrides: Any) -> TrainConfig:
    """TrainConfig's defaults, then the variant's ``train_defaults``, then ``overrides`` (the user's values win).

    ``model`` is a VAE or its class; ``source`` says where the overrides came from in an error message.
    Both are positional, so that every keyword is a TrainConfig field (a misspelt one is an error).

    >>> resolve_train_config(model, "training options", epochs=5, lr=2e-3)  # doctest: +SKIP
    """
    model_class = model if isinstance(model, type) else type(model)
    if "epochs" in overrides and overrides.get("stage_epochs"):
        raise ConfigError(f"both epochs={overrides['epochs']!r} and stage_epochs={list(overrides['stage_epochs'])} given "
                          f"in {source}: give one (stage_epochs sets each stage's epochs, epochs every stage's)")
    values = {**dataclasses.asdict(TrainConfig()), **model_class.train_defaults, **overrides}
    return config_from_dict(TrainConfig, values, source=source)


def split_overrides(overrides: dict[str, Any], model_config_class: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route ``--set`` keys to the model config or the train config; unknown keys name both lists."""
    model_fields, train_fields = config_fields(model_config_class), config_fields(TrainConfig)
    model_part, train_part = {}, {}
    for key, value in overrides.items():
        if key in model_fields:
            model_part[key] = value
        elif key in train_fields:
            train_part[key] = value
        else:
            raise ConfigError(
                f"unknown field {key!r} in --set" + did_you_mean(key, [*model_fields, *train_fields])
                + f"; model fields: {', '.join(model_fields)}; training fields: {', '.join(train_fields)}"
            )
    return model_part, train_part
