"""One trainer for every variant: in-memory batches, resumable, crash-safe, data-parallel.

    >>> import vaezoo
    >>> from vaezoo.data import load_data
    >>> model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    >>> result = vaezoo.train(model, load_data("digits"), epochs=2, progress=False)  # doctest: +SKIP

or from the shell: ``vaezoo train vae-mlp --data digits --epochs 30 --out runs/vae``.

Design (what makes it fast and safe):
- the dataset lives as tensors on the device; a batch is an index slice of a seeded permutation;
- fused (or foreach) Adam/AdamW; learning-rate warm-up then cosine decay computed from the step;
- loss terms are summed on the device and read back only when the progress bar updates;
- each epoch ends with one checkpoint file (weights, optimizer, RNG, counters in its metadata)
  written atomically, so ``resume=True`` after a crash or SIGKILL reproduces the uninterrupted run;
- a non-finite loss stops the run and keeps the last good checkpoint;
- under torchrun every rank takes its slice of each global batch and DDP averages the gradients.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaezoo.core.config import check_finite_floats, config_fields, config_from_dict, config_to_dict
from vaezoo.core.contract import StepOutput, TrainingStage
from vaezoo.core.distributed import DistributedContext, all_reduce_mean, barrier, init_distributed, resolve_device
from vaezoo.core.model import VAE
from vaezoo.core.validation import value_problem
from vaezoo.errors import CheckpointError, ConfigError, DataError, StorageError, TrainingDivergedError, did_you_mean
from vaezoo.eval.evaluate import evaluate
from vaezoo.eval.figures import save_sample_grid
from vaezoo.io.atomic import atomic_write_json, atomic_write_text, describe_os_error, remove_stale_temp_files
from vaezoo.io.cards import write_model_card
from vaezoo.io.figures import save_loss_curve
from vaezoo.io.model_dir import CONFIG_NAME, WEIGHTS_NAME, model_config_json
from vaezoo.io.tensors import (
    load_state_dict_strict,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_tensors,
    rng_from_tensors,
    rng_to_tensors,
    save_tensors,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoints/last.safetensors"
BEST_NAME = "checkpoints/best.safetensors"
METRICS_NAME = "metrics.jsonl"



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
    ema_decay: float = 0.0  # EMA of weights for evaluation and export (e.g. 0.999); 0 = off
    early_stopping: int = 0  # stop after this many epochs without a better validation -ELBO; 0 = off
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    compile: bool = False  # torch.compile the training step
    bf16: bool = True  # bfloat16 autocast on GPU (ignored on CPU)
    eval_batch_size: int = 1000
    progress: bool = True  # show a progress bar (rank 0 only)
    log_every: int = 25  # steps between progress-bar refreshes (the only per-step host sync)

    def __post_init__(self) -> None:
        check_finite_floats(self)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "log_every": self.log_every}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if any(not isinstance(e, int) or e < 0 for e in self.stage_epochs):
            raise ConfigError(f"stage_epochs={self.stage_epochs!r} must hold non-negative integers")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr={self.lr} must be a positive number")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"optimizer={self.optimizer!r} is unknown; use 'adam' or 'adamw'")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr_schedule={self.lr_schedule!r} is unknown; use 'cosine' or 'constant'")
        for name in ("weight_decay", "grad_clip", "lr_warmup_steps", "early_stopping"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay={self.ema_decay} must be in [0, 1); 0 turns EMA off")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is unknown; use auto, cpu, cuda or cuda:N")


@dataclass
class TrainResult:
    """What a finished run leaves: its folder, per-epoch metrics, and the final validation metrics."""

    out_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    val_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False




def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (Loshchilov and Hutter 2017)."""
    if config.lr_warmup_steps and step < config.lr_warmup_steps:
        return config.lr * (step + 1) / config.lr_warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step - config.lr_warmup_steps) / max(1, total_steps - config.lr_warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def make_optimizer(parameters: list[nn.Parameter], config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam/AdamW with the fused kernel where this torch has one for the device, else foreach."""
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    try:
        return cls(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return cls(parameters, lr=config.lr, weight_decay=config.weight_decay, foreach=True)


class StageStep(nn.Module):
    """Wraps one stage's objective as a module, so DDP and torch.compile see an ordinary forward."""

    def __init__(self, model: VAE, stage: TrainingStage) -> None:
        super().__init__()
        self.model = model
        self.stage_loss = stage.loss

    def forward(self, x: Tensor, y: Tensor | None) -> StepOutput:
        return self.stage_loss(x, y)


class WeightEMA:
    """Exponential moving average of the parameters (Polyak averaging), kept beside the model.

    Only parameters are averaged: buffers (a VQ codebook that is itself an EMA, running statistics)
    are taken from the live model as they are.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = dict(model.named_parameters())
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [current[n].detach() for n in names], 1 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Temporarily swap the averaged weights into ``model``."""
        backup = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict({**backup, **self.shadow})
        try:
            yield
        finally:
            model.load_state_dict(backup)


class Trainer:
    """Trains any VAE on in-memory splits. See the module docstring for the design.

    >>> trainer = Trainer(model, splits, TrainConfig(epochs=5), out_dir="runs/x")  # doctest: +SKIP
    >>> result = trainer.fit()  # doctest: +SKIP
    """

    def __init__(self, model: VAE, data: Any, config: TrainConfig | None = None, out_dir: str | Path | None = None,
                 resume: bool = False, data_info: dict[str, Any] | None = None) -> None:
        self.model = model
        self.data = data
        self.config = config or TrainConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self.data_info = data_info or {}
        self.context = DistributedContext()
        self.device = torch.device("cpu")
        self.data_generator = torch.Generator()
        self.history: list[dict[str, Any]] = []
        self.ema: WeightEMA | None = None
        self._last_good: tuple[str | None, dict[str, Tensor], dict[str, Tensor] | None] | None = None  # see _snapshot
        self._check_data_fits_model()

    # --- set-up --------------------------------------------------------------------------------
    def _check_data_fits_model(self) -> None:
        shape = tuple(self.data.train.x.shape[1:])
        if shape != tuple(self.model.config.input_shape):
            raise ConfigError(
                f"the data has examples of shape {shape} but the model takes {tuple(self.model.config.input_shape)}; "
                f"create the model with input_shape={shape}"
            )
        if self.model.is_conditional and self.data.train.y is None:
            raise ConfigError(f"{type(self.model).__name__} is conditional but the data has no labels")
        for split in ("train", "val"):
            self._check_split_values(split, getattr(self.data, split))

    def _check_split_values(self, split: str, part: Any) -> None:
        """NaN/Inf, values a Bernoulli likelihood cannot score, and labels the model does not know.

        Checked once here, so that the training loop needs no per-step host sync for it.
        """
        problem = value_problem(part.x, self.model.config.likelihood)
        if problem:
            raise DataError(f"the {split} split {problem}")
        if self.model.is_conditional and part.y is not None and part.y.numel():
            classes = self.model.config.num_classes
            y_low, y_high = int(part.y.min()), int(part.y.max())
            if y_low < 0 or y_high >= classes:
                raise ConfigError(
                    f"the {split} split has labels {y_low}..{y_high} but the model has num_classes={classes} "
                    f"(labels 0..{classes - 1}); set num_classes={max(y_high + 1, classes)} or relabel the data"
                )

    def _prepare_run_dir(self) -> dict[str, Any] | None:
        """Check the run folder; return the checkpoint's state when resuming from one.

        Resuming a run that was killed before its first checkpoint starts it again from the
        beginning, with the same settings; a new run never appends to a killed run's metrics.
        """
        if self.out_dir is None:
            if self.resume:
                raise ConfigError("resume=True needs the run folder (out_dir) to resume from")
            return None
        checkpoint = self.out_dir / CHECKPOINT_NAME
        if self.context.is_main:
            for folder in (self.out_dir, checkpoint.parent):
                for stale in remove_stale_temp_files(folder):
                    logger.info("removed %s, left by a write that was interrupted", stale)
        if self.resume and checkpoint.is_file():
            return self._read_checkpoint(checkpoint)
        if self.resume and not (self.out_dir / CONFIG_NAME).is_file():
            raise CheckpointError(f"nothing to resume: {checkpoint} does not exist; start the run without --resume")
        if checkpoint.exists() or (self.out_dir / WEIGHTS_NAME).exists():
            raise ConfigError(
                f"{self.out_dir} already holds a run; pass --resume to continue it, or choose another --out"
            )
        if self.resume:
            logger.info("%s has no checkpoint yet: starting the run from the beginning", self.out_dir)
        if self.context.is_main:
            run_config = {**model_config_json(self.model.architecture_name(), config_to_dict(self.model.config)), "train": config_to_dict(self.config), "data": self.data_info}
            atomic_write_json(self.out_dir / CONFIG_NAME, run_config)
            if (self.out_dir / METRICS_NAME).exists():  # lines of a run killed before its first checkpoint
                atomic_write_text(self.out_dir / METRICS_NAME, "")
        return None

    @staticmethod
    def _read_checkpoint(path: Path) -> dict[str, Any]:
        tensors, metadata = read_tensors(path)
        try:
            state = json.loads(metadata["state"])
        except (KeyError, json.JSONDecodeError):
            raise CheckpointError(
                f"{path} has no readable training state in its metadata; it was not written by vaezoo's trainer"
            ) from None
        return {"tensors": tensors, "state": state}

    # --- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train every stage, then write the run folder's final files; see the module docstring.

        A non-finite loss raises TrainingDivergedError after resetting the model to its last good
        weights (and, with a run folder, saving them as model.safetensors); a failed write raises
        StorageError, leaving the last complete checkpoint to resume from.
        """
        try:
            return self._fit()
        except TrainingDivergedError as error:
            raise TrainingDivergedError(
                f"{error}; {self._keep_last_good()}; lower the learning rate (--lr) or clip gradients (--set grad_clip=1.0)"
            ) from None
        except StorageError as error:
            resumable = self.out_dir is not None and (self.out_dir / CHECKPOINT_NAME).is_file()
            then = "continue the run with --resume" if resumable else "start the run again"
            raise StorageError(f"{error}; once that is fixed, {then}") from None

    def _fit(self) -> TrainResult:
        config = self.config
        self.device = resolve_device(config.device)
        self.context = init_distributed(self.device.type)
        if self.context.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
            torch.cuda.set_device(self.device)
        resumed = self._prepare_run_dir()
        barrier(self.context)

        # Every rank shuffles with the same generator (same global batches); noise differs per rank.
        torch.manual_seed(config.seed * 1000 + self.context.rank)
        self.data_generator.manual_seed(config.seed)
        self.model.to(self.device)
        train_x = self.data.train.x.to(self.device)
        train_y = None if self.data.train.y is None else self.data.train.y.to(self.device)

        stages = self.model.stages()
        start_stage, start_epoch, best_val, bad_epochs = 0, 0, math.inf, 0
        if resumed is not None:
            start_stage, start_epoch, best_val, bad_epochs = self._restore(resumed)
        self._snapshot("the checkpoint it resumed from" if resumed is not None else None)
        stopped_early = False
        for stage_index in range(start_stage, len(stages)):
            stage = stages[stage_index]
            epochs = self._epochs_for(stage_index, len(stages))
            first_epoch = start_epoch if stage_index == start_stage else 0
            if stage_index != start_stage:
                best_val, bad_epochs = math.inf, 0
            stopped_early = self._fit_stage(
                stage_index, stage, epochs, first_epoch, train_x, train_y, resumed if stage_index == start_stage else None,
                best_val, bad_epochs,
            )
            resumed = None
        return self._finish(stopped_early)

    def _epochs_for(self, stage_index: int, num_stages: int) -> int:
        if self.config.stage_epochs:
            if len(self.config.stage_epochs) != num_stages:
                raise ConfigError(
                    f"stage_epochs={self.config.stage_epochs} names {len(self.config.stage_epochs)} stages but "
                    f"{type(self.model).__name__} trains in {num_stages}: {[s.name for s in self.model.stages()]}"
                )
            return self.config.stage_epochs[stage_index]
        return self.config.epochs

    def _fit_stage(self, stage_index: int, stage: TrainingStage, epochs: int, first_epoch: int, train_x: Tensor,
                   train_y: Tensor | None, resumed: dict[str, Any] | None, best_val: float, bad_epochs: int) -> bool:
        config, context = self.config, self.context
        parameters = list(stage.parameters())
        trainable = {id(p) for p in parameters}
        saved_flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        optimizer = make_optimizer(parameters, config, self.device)
        if resumed is not None and resumed["state"].get("optimizer"):
            optimizer_from_tensors(optimizer, resumed["tensors"], resumed["state"]["optimizer"], prefix="optim")
        if config.ema_decay and self.ema is None:
            self.ema = WeightEMA(self.model, config.ema_decay)

        step_module: nn.Module = StageStep(self.model, stage)
        if context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            step_module = DistributedDataParallel(
                step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if config.compile:
            step_module = torch.compile(step_module)

        n = train_x.shape[0]
        steps_per_epoch = max(1, n // config.batch_size)  # full global batches only: every step sees B examples
        total_steps = epochs * steps_per_epoch
        local_batch = max(1, config.batch_size // context.world_size)
        try:
            for epoch in range(first_epoch, epochs):
                epoch_start = time.perf_counter()
                train_metrics = self._train_epoch(
                    step_module, optimizer, stage, stage_index, epoch, epochs, steps_per_epoch, total_steps,
                    local_batch, train_x, train_y,
                )
                train_time = time.perf_counter() - epoch_start
                val_metrics = self._validate(stage)
                self._check_epoch_end(stage, epoch, val_metrics)
                record = {
                    "stage": stage.name, "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                    "lr": lr_at((epoch + 1) * steps_per_epoch - 1, total_steps, config),
                    "train": train_metrics, "val": val_metrics,
                    "samples_per_s": steps_per_epoch * config.batch_size / train_time,  # training only
                    "train_time_s": train_time,
                    "wall_time_s": time.perf_counter() - epoch_start,  # with validation
                }
                monitored = val_metrics.get("neg_elbo", val_metrics.get("loss", math.inf))
                improved = monitored < best_val
                best_val, bad_epochs = (monitored, 0) if improved else (best_val, bad_epochs + 1)
                self.history.append(record)
                if context.is_main and self.out_dir is not None:
                    self._append_metrics(record)
                    if improved and config.early_stopping:
                        self._save_weights(self.out_dir / BEST_NAME)
                    self._save_checkpoint(optimizer, stage_index, epoch + 1, best_val, bad_epochs)
                self._snapshot(f"epoch {epoch + 1}" + (f" of stage {stage.name!r}" if len(self.model.stages()) > 1 else ""))
                barrier(context)
                if config.early_stopping and bad_epochs >= config.early_stopping:
                    logger.info("early stopping in stage %s after epoch %d", stage.name, epoch + 1)
                    return True
        finally:
            for p, flag in saved_flags:
                p.requires_grad_(flag)
        return False

    def _train_epoch(self, step_module: nn.Module, optimizer: torch.optim.Optimizer, stage: TrainingStage,
                     stage_index: int, epoch: int, epochs: int, steps_per_epoch: int, total_steps: int,
                     local_batch: int, train_x: Tensor, train_y: Tensor | None) -> dict[str, float]:
        self.model.train()
        order = torch.randperm(train_x.shape[0], generator=self.data_generator).to(self.device)
        bar = self._progress_bar(stage, epoch, epochs, steps_per_epoch)
        try:
            return self._train_steps(step_module, optimizer, stage, epoch, steps_per_epoch, total_steps, local_batch,
                                     train_x, train_y, order, bar)
        finally:
            if bar is not None:
                bar.close()  # also on an error, so that the CLI's one-line message starts on a clean line

    def _train_steps(self, step_module: nn.Module, optimizer: torch.optim.Optimizer, stage: TrainingStage, epoch: int,
                     steps_per_epoch: int, total_steps: int, local_batch: int, train_x: Tensor, train_y: Tensor | None,
                     order: Tensor, bar: Any) -> dict[str, float]:
        config, context = self.config, self.context
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16 and self.device.type == "cuda")
        sums: Tensor | None = None
        names: list[str] = []
        tick, seen_since_tick = time.perf_counter(), 0
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            begin = step * config.batch_size + context.rank * local_batch
            index = order[begin : begin + local_batch]
            xb = train_x[index]
            yb = None if train_y is None else train_y[index]
            lr = lr_at(global_step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            self.model.train_step = global_step
            with autocast:
                out = step_module(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
            optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            scalars = out.scalars()
            if sums is None:
                names = list(scalars)
                sums = torch.zeros(len(names), device=self.device)
            sums += torch.stack([scalars[name].detach().float() for name in names])
            seen_since_tick += local_batch * context.world_size
            if (step + 1) % config.log_every == 0 or step + 1 == steps_per_epoch:
                means = sums / (step + 1)  # the one host sync, at the display's pace
                values = means.tolist()
                self._check_finite(dict(zip(names, values)), stage, epoch, step)
                now = time.perf_counter()
                if bar is not None:
                    bar.set_postfix({**{k: f"{v:.2f}" for k, v in zip(names, values)},
                                     "samples/s": f"{seen_since_tick / max(now - tick, 1e-9):.0f}"}, refresh=False)
                    bar.update((step + 1) - bar.n)
                tick, seen_since_tick = now, 0
        means = all_reduce_mean(sums / steps_per_epoch, context)
        return dict(zip(names, means.tolist()))

    def _progress_bar(self, stage: TrainingStage, epoch: int, epochs: int, steps: int):
        if not (self.config.progress and self.context.is_main):
            return None
        from tqdm.auto import tqdm

        label = f"{stage.name} " if len(self.model.stages()) > 1 else ""
        return tqdm(total=steps, desc=f"{label}epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)

    def _check_finite(self, values: dict[str, float], stage: TrainingStage, epoch: int, step: int) -> None:
        if all(math.isfinite(v) for v in values.values()):
            return
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        raise TrainingDivergedError(f"training diverged in stage {stage.name!r} at epoch {epoch + 1}, step {step + 1}: {bad}")

    def _check_epoch_end(self, stage: TrainingStage, epoch: int, val_metrics: dict[str, float]) -> None:
        """The last optimizer step of an epoch can still break the weights after its loss was checked."""
        where = f"training diverged in stage {stage.name!r} after epoch {epoch + 1}"
        bad = ", ".join(f"{k}={v}" for k, v in val_metrics.items() if not math.isfinite(v))
        if bad:
            raise TrainingDivergedError(f"{where}: validation {bad}")
        floats = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if floats and not bool(torch.stack([torch.isfinite(t).all() for t in floats]).all()):
            raise TrainingDivergedError(f"{where}: the weights hold NaN or Inf")

    def _snapshot(self, label: str | None) -> None:
        """Remember the current weights on the CPU as the last good ones (``label`` None: the initial weights)."""
        cpu = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        ema = None if self.ema is None else {k: v.detach().to("cpu", copy=True) for k, v in self.ema.shadow.items()}
        self._last_good = (label, cpu, ema)

    def _keep_last_good(self) -> str:
        """Put the last good weights back into the model (and the run folder); say where they are."""
        label, weights, ema = self._last_good
        self.model.load_state_dict(weights)
        if ema is not None:  # what _finish would have exported at that point
            self.model.load_state_dict({**self.model.state_dict(), **ema})
        self.model.eval()
        if label is None:
            return "no epoch finished, so the model was reset to its initial weights"
        kept = f"the model was reset to its last good weights, from {label}"
        if self.out_dir is not None and self.context.is_main:
            try:
                save_tensors(self.out_dir / WEIGHTS_NAME, self.model.state_dict(), metadata={"format": "pt"})
                kept += f", saved to {self.out_dir / WEIGHTS_NAME}"
            except StorageError as error:
                kept += f" (not saved: {error})"
        if self.out_dir is not None and (self.out_dir / CHECKPOINT_NAME).exists():
            kept += f"; the last good checkpoint is kept in {self.out_dir / CHECKPOINT_NAME}"
        return kept

    @torch.no_grad()
    def _validate(self, stage: TrainingStage) -> dict[str, float]:
        val = self.data.val
        if val.x.shape[0] == 0:
            return {}
        with self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext():
            if stage.loss == self.model.forward:
                return evaluate(self.model, val.x, val.y, batch_size=self.config.eval_batch_size)
            self.model.eval()
            totals: dict[str, float] = {}
            for begin in range(0, val.x.shape[0], self.config.eval_batch_size):
                xb = val.x[begin : begin + self.config.eval_batch_size].to(self.device)
                yb = None if val.y is None else val.y[begin : begin + self.config.eval_batch_size].to(self.device)
                for name, value in stage.loss(xb, yb).scalars().items():
                    totals[name] = totals.get(name, 0.0) + float(value) * xb.shape[0]
            return {name: value / val.x.shape[0] for name, value in totals.items()}

    # --- files ---------------------------------------------------------------------------------
    def _append_metrics(self, record: dict[str, Any]) -> None:
        """One JSON line; a line torn by a kill is dropped on resume (see _truncate_metrics)."""
        assert self.out_dir is not None
        path = self.out_dir / METRICS_NAME
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StorageError(f"cannot write {path}: {describe_os_error(error)}") from None

    def _save_weights(self, path: Path) -> None:
        with self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext():
            save_tensors(path, self.model.state_dict(), metadata={"format": "pt"})

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer, stage_index: int, epochs_done: int,
                         best_val: float, bad_epochs: int) -> None:
        """One file: weights, optimizer, RNG and EMA tensors; counters as JSON in its metadata."""
        assert self.out_dir is not None
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_structure = optimizer_to_tensors(optimizer, prefix="optim")
        tensors.update(optim_tensors)
        tensors.update(rng_to_tensors(self.data_generator))
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        state = {
            "stage_index": stage_index, "epochs_done": epochs_done, "best_val": best_val if math.isfinite(best_val) else None,
            "bad_epochs": bad_epochs, "optimizer": optim_structure, "world_size": self.context.world_size,
        }
        save_tensors(self.out_dir / CHECKPOINT_NAME, {k: v.cpu() for k, v in tensors.items()},
                     metadata={"state": json.dumps(state), "format": "pt"})
        atomic_write_json(self.out_dir / "checkpoints" / "last.json", {k: v for k, v in state.items() if k != "optimizer"})

    def _restore(self, resumed: dict[str, Any]) -> tuple[int, int, float, int]:
        tensors, state = resumed["tensors"], resumed["state"]
        model_tensors = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        load_state_dict_strict(self.model, model_tensors, source=str(self.out_dir / CHECKPOINT_NAME))
        self.model.to(self.device)
        rng_from_tensors(tensors, self.data_generator)
        ema_tensors = {k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")}
        if ema_tensors:
            self.ema = WeightEMA(self.model, self.config.ema_decay)
            self.ema.shadow = {k: v.to(self.device) for k, v in ema_tensors.items()}
        if self.context.is_main and self.out_dir is not None:
            self._truncate_metrics(state["stage_index"], state["epochs_done"])
            # A kill between the checkpoint and its summary leaves last.json one epoch behind.
            atomic_write_json(self.out_dir / "checkpoints" / "last.json", {k: v for k, v in state.items() if k != "optimizer"})
        self.history = self._read_metrics()
        best = state["best_val"] if state["best_val"] is not None else math.inf
        stage_index, epochs_done = state["stage_index"], state["epochs_done"]
        if epochs_done >= self._epochs_for(stage_index, len(self.model.stages())):
            stage_index, epochs_done, best, resumed["state"]["optimizer"] = stage_index + 1, 0, math.inf, None
        logger.info("resuming from stage %d, epoch %d", stage_index, epochs_done)
        return stage_index, epochs_done, best, state["bad_epochs"]

    def _write_card(self, val_metrics: dict[str, float]) -> None:
        """A model card for the run folder, so `vaezoo push` publishes it with its validation figures."""
        assert self.out_dir is not None
        name = self.model.model_name
        metrics = {k: v for k, v in val_metrics.items() if k != "samples_per_s"}
        write_model_card(self.out_dir, name=name, dataset=str(self.data_info.get("data", "custom data")),
                         metrics=metrics, split="validation",
                         command=_run_command(name, self.data_info, self.out_dir, self.config))

    def _read_metrics(self) -> list[dict[str, Any]]:
        path = self.out_dir / METRICS_NAME if self.out_dir is not None else None
        if path is None or not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill: the checkpoint decides what counts
                continue
        return records

    def _truncate_metrics(self, stage_index: int, epochs_done: int) -> None:
        """Drop metrics lines the checkpoint does not cover (written after it, before a kill)."""
        stage_names = [s.name for s in self.model.stages()]
        kept = [
            r for r in self._read_metrics()
            if r.get("stage") in stage_names
            and (stage_names.index(r["stage"]), r["epoch"]) <= (stage_index, epochs_done)
        ]
        atomic_write_text(self.out_dir / METRICS_NAME, "".join(json.dumps(r) + "\n" for r in kept))

    def _finish(self, stopped_early: bool) -> TrainResult:
        config = self.config
        if stopped_early and self.out_dir is not None and (self.out_dir / BEST_NAME).exists():
            load_state_dict_strict(self.model, load_tensors(self.out_dir / BEST_NAME, self.device), str(self.out_dir / BEST_NAME))
            self.ema = None  # the best file already holds the averaged weights
        if self.ema is not None:
            self.model.load_state_dict({**self.model.state_dict(), **self.ema.shadow})
        self.model.eval()
        val_metrics = self.history[-1]["val"] if self.history else {}
        if self.context.is_main and self.out_dir is not None:
            save_tensors(self.out_dir / WEIGHTS_NAME, self.model.state_dict(), metadata={"format": "pt"})

            save_sample_grid(self.model, self.out_dir / "samples.png", seed=config.seed)
            save_loss_curve(self.history, self.out_dir / "loss_curve.png")
            self._write_card(val_metrics)
        barrier(self.context)
        return TrainResult(self.out_dir, self.history, val_metrics, stopped_early)


def _run_command(name: str, data_info: dict[str, Any], out_dir: Path, config: TrainConfig) -> str:
    changed = {k: v for k, v in config_to_dict(config).items() if v != config_to_dict(TrainConfig())[k] and k != "progress"}
    sets = " ".join(f"--set {k}={json.dumps(v).replace(' ', '')}" for k, v in changed.items())
    return f"vaezoo train {name} --data {data_info.get('data', 'DATA')} {sets} --out {out_dir}".replace("  ", " ")


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


def resolve_train_config(model: VAE, source: str = "train()", **overrides: Any) -> TrainConfig:
    """TrainConfig defaults, then the variant's ``train_defaults``, then ``overrides``."""
    values = {**dataclasses.asdict(TrainConfig()), **type(model).train_defaults, **overrides}
    return config_from_dict(TrainConfig, values, source=source)


def train(model: VAE, data: Any, out_dir: str | Path | None = None, resume: bool = False, **train_config: Any) -> TrainResult:
    """Train ``model`` on ``data`` (a :class:`vaezoo.data.DataSplits`) with :class:`TrainConfig` fields as keywords;
    fields left out take the variant's ``train_defaults``, then TrainConfig's defaults.

    >>> result = vaezoo.train(model, load_data("digits"), epochs=10, lr=2e-3, out_dir="runs/d")  # doctest: +SKIP
    """
    return Trainer(model, data, resolve_train_config(model, **train_config), out_dir=out_dir, resume=resume).fit()
