"""A training run's folder on disk: config.json, metrics.jsonl, checkpoints, and the final weights, card and figures.

    runs/vae/
      config.json                   the model config, "train" (TrainConfig) and "data"
      metrics.jsonl                 one JSON line per finished epoch
      checkpoints/last.safetensors  weights, optimizer, RNG and EMA tensors; counters in its metadata
      checkpoints/last.json         those counters, readable (the optimizer's structure left out)
      checkpoints/best.safetensors  the best weights so far, with early stopping
      model.safetensors, README.md, samples.png, loss_curve.png   written when the run ends

Every file is written atomically, except metrics.jsonl, which is appended to and fsynced; a line
torn by a kill is dropped on resume, and the checkpoint decides which lines count.

>>> folder = RunFolder("runs/vae")  # doctest: +SKIP
>>> checkpoint = folder.prepare(resume=True, run_config=config_json, is_main=True)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaezoo.core.model import VAE
from vaezoo.data.sources import dataset_class_names
from vaezoo.errors import CheckpointError, ConfigError, StorageError
from vaezoo.eval.figures import save_sample_grid
from vaezoo.io.atomic import atomic_write_json, atomic_write_text, describe_os_error, remove_stale_temp_files
from vaezoo.io.cards import write_model_card
from vaezoo.io.figures import save_loss_curve
from vaezoo.io.model_dir import CONFIG_NAME, WEIGHTS_NAME
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
from vaezoo.training.command import run_command
from vaezoo.training.config import TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoints/last.safetensors"
SUMMARY_NAME = "checkpoints/last.json"
BEST_NAME = "checkpoints/best.safetensors"
METRICS_NAME = "metrics.jsonl"


@dataclass
class Checkpoint:
    """A checkpoint read back: tensors under the prefixes model., optim., ema. and the RNG's, and its counters.

    ``state`` holds stage_index, epochs_done, best_val (None for +inf), bad_epochs, world_size, and
    the optimizer's structure (None once its stage is finished: the next stage starts a new one).
    """

    path: Path
    tensors: dict[str, Tensor]
    state: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        tensors, metadata = read_tensors(path)
        try:
            state = json.loads(metadata["state"])
        except (KeyError, json.JSONDecodeError):
            raise CheckpointError(
                f"{path} has no readable training state in its metadata; it was not written by vaezoo's trainer"
            ) from None
        return cls(path, tensors, state)

    def part(self, prefix: str) -> dict[str, Tensor]:
        """The tensors saved under ``prefix.``, without it."""
        return {k.removeprefix(f"{prefix}."): v for k, v in self.tensors.items() if k.startswith(f"{prefix}.")}

    def restore_model(self, model: nn.Module) -> None:
        load_state_dict_strict(model, self.part("model"), source=str(self.path))

    def restore_rng(self, generator: torch.Generator) -> None:
        rng_from_tensors(self.tensors, generator)

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's state, if the checkpoint was written mid-stage."""
        if self.state.get("optimizer"):
            optimizer_from_tensors(optimizer, self.tensors, self.state["optimizer"], prefix="optim")


