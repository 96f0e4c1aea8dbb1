"""Whether an evaluation split holds rows the model was trained on: figures on them would flatter it.

The run's config.json records its data and split seed (see vaezoo.zoo.sources.training_data). On
the same data, the train split overlaps by definition, and another split seed reshuffles the rows,
so its val and test splits hold training rows; an official test set (fashion-mnist, mnist) is the
same under every seed and stays fine. Rows are compared by content, row by row.

>>> check_no_overlap("runs/d", "digits", "train", 0, trained, splits)  # doctest: +SKIP
Traceback (most recent call last):
vaezoo.errors.ConfigError: the train split of digits is what runs/d was trained on; ...
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaezoo.data import DataSplits, list_datasets
from vaezoo.errors import ConfigError

OVERLAP_FIX = "pass --allow-overlap to measure the fit to the training data on purpose"


def same_data(data: str, splits: DataSplits, recorded: dict[str, Any]) -> bool:
    """Whether ``data`` (loaded as ``splits``) is the data the record names: the same name, path or source."""
    if not recorded.get("data"):
        return False
    if data == recorded["data"] or (recorded.get("source") and splits.source == recorded["source"]):
        return True
    if data in list_datasets() or recorded["data"] in list_datasets():
        return False
    return Path(data).expanduser().resolve() == Path(str(recorded["data"])).expanduser().resolve()


def check_no_overlap(source: str, data: str, split: str, split_seed: int, recorded: dict[str, Any],
                     splits: DataSplits, load_trained: Callable[[], DataSplits]) -> None:
    """ConfigError when the ``split`` of ``splits`` (``data`` with ``split_seed``) shares rows with the train
    split ``source`` was trained on; ``load_trained`` loads the data with the recorded split seed."""
    trained_seed = int(recorded.get("split_seed") or 0)
    if split == "train":
        raise ConfigError(f"the train split of {data} is what {source} was trained on, so its figures would flatter "
                          f"the model; evaluate on --split test (or val), or {OVERLAP_FIX}")
    if split_seed == trained_seed:
        return
    trained = load_trained()
    part, trained_part = getattr(splits, split), getattr(trained, split)
    if part.x.shape == trained_part.x.shape and torch.equal(part.x, trained_part.x):
        return  # a split every seed gives alike: an official test set
    shared = _shared_rows(part.x, trained.train.x)
    if shared == 0 and _row_counts(_all_rows(splits)) == _row_counts(_all_rows(trained)):
        return  # the same rows, split otherwise, and none of this split's in training
    what = (f"{shared} of the {len(part)} rows of its {split} split were" if shared
            else f"its {split} split is drawn (and scaled) otherwise, from rows that were")
    raise ConfigError(f"--split-seed {split_seed} reshuffles {data}: {what} in the train split of {source} (trained "
                      f"with split seed {trained_seed}); evaluate with --split-seed {trained_seed}, the run's own, "
                      f"or {OVERLAP_FIX}")


def _all_rows(splits: DataSplits) -> torch.Tensor:
    return torch.cat([splits.train.x, splits.val.x, splits.test.x])


def _row_keys(x: torch.Tensor) -> list[bytes]:
    """One digest per row of ``x`` (N, ...), equal for rows with equal values."""
    rows = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def _row_counts(x: torch.Tensor) -> Counter[bytes]:
    return Counter(_row_keys(x))


def _shared_rows(x: torch.Tensor, trained_x: torch.Tensor) -> int:
    """How many rows of ``x`` also occur among the rows of ``trained_x``."""
    trained = set(_row_keys(trained_x))
    return sum(key in trained for key in _row_keys(x))
