"""What ``vaezoo train`` does, as a function: resolve data and model, then call the trainer. The CLI only parses and prints.

>>> result = train_run("vae-mlp", "digits", "runs/d", train_flags={"epochs": 5})  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from vaezoo.core.config import config_from_dict
from vaezoo.data import load_data
from vaezoo.errors import CheckpointError, ConfigError
from vaezoo.io.model_dir import CONFIG_NAME, read_config_json
from vaezoo.training.config import TrainConfig, resolve_train_config, split_overrides
from vaezoo.training.trainer import Trainer, TrainResult
from vaezoo.zoo.builder import resolve_config
from vaezoo.zoo.factory import create_model
from vaezoo.zoo.registry import get_model_class


def train_run(name: str, data: str | None, out_dir: str | Path, *, data_dir: str | None = None, split_seed: int = 0,
              resume: bool = False, overrides: dict[str, Any] | None = None, train_flags: dict[str, Any] | None = None,
              progress: bool = True) -> TrainResult:
    """Train ``name`` on ``data`` into ``out_dir``; with ``resume`` the run's own config.json decides everything."""
    out_dir = Path(out_dir)
    if resume:
        return _resume_run(name, data, out_dir, data_dir, overrides, train_flags, progress)
    model_class = get_model_class(name)
    model_overrides, train_overrides = split_overrides(overrides or {}, model_class.config_class)
    user_values = {**train_overrides, **(train_flags or {}), "progress": progress}  # a flag wins over its --set
    train_config = resolve_train_config(model_class, "training options", **user_values)
    if data is None:
        raise ConfigError("--data is required: a built-in name (digits, fashion-mnist, mnist) or a file or folder path")
    splits = load_data(data, data_dir=data_dir, seed=split_seed)
    if model_class.is_conditional and not splits.num_classes and "num_classes" not in model_overrides:
        raise ConfigError(
            f"{name!r} is conditional but {data!r} has no labels; give it labelled data (a 'y' array, a label "
            "column or class subfolders)"
        )
    fitted = {"input_shape": splits.input_shape, "num_classes": splits.num_classes}
    config = resolve_config(name, **{**fitted, **model_overrides})
    torch.manual_seed(train_config.seed)  # initialisation is part of the seeded run
    model = create_model(name, **dataclasses.asdict(config))
    data_info = {"data": data, "data_dir": data_dir, "split_seed": split_seed, "source": splits.source}
    return Trainer(model, splits, train_config, out_dir=out_dir, data_info=data_info).fit()


def _resume_run(name: str, data: str | None, out_dir: Path, data_dir: str | None, overrides: dict[str, Any] | None,
                train_flags: dict[str, Any] | None, progress: bool) -> TrainResult:
    if not (out_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"nothing to resume: {out_dir / CONFIG_NAME} does not exist; start the run without --resume")
    saved = read_config_json(out_dir)
    if saved["architecture"] != name.partition(".")[0]:
        raise ConfigError(f"{out_dir} holds a {saved['architecture']!r} run, not {name!r}; resume it with that name")
    if overrides or train_flags:
        raise ConfigError(
            f"--resume continues {out_dir} with the settings in its config.json; drop --set and the training options "
            "(or start a new run with another --out)"
        )
    data_info = saved.get("data") or {}
    data = data or data_info.get("data")
    if data is None:
        raise ConfigError(f"{out_dir / CONFIG_NAME} does not record the data; pass --data")
    splits = load_data(data, data_dir=data_dir or data_info.get("data_dir"), seed=data_info.get("split_seed", 0))
    train_config = config_from_dict(TrainConfig, {**saved.get("train", {}), "progress": progress}, source=str(out_dir / CONFIG_NAME))
    torch.manual_seed(train_config.seed)  # as train_run does: a run killed before its first checkpoint starts over alike
    model = create_model(saved["architecture"], **saved["config"])
    return Trainer(model, splits, train_config, out_dir=out_dir, resume=True, data_info=data_info).fit()
