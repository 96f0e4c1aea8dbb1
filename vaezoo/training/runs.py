"""What ``vaezoo train`` does, as a function: resolve data and model, then call the trainer. The CLI only parses and prints.

>>> result = train_run("vae-mlp", "digits", "runs/d", train_flags={"epochs": 5})  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from vaezoo.core.config import config_from_dict
from vaezoo.data import load_data
from vaezoo.errors import CheckpointError, ConfigError
from vaezoo.io.model_dir import CONFIG_NAME, read_config_json
from vaezoo.training.config import TrainConfig, resolve_train_config, split_overrides
from vaezoo.training.run_folder import CHECKPOINT_NAME, METRICS_NAME, RunFolder
from vaezoo.training.trainer import Trainer, TrainResult
from vaezoo.zoo.builder import resolve_config
from vaezoo.zoo.factory import create_model
from vaezoo.zoo.registry import get_model_class

logger = logging.getLogger(__name__)


def train_run(name: str, data: str | None, out_dir: str | Path, *, data_dir: str | None = None, split_seed: int = 0,
              resume: bool = False, overrides: dict[str, Any] | None = None, train_flags: dict[str, Any] | None = None,
              progress: bool = True, label_column: str | None = None, memory_budget_mb: float | None = None) -> TrainResult:
    """Train ``name`` on ``data`` into ``out_dir``; with ``resume`` the run's own config.json decides everything.

    config.json records the data (``data``, ``data_dir``, ``split_seed``, ``label_column``) and its
    ``class_names`` (for a CSV with text labels: the text of each class id), for eval and the figures.
    ``memory_budget_mb`` (load_data's) is not recorded: a streamed run trains exactly as an in-memory one.
    """
    out_dir = run_folder_of(Path(out_dir), resume)
    if resume:
        return _resume_run(name, data, out_dir, data_dir, overrides, train_flags, progress, label_column,
                           memory_budget_mb)
    model_class = get_model_class(name)
    model_overrides, train_overrides = split_overrides(overrides or {}, model_class.config_class)
    user_values = {**train_overrides, **(train_flags or {}), "progress": progress}  # a flag wins over its --set
    train_config = resolve_train_config(model_class, "training options", **user_values)
    if data is None:
        raise ConfigError("--data is required: a built-in name (digits, fashion-mnist, mnist) or a file or folder path")
    splits = load_data(data, data_dir=data_dir, seed=split_seed, label_column=label_column,
                       allow_missing=model_class.capabilities.missing_values,  # NaN as missing, for miwae
                       memory_budget_mb=memory_budget_mb)
    if model_class.is_conditional and not splits.num_classes and "num_classes" not in model_overrides:
        raise ConfigError(
            f"{name!r} is conditional but {data!r} has no labels; give it labelled data (a 'y' array, a label "
            "column or class subfolders)"
        )
    fitted = {"input_shape": splits.input_shape, "num_classes": splits.num_classes}
    config = resolve_config(name, **{**fitted, **model_overrides})
    if config.latent_sampler:  # an unfitted mixture would be saved and drawn from as if it were fitted
        raise ConfigError(f"latent_sampler={config.latent_sampler!r} is fitted after training, on the trained model's "
                          f"codes; train without it, then run `vaezoo fit-sampler {out_dir} --data {data} --out DIR`")
    torch.manual_seed(train_config.seed)  # initialisation is part of the seeded run
    model = create_model(name, **dataclasses.asdict(config))
    data_info = {"data": data, "data_dir": data_dir, "split_seed": split_seed, "source": splits.source,
                 "label_column": label_column, "class_names": splits.class_names}
    return Trainer(model, splits, train_config, out_dir=out_dir, data_info=data_info).fit()


def run_folder_of(out_dir: Path, resume: bool) -> Path:
    """The run folder ``--out`` means. With ``resume``, a run's checkpoints folder or its latest checkpoint
    (``RUN/checkpoints``, ``RUN/checkpoints/last.safetensors``) means ``RUN``; any other path inside a run is
    an error naming the run folder to pass instead."""
    run = _enclosing_run(out_dir)
    if run is None or run == out_dir:
        return out_dir
    latest = run / CHECKPOINT_NAME
    if resume and out_dir in (latest.parent, latest):
        logger.info("resuming the run in %s from its latest checkpoint, %s", run, latest)
        return run
    if resume:
        raise ConfigError(f"--out {out_dir} is inside the run folder {run}; --resume continues a run from its latest "
                          f"checkpoint ({latest}): pass --out {run}")
    raise ConfigError(f"--out {out_dir} is inside the run folder {run}; continue that run with --resume --out {run}, "
                      "or choose a new --out outside it")


def _enclosing_run(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that holds a run (config.json with a checkpoint or metrics.jsonl), else None."""
    for folder in (path, *path.parents):
        if (folder / CONFIG_NAME).is_file() and ((folder / CHECKPOINT_NAME).is_file() or (folder / METRICS_NAME).is_file()):
            return folder
    return None


def _resume_run(name: str, data: str | None, out_dir: Path, data_dir: str | None, overrides: dict[str, Any] | None,
                train_flags: dict[str, Any] | None, progress: bool, label_column: str | None,
                memory_budget_mb: float | None = None) -> TrainResult:
    if not (out_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"nothing to resume: {out_dir / CONFIG_NAME} does not exist; start the run without --resume")
    saved = read_config_json(out_dir)
    if saved["architecture"] != name.partition(".")[0]:
        raise ConfigError(f"{out_dir} holds a {saved['architecture']!r} run, not {name!r}; resume it with that name")
    data_info = saved.get("data") or {}
    if data is not None and data_info.get("data") not in (None, data):
        raise ConfigError(f"{out_dir} was trained on --data {data_info['data']}, not {data}; resume it on the same data")
    data = data or data_info.get("data")
    if data is None:
        raise ConfigError(f"{out_dir / CONFIG_NAME} does not record the data; pass --data")
    if label_column is not None and label_column != data_info.get("label_column"):
        raise ConfigError(f"{out_dir} was trained with --label-column {data_info.get('label_column')}, not "
                          f"{label_column}; resume it with the same label column (or without the option)")
    train_config = resumed_train_config(out_dir, saved, overrides or {}, {**(train_flags or {}), "progress": progress})
    splits = load_data(data, data_dir=data_dir or data_info.get("data_dir"), seed=data_info.get("split_seed", 0),
                       label_column=data_info.get("label_column"),
                       allow_missing=get_model_class(saved["architecture"]).capabilities.missing_values,
                       memory_budget_mb=memory_budget_mb)
    torch.manual_seed(train_config.seed)  # as train_run does: a run killed before its first checkpoint starts over alike
    model = create_model(saved["architecture"], **saved["config"])
    return Trainer(model, splits, train_config, out_dir=out_dir, resume=True, data_info=data_info).fit()


def resumed_train_config(out_dir: Path, saved: dict[str, Any], overrides: dict[str, Any],
                         flags: dict[str, Any]) -> TrainConfig:
    """The run's own TrainConfig, with the options the resuming command repeats.

    Re-running the run's command with ``--resume`` added works: an option equal to the run's is fine, one
    that differs is refused naming each difference. The exception is more epochs (``--epochs`` or
    ``stage_epochs``), which extends the run: training goes on from the checkpoint, and the cosine
    learning-rate schedule is recomputed over the new total, so the rate steps back up to where a run
    planned that long from the start would be at that step.
    """
    source = str(out_dir / CONFIG_NAME)
    model_class = get_model_class(saved["architecture"])
    model_part, train_part = split_overrides(overrides, model_class.config_class)
    old_model = config_from_dict(model_class.config_class, saved["config"], source=source)
    new_model = config_from_dict(model_class.config_class, {**saved["config"], **model_part}, source="--set")
    old_train = config_from_dict(TrainConfig, saved.get("train", {}), source=source)
    new_train = config_from_dict(TrainConfig, {**saved.get("train", {}), **train_part, **flags}, source="training options")
    differences = [f"{key}: {getattr(old_model, key)!r} in the run, {getattr(new_model, key)!r} given"
                   for key in model_part if getattr(old_model, key) != getattr(new_model, key)]
    differences += [f"{key}: {getattr(old_train, key)!r} in the run, {getattr(new_train, key)!r} given"
                    for key in {**train_part, **flags} if key not in EXTENDABLE + ("progress",)
                    and getattr(old_train, key) != getattr(new_train, key)]
    if differences:
        raise ConfigError(f"--resume continues {out_dir} with its own settings, but the command changes "
                          f"{'; '.join(differences)}; drop those options, or start a new run with another --out")
    _check_extension(out_dir, old_train, new_train)
    return new_train


EXTENDABLE = ("epochs", "stage_epochs")  # a resume may raise these: it extends the run


def _check_extension(out_dir: Path, old: TrainConfig, new: TrainConfig) -> None:
    """More epochs are fine; fewer, or more for a stage that later stages already built on, are refused."""
    if new.stage_epochs and not old.stage_epochs or old.stage_epochs and not new.stage_epochs:
        raise ConfigError(f"{out_dir} was planned with {'stage_epochs' if old.stage_epochs else 'epochs'}; "
                          "extend it with the same option")
    old_plan, new_plan = list(old.stage_epochs) or [old.epochs], list(new.stage_epochs) or [new.epochs]
    if len(new_plan) != len(old_plan) or any(n < o for n, o in zip(new_plan, old_plan)):
        raise ConfigError(f"--resume can extend {out_dir} ({'stage_epochs' if old.stage_epochs else 'epochs'} "
                          f"{old_plan if old.stage_epochs else old.epochs}) but not shorten it; give at least as many epochs")
    reached = RunFolder(out_dir).read_counters().get("stage_index", 0)
    grown = [i for i, (n, o) in enumerate(zip(new_plan, old_plan)) if n > o and i < reached]
    if grown:
        raise ConfigError(f"{out_dir} has already gone past stage {grown[0]}, so it cannot get more epochs; extend "
                          "only the stage being trained or later ones")