class RunFolder:
    """The files of one run, under ``path``. Under torchrun the trainer writes through it from the main rank only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def best_path(self) -> Path:
        return self.path / BEST_NAME

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    # --- starting and resuming -----------------------------------------------------------------
    def prepare(self, resume: bool, run_config: dict[str, Any], is_main: bool) -> Checkpoint | None:
        """Check the folder; return the checkpoint when resuming from one, else write config.json (main rank).

        Resuming a run that was killed before its first checkpoint starts it again from the
        beginning, with the same settings; a new run never appends to a killed run's metrics.
        """
        if is_main:
            for folder in (self.path, self.checkpoint_path.parent):
                for stale in remove_stale_temp_files(folder):
                    logger.info("removed %s, left by a write that was interrupted", stale)
        if resume and self.has_checkpoint():
            if is_main and run_config != self.read_config():  # a resume that extends the run (more epochs) records it
                atomic_write_json(self.path / CONFIG_NAME, run_config)
            return Checkpoint.read(self.checkpoint_path)
        if resume and not (self.path / CONFIG_NAME).is_file():
            raise CheckpointError(f"nothing to resume: {self.checkpoint_path} does not exist; start the run without --resume")
        if self.checkpoint_path.exists() or self.weights_path.exists():
            raise ConfigError(f"{self.path} already holds a run; pass --resume to continue it, or choose another --out")
        if resume:
            logger.info("%s has no checkpoint yet: starting the run from the beginning", self.path)
        if is_main:
            atomic_write_json(self.path / CONFIG_NAME, run_config)
            if self.metrics_path.exists():  # lines of a run killed before its first checkpoint
                atomic_write_text(self.metrics_path, "")
        return None

    def read_config(self) -> dict[str, Any]:
        """The run's config.json as a dict ({} when absent or unreadable: prepare then writes it anew)."""
        try:
            return json.loads((self.path / CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def resumed_from(self, checkpoint: Checkpoint, stage_names: list[str]) -> None:
        """Make the folder agree with the checkpoint it resumes from: drop later metrics lines, rewrite last.json."""
        self.truncate_metrics(stage_names, checkpoint.state["stage_index"], checkpoint.state["epochs_done"])
        # A kill between the checkpoint and its summary leaves last.json one epoch behind.
        self._write_summary(checkpoint.state)

    # --- during the run ------------------------------------------------------------------------
    def save_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                        ema_shadow: dict[str, Tensor] | None, *, stage_index: int, epochs_done: int, best_val: float,
                        bad_epochs: int, world_size: int) -> None:
        """One file: weights, optimizer, RNG and EMA tensors; counters as JSON in its metadata; then last.json."""
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        optim_tensors, optim_structure = optimizer_to_tensors(optimizer, prefix="optim")
        tensors.update(optim_tensors)
        tensors.update(rng_to_tensors(generator))
        if ema_shadow is not None:
            tensors.update({f"ema.{k}": v for k, v in ema_shadow.items()})
        state = {
            "stage_index": stage_index, "epochs_done": epochs_done, "best_val": best_val if math.isfinite(best_val) else None,
            "bad_epochs": bad_epochs, "optimizer": optim_structure, "world_size": world_size,
        }
        save_tensors(self.checkpoint_path, {k: v.cpu() for k, v in tensors.items()},
                     metadata={"state": json.dumps(state), "format": "pt"})
        self._write_summary(state)

    def read_counters(self) -> dict[str, Any]:
        """The last checkpoint's counters (stage_index, epochs_done, ...) from last.json; {} before the first one."""
        try:
            return json.loads((self.path / SUMMARY_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_summary(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY_NAME, {k: v for k, v in state.items() if k != "optimizer"})

    def save_weights(self, weights: dict[str, Tensor], path: Path | None = None) -> None:
        """model.safetensors (or ``path``, e.g. :attr:`best_path`)."""
        save_tensors(path or self.weights_path, weights, metadata={"format": "pt"})

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One JSON line; a line torn by a kill is dropped on resume (see truncate_metrics)."""
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StorageError(f"cannot write {self.metrics_path}: {describe_os_error(error)}") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill: the checkpoint decides what counts
                continue
        return records

    def truncate_metrics(self, stage_names: list[str], stage_index: int, epochs_done: int) -> None:
        """Drop metrics lines the checkpoint does not cover (written after it, before a kill)."""
        kept = [
            r for r in self.read_metrics()
            if r.get("stage") in stage_names
            and (stage_names.index(r["stage"]), r["epoch"]) <= (stage_index, epochs_done)
        ]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def load_best(self, model: nn.Module, device: torch.device) -> bool:
        """Load checkpoints/best.safetensors into ``model`` if early stopping wrote one; say whether it did."""
        if not self.best_path.exists():
            return False
        load_state_dict_strict(model, load_tensors(self.best_path, device), str(self.best_path))
        return True

    # --- when the run ends ---------------------------------------------------------------------
    def write_final(self, model: VAE, history: list[dict[str, Any]], val_metrics: dict[str, Any],
                    config: TrainConfig, data_info: dict[str, Any], fitted: dict[str, Any] | None = None) -> None:
        """model.safetensors, samples.png, loss_curve.png, and a README.md card with the validation figures, the
        command that repeats the run (``fitted``: the input_shape and num_classes the data gave) and how to load it."""
        self.save_weights(model.state_dict())
        save_sample_grid(model, self.path / "samples.png", seed=config.seed,
                         class_names=dataset_class_names(data_info.get("data")))  # row labels of a conditional model
        save_loss_curve(history, self.path / "loss_curve.png")
        name = model.model_name
        metrics = {k: v for k, v in val_metrics.items() if k != "samples_per_s"}
        # The card lets `vaezoo push` publish the folder with its validation figures.
        command = run_command(model, data_info, self.path, config, fitted or {})
        write_model_card(self.path, name=name, dataset=str(data_info.get("data", "custom data")), metrics=metrics,
                         split="validation", command=command, source=os.path.abspath(self.path))

