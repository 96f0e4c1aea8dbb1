"""The ``vaezoo train`` command that repeats a run, as its model card shows it: data, options and every ``--set``.

>>> run_command(model, {"data": "digits"}, Path("runs/d"), config, {"input_shape": (1, 8, 8), "num_classes": 10})  # doctest: +SKIP
'vaezoo train vae-mlp --data digits --epochs 30 --set latent_dim=4 --out runs/d'
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from vaezoo.core.config import config_to_dict, parse_override
from vaezoo.core.model import VAE
from vaezoo.errors import VAEZooError
from vaezoo.training.config import TrainConfig, resolve_train_config
from vaezoo.zoo.builder import resolve_config

FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "device": "--device"}
NOT_REPEATED = ("progress",)  # a display choice, not part of the run


def run_command(model: VAE, data_info: dict[str, Any], out_dir: Path, config: TrainConfig,
                fitted: dict[str, Any]) -> str:
    """The command that trains this run again: the model's config fields that differ from what ``vaezoo train``
    builds for the data (``fitted``: input_shape and num_classes) and the training fields that differ from
    the variant's defaults, as options and ``--set``s."""
    name = model.model_name
    parts = ["vaezoo", "train", name, "--data", str(data_info.get("data", "DATA"))]
    if data_info.get("data_dir"):
        parts += ["--data-dir", str(data_info["data_dir"])]
    if data_info.get("split_seed"):
        parts += ["--split-seed", str(data_info["split_seed"])]
    if data_info.get("label_column"):
        parts += ["--label-column", str(data_info["label_column"])]
    train_changes = _changes(config_to_dict(config), config_to_dict(resolve_train_config(type(model), "the run")))
    sets = _changes(config_to_dict(model.config), _built_config(name, fitted))
    for key, value in train_changes.items():
        if key in FLAGS:
            parts += [FLAGS[key], str(value)]
        elif key == "compile" and value is not None:
            parts.append("--compile" if value else "--no-compile")
        elif key not in NOT_REPEATED:
            sets[key] = value
    for key, value in sets.items():
        parts += ["--set", f"{key}={_value_text(key, value)}"]
    parts += ["--out", str(out_dir)]
    return shlex.join(parts)


def _built_config(name: str, fitted: dict[str, Any]) -> dict[str, Any]:
    """The config ``vaezoo train NAME`` builds for data of this shape and classes; {} if it cannot be built
    (then every field is repeated with --set)."""
    try:
        return config_to_dict(resolve_config(name, **fitted))
    except VAEZooError:
        return {}


def _changes(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in defaults or defaults[key] != value}


def _value_text(key: str, value: Any) -> str:
    """``value`` as ``--set`` reads it back: a plain string where that parses to itself, else JSON."""
    if isinstance(value, str) and parse_override(f"{key}={value}")[1] == value:
        return value
    return json.dumps(value, separators=(",", ":"))
