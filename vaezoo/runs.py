"""What ``vaezoo train`` and ``vaezoo eval`` do, as functions: resolve data and model, then call the trainer
or the evaluator. The CLI only parses and prints.

>>> result = train_run("vae-mlp", "digits", "runs/d", train_flags={"epochs": 5})  # doctest: +SKIP
>>> eval_run("runs/d", "digits", iw_samples=100)["nll"]  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError
from .config import config_from_dict
from .errors import ConfigError
from .evaluation import evaluate
from .registry import create_model, get_model_class, resolve_config
from .serialization import CONFIG_NAME, read_config_json
from .training import TrainConfig, Trainer, TrainResult, resolve_device, split_overrides


def train_run(name: str, data: str | None, out_dir: str | Path, *, data_dir: str | None = None, split_seed: int = 0,
              resume: bool = False, overrides: dict[str, Any] | None = None, train_flags: dict[str, Any] | None = None,
              progress: bool = True) -> TrainResult:
    """Train ``name`` on ``data`` into ``out_dir``; with ``resume`` the run's own config.json decides everything."""
    from .data import load_data

    out_dir = Path(out_dir)
    if resume:
        return _resume_run(name, data, out_dir, data_dir, overrides, train_flags, progress)
    model_class = get_model_class(name)
    model_overrides, train_overrides = split_overrides(overrides or {}, model_class.config_class)
    train_values = {**dataclasses.asdict(TrainConfig()), **model_class.train_defaults, **train_overrides,
                    **(train_flags or {}), "progress": progress}
    train_config = config_from_dict(TrainConfig, train_values, source="training options")
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
    from .data import load_data

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


def load_model_source(source: str, device: str = "auto") -> Any:
    """A model from a run folder, a registry tag (``hvae.fmnist``) or a Hub id (``hf-hub:ORG/NAME``)."""
    from .pretrained import from_pretrained

    return from_pretrained(source, device=str(resolve_device(device)))


def eval_run(source: str, data: str, *, data_dir: str | None = None, split: str = "test", split_seed: int = 0,
             iw_samples: int = 100, batch_size: int = 500, device: str = "auto", iw_examples: int | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Metrics of a model on one split of ``data``, in nats per example (see vaezoo.evaluation.evaluate)."""
    from .data import fixed_binarize, load_data

    model = load_model_source(source, device)
    splits = load_data(data, data_dir=data_dir, seed=split_seed)
    part = getattr(splits, split)
    if tuple(part.x.shape[1:]) != tuple(model.config.input_shape):
        raise ConfigError(
            f"{data!r} has examples of shape {tuple(part.x.shape[1:])} but the model takes "
            f"{tuple(model.config.input_shape)}; evaluate it on the data it was trained for"
        )
    x = fixed_binarize(part.x, seed=split_seed) if model.config.dynamic_binarization else part.x
    y = part.y if model.is_conditional else None
    if model.is_conditional:
        _check_labels_fit(data, part.y, model.config.num_classes)
    metrics = evaluate(model, x, y, iw_samples=iw_samples, batch_size=batch_size, seed=seed, iw_examples=iw_examples)
    return {"model": source, "data": data, "split": split, "examples": int(x.shape[0]), **metrics}


def _check_labels_fit(data: str, y: torch.Tensor | None, num_classes: int) -> None:
    if y is None:
        raise ConfigError(f"{data!r} has no labels but the model is conditional; evaluate it on labelled data")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(
            f"{data!r} has labels {int(y.min())}..{int(y.max())} but the model knows 0..{num_classes - 1}; "
            "evaluate it on data with the classes it was trained on"
        )
