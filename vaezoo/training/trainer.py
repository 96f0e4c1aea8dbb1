"""The trainer every variant uses: its stages in order, validation, checkpoints, resume, divergence, and ``train()``.

    >>> import vaezoo
    >>> from vaezoo.data import load_data
    >>> model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    >>> result = vaezoo.train(model, load_data("digits"), epochs=2, progress=False)  # doctest: +SKIP

or from the shell: ``vaezoo train vae-mlp --data digits --epochs 30 --out runs/vae``.

Design (what makes it fast and safe):
- the dataset lives as tensors on the device; a batch is an index slice of a seeded permutation (a split over
  the memory budget is streamed from disk instead, in the same batches: see vaezoo.training.batches);
- fused (or foreach) Adam/AdamW; learning-rate warm-up then cosine decay computed from the step;
- one optimizer per stage, with a parameter group per ``TrainingStage.param_groups`` entry (its own lr share
  and Adam betas, clipped on its own), saved and resumed with the optimizer's state (factor-vae's discriminator);
- loss terms are summed on the device and read back only when the progress bar updates;
- each epoch ends with one checkpoint file (weights, optimizer, RNG, counters in its metadata)
  written atomically (see run_folder), so ``resume=True`` after a crash or SIGKILL reproduces the
  uninterrupted run;
- each stage is validated as it declares (``TrainingStage.validation``): "elbo" by
  :func:`vaezoo.eval.evaluate` (early stopping watches ``neg_elbo``), "loss" by the mean of the
  stage's own loss terms (early stopping watches ``loss``);
- a non-finite loss stops the run and keeps the last good checkpoint;
- the run folder is locked (vaezoo.io.lock) while the run writes into it: a second run into it is refused;
- under torchrun every rank takes its slice of each global batch and DDP averages the gradients.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaezoo.core.config import config_to_dict
from vaezoo.core.contract import TrainingStage
from vaezoo.core.distributed import DistributedContext, barrier, init_distributed, resolve_device
from vaezoo.core.model import VAE
from vaezoo.core.validation import label_range_problem, value_problem
from vaezoo.data.streaming import StreamedArray, is_streamed
from vaezoo.errors import ConfigError, DataError, StorageError, TrainingDivergedError
from vaezoo.eval.evaluate import evaluate
from vaezoo.io.lock import hold_folder_lock
from vaezoo.io.model_dir import model_config_json
from vaezoo.training.batches import on_device, value_summary
from vaezoo.training.config import TrainConfig, lr_at, resolve_train_config, split_overrides
from vaezoo.training.divergence import LastGood, check_epoch_end
from vaezoo.training.ema import WeightEMA, averaged
from vaezoo.training.loop import StageLoop
from vaezoo.training.run_folder import Checkpoint, RunFolder

__all__ = ["TrainConfig", "TrainResult", "Trainer", "lr_at", "resolve_train_config", "split_overrides", "train"]

logger = logging.getLogger(__name__)

MONITORED = {"elbo": "neg_elbo", "loss": "loss"}  # the validation figure early stopping watches, per kind


@dataclass
class TrainResult:
    """What a finished run leaves: its folder, per-epoch metrics, and the final model's -ELBO metrics on the
    validation split (what ``vaezoo eval`` reports, whichever stage came last)."""

    out_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    val_metrics: dict[str, Any] = field(default_factory=dict)  # a reported metric of named parts is a dict
    stopped_early: bool = False


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
        self.run_folder = RunFolder(self.out_dir) if self.out_dir is not None else None
        self.resume = resume
        self.data_info = data_info or {}
        self.context = DistributedContext()
        self.device = torch.device("cpu")
        self.data_generator = torch.Generator()
        self.history: list[dict[str, Any]] = []
        self.ema: WeightEMA | None = None
        self.last_good = LastGood()  # what a diverged run goes back to
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

        Checked once here, so that the training loop needs no per-step host sync for it. NaN marks a missing
        value for a model whose ``capabilities.missing_values`` is True: only its observed values are checked.
        A streamed split is read chunk by chunk into a summary of which the checks say the same.
        """
        models_missing = self.model.capabilities.missing_values
        if is_streamed(part.x):
            x = value_summary(part.x, missing_as_zero=models_missing)
        else:
            x = part.x.nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf) if models_missing else part.x
        problem = value_problem(x, self.model.config.likelihood)
        if problem:
            nan_only = not models_missing and bool(torch.isnan(x).any()) and not bool(torch.isinf(x).any())
            raise DataError(f"the {split} split {problem}" + (" (or train `miwae`, which models missing values)"
                                                              if nan_only else ""))
        if self.model.is_conditional and part.y is not None:
            classes = self.model.config.num_classes
            if label_range_problem(part.y, classes):
                y_low, y_high = int(part.y.min()), int(part.y.max())  # for the message only
                raise ConfigError(
                    f"the {split} split has labels {y_low}..{y_high} but the model has num_classes={classes} "
                    f"(labels 0..{classes - 1}); set num_classes={max(y_high + 1, classes)} or relabel the data"
                )

    def _prepare_run_dir(self) -> Checkpoint | None:
        """Check the run folder; return the checkpoint when resuming from one (see RunFolder.prepare)."""
        if self.run_folder is None:
            if self.resume:
                raise ConfigError("resume=True needs the run folder (out_dir) to resume from")
            return None
        run_config = {**model_config_json(self.model.architecture_name(), config_to_dict(self.model.config)),
                      "train": config_to_dict(self.config), "data": self.data_info}
        return self.run_folder.prepare(self.resume, run_config, is_main=self.context.is_main)

    # --- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train every stage, then write the run folder's final files; see the module docstring.

        A non-finite loss raises TrainingDivergedError after resetting the model to its last good
        weights (and, with a run folder, saving them as model.safetensors); a failed write raises
        StorageError, leaving the last complete checkpoint to resume from.
        """
        main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun the main rank holds the lock
        holding = hold_folder_lock(self.out_dir) if self.out_dir is not None and main_process else contextlib.nullcontext()
        try:
            with holding:
                return self._fit()
        except TrainingDivergedError as error:
            raise TrainingDivergedError(
                f"{error}; {self._keep_last_good()}; lower the learning rate (--lr) or clip gradients (--set grad_clip=1.0)"
            ) from None
        except StorageError as error:
            resumable = self.run_folder is not None and self.run_folder.has_checkpoint()
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
        train_x = on_device(self.data.train.x, self.device)  # a streamed split stays on disk
        train_y = None if self.data.train.y is None else self.data.train.y.to(self.device)

        stages = self.model.stages()
        start_stage, start_epoch, best_val, bad_epochs = 0, 0, math.inf, 0
        if resumed is not None:
            start_stage, start_epoch, best_val, bad_epochs = self._restore(resumed)
        self._remember_good("the checkpoint it resumed from" if resumed is not None else None)
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

    def _fit_stage(self, stage_index: int, stage: TrainingStage, epochs: int, first_epoch: int,
                   train_x: Tensor | StreamedArray, train_y: Tensor | None, resumed: Checkpoint | None, best_val: float,
                   bad_epochs: int) -> bool:
        """Train one stage from ``first_epoch``; validate, record and checkpoint each epoch; say whether it stopped early."""
        config, context = self.config, self.context
        trainable = {id(p) for p in stage.parameters()}
        saved_flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        if config.ema_decay and self.ema is None:
            self.ema = WeightEMA(self.model, config.ema_decay)
        multi_stage = len(self.model.stages()) > 1
        loop = StageLoop(self.model, stage, config, context, self.device, train_x, train_y, epochs, self.ema,
                         show_stage=multi_stage)
        if resumed is not None:
            resumed.restore_optimizer(loop.optimizer)
        steps_per_epoch = loop.steps_per_epoch
        try:
            for epoch in range(first_epoch, epochs):
                epoch_start = time.perf_counter()
                train_metrics = loop.run_epoch(epoch, self.data_generator)
                train_time = time.perf_counter() - epoch_start
                try:
                    val_metrics = self._validate(stage)
                    loop.end_epoch(MONITORED[stage.validation], val_metrics.get(MONITORED[stage.validation]))
                finally:
                    loop.end_epoch()
                check_epoch_end(self.model, stage, epoch, val_metrics)
                record = {
                    "stage": stage.name, "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                    "lr": lr_at((epoch + 1) * steps_per_epoch - 1, loop.total_steps, config),
                    "train": train_metrics, "val": val_metrics,
                    "samples_per_s": steps_per_epoch * config.batch_size / train_time,  # training only
                    "train_time_s": train_time,
                    "wall_time_s": time.perf_counter() - epoch_start,  # with validation
                }
                monitored = val_metrics.get(MONITORED[stage.validation], math.inf)
                improved = monitored < best_val
                best_val, bad_epochs = (monitored, 0) if improved else (best_val, bad_epochs + 1)
                self.history.append(record)
                if context.is_main and self.run_folder is not None:
                    self.run_folder.append_metrics(record)
                    if improved and config.early_stopping:
                        with averaged(self.ema, self.model):
                            self.run_folder.save_weights(self.model.state_dict(), self.run_folder.best_path)
                    self.run_folder.save_checkpoint(
                        self.model, loop.optimizer, self.data_generator, None if self.ema is None else self.ema.shadow,
                        stage_index=stage_index, epochs_done=epoch + 1, best_val=best_val, bad_epochs=bad_epochs,
                        world_size=context.world_size,
                    )
                self._remember_good(f"epoch {epoch + 1}" + (f" of stage {stage.name!r}" if multi_stage else ""))
                barrier(context)
                if config.early_stopping and bad_epochs >= config.early_stopping:
                    logger.info("early stopping in stage %s after epoch %d", stage.name, epoch + 1)
                    return True
        finally:
            for p, flag in saved_flags:
                p.requires_grad_(flag)
        return False

    def _remember_good(self, label: str | None) -> None:
        self.last_good.remember(self.model, None if self.ema is None else self.ema.shadow, label)

    def _keep_last_good(self) -> str:
        """Put the last good weights back into the model (and the run folder); say where they are."""
        label = self.last_good.put_back(self.model)
        if label is None:
            return "no epoch finished, so the model was reset to its initial weights"
        kept = f"the model was reset to its last good weights, from {label}"
        folder = self.run_folder
        if folder is not None and self.context.is_main:
            try:
                folder.save_weights(self.model.state_dict())
                kept += f", saved to {folder.weights_path}"
            except StorageError as error:
                kept += f" (not saved: {error})"
        if folder is not None and folder.checkpoint_path.exists():
            kept += f"; the last good checkpoint is kept in {folder.checkpoint_path}"
        return kept

    @torch.no_grad()
    def _validate(self, stage: TrainingStage) -> dict[str, Any]:
        """The validation figures the stage declares: evaluate()'s (validation="elbo") or its loss terms' ("loss")."""
        val = self.data.val
        if val.x.shape[0] == 0:
            return {}
        with averaged(self.ema, self.model):
            if stage.validation == "elbo":
                return evaluate(self.model, val.x, val.y, batch_size=self.config.eval_batch_size)
            self.model.eval()
            totals: dict[str, float] = {}
            for begin in range(0, val.x.shape[0], self.config.eval_batch_size):
                xb = val.x[begin : begin + self.config.eval_batch_size].to(self.device)
                yb = None if val.y is None else val.y[begin : begin + self.config.eval_batch_size].to(self.device)
                for name, value in stage.loss(xb, yb).scalars().items():
                    totals[name] = totals.get(name, 0.0) + float(value) * xb.shape[0]
            return {name: value / val.x.shape[0] for name, value in totals.items()}

    def _final_metrics(self) -> dict[str, Any]:
        """The last epoch's validation figures when its stage validates by the -ELBO; else the final model's
        -ELBO figures (a vq-vae run ends with its prior stage, whose own validation is the prior's loss)."""
        if not self.history:
            return {}
        validation = {stage.name: stage.validation for stage in self.model.stages()}
        if validation.get(self.history[-1]["stage"]) == "elbo" or self.data.val.x.shape[0] == 0:
            return self.history[-1]["val"]
        val = self.data.val
        return evaluate(self.model, val.x, val.y, batch_size=self.config.eval_batch_size)

    # --- resume and finish ---------------------------------------------------------------------
    def _restore(self, resumed: Checkpoint) -> tuple[int, int, float, int]:
        """Load the checkpoint into the model, RNG and EMA; return (stage, epoch, best_val, bad_epochs) to go on from."""
        state = resumed.state
        resumed.restore_model(self.model)
        self.model.to(self.device)
        resumed.restore_rng(self.data_generator)
        ema_tensors = resumed.part("ema")
        if ema_tensors:
            self.ema = WeightEMA(self.model, self.config.ema_decay)
            self.ema.shadow = {k: v.to(self.device) for k, v in ema_tensors.items()}
        stage_names = [s.name for s in self.model.stages()]
        if self.context.is_main and self.run_folder is not None:
            self.run_folder.resumed_from(resumed, stage_names)
        self.history = self.run_folder.read_metrics()
        best = state["best_val"] if state["best_val"] is not None else math.inf
        stage_index, epochs_done = state["stage_index"], state["epochs_done"]
        if epochs_done >= self._epochs_for(stage_index, len(stage_names)):  # that stage is done: start the next one
            stage_index, epochs_done, best, state["optimizer"] = stage_index + 1, 0, math.inf, None
        logger.info("resuming from stage %d, epoch %d", stage_index, epochs_done)
        return stage_index, epochs_done, best, state["bad_epochs"]

    def _finish(self, stopped_early: bool) -> TrainResult:
        if stopped_early and self.run_folder is not None and self.run_folder.load_best(self.model, self.device):
            self.ema = None  # the best file already holds the averaged weights
        if self.ema is not None:
            self.model.load_state_dict({**self.model.state_dict(), **self.ema.shadow})
        self.model.eval()
        val_metrics = self._final_metrics()
        if self.context.is_main and self.run_folder is not None:
            fitted = {"input_shape": tuple(self.data.train.x.shape[1:]), "num_classes": getattr(self.data, "num_classes", 0)}
            self.run_folder.write_final(self.model, self.history, val_metrics, self.config, self.data_info, fitted)
        barrier(self.context)
        return TrainResult(self.out_dir, self.history, val_metrics, stopped_early)


def train(model: VAE, data: Any, out_dir: str | Path | None = None, resume: bool = False, **train_config: Any) -> TrainResult:
    """Train ``model`` on ``data`` (a :class:`vaezoo.data.DataSplits`) with :class:`TrainConfig` fields as keywords;
    fields left out take the variant's ``train_defaults``, then TrainConfig's defaults.

    >>> result = vaezoo.train(model, load_data("digits"), epochs=10, lr=2e-3, out_dir="runs/d")  # doctest: +SKIP
    """
    return Trainer(model, data, resolve_train_config(model, "train()", **train_config), out_dir=out_dir, resume=resume).fit()
