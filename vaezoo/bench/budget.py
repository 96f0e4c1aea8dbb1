"""Getting one variant ready under the benchmark's budget: its config for the data, then training or pretrained weights.

>>> from vaezoo.zoo.registry import get_model_class
>>> config_source("vae-mlp", "digits", get_model_class("vae-mlp"))
'vae-mlp.digits'
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch

from vaezoo.core.model import VAE
from vaezoo.errors import ConfigError, PretrainedUnavailableError
from vaezoo.training.trainer import train
from vaezoo.zoo.factory import create_model

logger = logging.getLogger(__name__)

PRETRAINED_TAG_FOR_DATA = {"digits": "digits", "fashion-mnist": "fmnist"}  # the usual names; any tag's dataset counts


def tag_for_data(model_class: type, data: str) -> str | None:
    """The variant's pretrained tag trained on ``data`` (``fmnist`` for fashion-mnist, ...), or None.

    The tag named in PRETRAINED_TAG_FOR_DATA wins; otherwise the first tag whose declared dataset is ``data``,
    so a tag for new data (e.g. ``fmnist-binarized`` for fashion-mnist-binarized) is found without a table entry.
    """
    tags = model_class.pretrained_tags
    usual = PRETRAINED_TAG_FOR_DATA.get(data)
    if usual in tags and tags[usual].dataset == data:
        return usual
    return next((tag for tag, spec in tags.items() if spec.dataset == data), None)


def config_source(name: str, data: str, model_class: type) -> str:
    """``name.tag`` when the variant has a pretrained tag for ``data`` (its config is sized for that data), else ``name``.

    Only the tag's config is used, not its weights: the default configs are sized for 28x28 images.
    """
    tag = tag_for_data(model_class, data)
    return f"{name}.{tag}" if tag else name


def build_seeded(name: str, data: str, model_class: type, seed: int, **build: Any) -> VAE:
    """The variant for ``data``, initialised from ``seed`` alone: the same seed gives the same initial weights,
    whatever else the benchmark builds before it (or whether it runs in another process)."""
    torch.manual_seed(seed)
    return create_model(config_source(name, data, model_class), **build)


def load_pretrained(name: str, splits: Any, data: str, model_class: type) -> VAE:
    """The shipped weights of ``name`` for ``data``; PretrainedUnavailableError or ConfigError when there are none that fit."""
    tag = tag_for_data(model_class, data)
    if tag is None:
        raise PretrainedUnavailableError(f"{name} has no pretrained tag for data {data!r}; train it with --epochs")
    model = create_model(f"{name}.{tag}", pretrained=True)
    if tuple(model.config.input_shape) != tuple(splits.input_shape):
        raise ConfigError(f"{name}.{tag} takes {tuple(model.config.input_shape)} but {data!r} has {tuple(splits.input_shape)}")
    return model


def train_model(model: VAE, splits: Any, epochs: int, seed: int, train_overrides: dict[str, Any]) -> tuple[list, float]:
    """Train ``model`` in place for ``epochs`` per stage, without a run folder: (history, seconds)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(model, splits, out_dir=None, epochs=epochs, seed=seed, progress=False, **train_overrides)
    return result.history, time.perf_counter() - start


def epochs_for_minutes(model: VAE, splits: Any, settings: dict[str, Any], train_overrides: dict[str, Any]) -> int:
    """Epochs per stage that fit ``minutes`` of training, from one timed probe epoch on a throwaway copy."""
    probe = copy.deepcopy(model)
    history, _ = train_model(probe, splits, 1, settings["seed"], train_overrides)
    seconds_per_pass = sum(r["wall_time_s"] for r in history)  # one epoch of every stage, validation included
    epochs = max(1, int(settings["minutes"] * 60 // max(seconds_per_pass, 1e-9)))
    logger.info("%s: %.1f s per epoch of all stages -> %d epochs in %s minutes",
                model.model_name, seconds_per_pass, epochs, settings["minutes"])
    return epochs
