"""What ``vaezoo eval`` does, as a function: load the model and the data, then evaluate. The CLI only parses and prints.

>>> eval_run("runs/d", "digits", iw_samples=100)["nll"]  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import torch

from vaezoo.data import fixed_binarize, load_data
from vaezoo.errors import ConfigError
from vaezoo.eval.evaluate import evaluate
from vaezoo.zoo.factory import load_model_source


def eval_run(source: str, data: str, *, data_dir: str | None = None, split: str = "test", split_seed: int = 0,
             iw_samples: int = 100, batch_size: int = 500, device: str = "auto", iw_examples: int | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Metrics of a model on one split of ``data``, in nats per example (see vaezoo.eval.evaluate.evaluate)."""
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
