"""What a model source holds (a folder, an ``hf-hub:`` id or a registry tag): its folder, its training data, its info.

``vaezoo info`` and ``vaezoo eval`` take the same sources as ``from_pretrained``; this module finds
the model directory behind one (downloading a Hub repo once) and what it records about its training.

>>> training_data("vae-mlp.digits")["data"]  # doctest: +SKIP
'digits'
>>> source_info("runs/vae-digits")["data"]  # doctest: +SKIP
{'data': 'digits', 'data_dir': None, 'split_seed': 0, 'source': 'sklearn.datasets.load_digits'}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vaezoo.core.config import config_to_dict
from vaezoo.errors import VAEZooError
from vaezoo.io.cards import read_card_metadata
from vaezoo.io.hub import HUB_PREFIX, download_model_dir, parse_hub_source
from vaezoo.io.model_dir import CONFIG_NAME, read_config_json
from vaezoo.zoo.builder import load_model_dir
from vaezoo.zoo.factory import model_info
from vaezoo.zoo.pretrained import pretrained_tag, shipped_weights_dir
from vaezoo.zoo.registry import is_model, split_name

TAG_SPLIT_SEED = 0  # benchmarks/train_zoo.py trains every tag on its dataset's split of seed 0


def is_folder_source(source: str) -> bool:
    """Whether ``source`` names a model directory: an existing folder, or an ``hf-hub:`` id."""
    return source.startswith(HUB_PREFIX) or Path(source).expanduser().is_dir()


def looks_like_path(source: str) -> bool:
    """Whether ``source`` is written as a path (registry names hold no slash), so a missing one is named as such."""
    return "/" in source or os.sep in source or source.startswith((".", "~"))


def source_folder(source: str) -> Path | None:
    """The model directory behind ``source``: the folder itself, a Hub repo's snapshot (downloaded into the
    cache), or a tag's shipped weights; None for a tag whose weights are not shipped, or an architecture."""
    if source.startswith(HUB_PREFIX):
        return download_model_dir(*parse_hub_source(source))
    if Path(source).expanduser().is_dir():
        return Path(source).expanduser()
    if is_model(source) and split_name(source)[1] is not None:
        shipped = shipped_weights_dir(source)
        return shipped if (shipped / CONFIG_NAME).is_file() else None
    return None


def training_data(source: str, folder: Path | None = None) -> dict[str, Any]:
    """The data ``source`` was trained on, as ``vaezoo train`` records it in config.json: ``data`` (the --data
    name or path), ``data_dir``, ``split_seed`` and ``source``; {} when it records none (e.g. a model saved in
    Python). A registry tag without that record names its dataset, split with seed 0 as the zoo's tags are.
    ``folder`` is the model directory when the caller has it already (see :func:`source_folder`)."""
    if folder is not None:
        recorded = read_config_json(folder).get("data")
        if isinstance(recorded, dict) and recorded.get("data"):
            return dict(recorded)
    if not source.startswith(HUB_PREFIX) and not Path(source).expanduser().is_dir() and is_model(source) \
            and split_name(source)[1] is not None:
        return {"data": pretrained_tag(source).dataset, "data_dir": None, "split_seed": TAG_SPLIT_SEED}
    return {}


def source_info(source: str) -> dict[str, Any]:
    """What ``vaezoo info`` shows for a model directory or an ``hf-hub:`` id: the architecture's info
    (class, plugin, capabilities, reported metrics, presets, tags) with the folder's own config and size,
    the data and training settings it records, and its card's figures."""
    if not is_folder_source(source):
        raise VAEZooError(f"{source!r} is not a model directory or an hf-hub:ORG/NAME id; pass a run folder, "
                          "a save_pretrained folder, an hf-hub id or a registry name (`vaezoo list`)")
    folder = source_folder(source)
    assert folder is not None  # a folder source always has one
    saved = read_config_json(folder)
    model = load_model_dir(folder)  # strict, as eval and sample load it: a folder that does not load is an error here
    info = model_info(str(saved["architecture"]))
    info.update(name=source, folder=os.path.abspath(folder), parameters=model.num_parameters(),
                config=config_to_dict(model.config))
    data = training_data(source, folder)
    if data:
        info["data"] = data
    if isinstance(saved.get("train"), dict):
        info["train"] = saved["train"]
    card = read_card_metadata(folder)
    metrics = next((value for key, value in card.items() if key.endswith("_metrics") and isinstance(value, dict)), None)
    if metrics:
        info["card_metrics"] = metrics
    return info
