"""What ``vaezoo eval`` does, as a function: load the model and the data it names or records, then evaluate.

The CLI only parses and prints. Without ``data`` the model is evaluated on the data it records (a
run folder's config.json, a tag's dataset), with the split seed it was trained with.

>>> eval_run("runs/d", iw_samples=100)["nll"]  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaezoo.data import fixed_binarize, list_datasets, load_data
from vaezoo.errors import ConfigError
from vaezoo.eval.evaluate import BITS_PER_DIM_OF, evaluate
from vaezoo.eval.overlap import check_no_overlap, same_data
from vaezoo.io.hub import HUB_PREFIX
from vaezoo.zoo.factory import load_model_source
from vaezoo.zoo.sources import is_folder_source, source_folder, training_data


def eval_run(source: str, data: str | None = None, *, data_dir: str | None = None, split: str = "test",
             split_seed: int | None = None, iw_samples: int = 100, batch_size: int = 500, device: str = "auto",
             iw_examples: int | None = None, seed: int = 0, allow_overlap: bool = False,
             progress: bool = False, label_column: str | None = None) -> dict[str, Any]:
    """Metrics of a model on one split of ``data``, in nats per example (see vaezoo.eval.evaluate.evaluate).

    ``data`` defaults to the data the model records (``data_dir`` too), and ``split_seed`` to the seed it was
    trained with when the data is that data, else 0. A split that shares rows with the model's training
    split (its train split, or another seed's reshuffle) is a ConfigError unless ``allow_overlap``.
    ``progress`` draws a bar on stderr when it is a terminal.
    """
    folder = source_folder(source) if is_folder_source(source) else None
    hub_folder = folder is not None and source.startswith(HUB_PREFIX)  # downloaded once: load that copy
    model = load_model_source(str(folder) if hub_folder else source, device)
    recorded = training_data(source, folder)
    if data is None:
        data, data_dir = _recorded_data(source, recorded, data_dir)
    if label_column is None and recorded and data == recorded.get("data"):
        label_column = recorded.get("label_column")  # a CSV's labels as the run read them
    trained_seed = int(recorded.get("split_seed") or 0)
    if split_seed is None:
        split_seed = trained_seed if recorded and data == recorded.get("data") else 0
    missing_values = model.capabilities.missing_values  # NaN marks a missing value: miwae scores the observed ones
    splits = load_data(data, data_dir=data_dir, seed=split_seed, label_column=label_column, allow_missing=missing_values)
    if not allow_overlap and same_data(data, splits, recorded):
        check_no_overlap(source, data, split, split_seed, recorded, splits,
                         lambda: load_data(data, data_dir=data_dir, seed=trained_seed, label_column=label_column,
                                           allow_missing=missing_values))
    part = getattr(splits, split)
    if tuple(part.x.shape[1:]) != tuple(model.config.input_shape):
        raise ConfigError(
            f"{data!r} has examples of shape {tuple(part.x.shape[1:])} but the model takes "
            f"{tuple(model.config.input_shape)}; evaluate it on the data it was trained for"
        )
    x = part.x
    if model.config.dynamic_binarization:  # the observed values only: NaN stays missing
        missing = torch.isnan(x)
        x = torch.where(missing, x, fixed_binarize(x.nan_to_num(nan=0.0), seed=split_seed))
    y = part.y if model.is_conditional else None
    if model.is_conditional:
        _check_labels_fit(data, part.y, model.config.num_classes)
    metrics = evaluate(model, x, y, iw_samples=iw_samples, batch_size=batch_size, seed=seed, iw_examples=iw_examples,
                       progress=progress)
    if model.config.is_image:  # how to read the bits/dim figures under this model's likelihood
        metrics["bits_per_dim_of"] = BITS_PER_DIM_OF.get(model.config.likelihood, model.config.likelihood)
    return {"model": source, "data": data, "split": split, "split_seed": split_seed, "examples": int(x.shape[0]),
            **metrics}


def _recorded_data(source: str, recorded: dict[str, Any], data_dir: str | None) -> tuple[str, str | None]:
    """(data, data_dir) as the model records them; ConfigError when it records none or the path is gone."""
    if not recorded:
        raise ConfigError(f"{source} does not record the data it was trained on; pass --data (e.g. --data digits)")
    data = str(recorded["data"])
    data_dir = data_dir if data_dir is not None else recorded.get("data_dir")
    if data not in list_datasets() and data_dir is None and not Path(data).expanduser().exists():
        raise ConfigError(f"{source} was trained on --data {data}, which does not exist from here ({Path.cwd()}); "
                          "pass --data with its path")
    return data, data_dir


def _check_labels_fit(data: str, y: torch.Tensor | None, num_classes: int) -> None:
    if y is None:
        raise ConfigError(f"{data!r} has no labels but the model is conditional; evaluate it on labelled data")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(
            f"{data!r} has labels {int(y.min())}..{int(y.max())} but the model knows 0..{num_classes - 1}; "
            "evaluate it on data with the classes it was trained on"
        )
