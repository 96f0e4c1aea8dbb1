"""The model folder: ``config.json`` (variant name, config, vaezoo version), ``model.safetensors`` and a ``README.md`` card.

The layout is huggingface_hub's ``ModelHubMixin``'s. This module reads and writes the files as dicts and
tensors; building the model they describe is vaezoo.zoo's job. Loading is strict and never unpickles.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vaezoo._version import __version__
from vaezoo.errors import CheckpointError
from vaezoo.io.atomic import atomic_write_json
from vaezoo.io.tensors import save_tensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def model_config_json(architecture: str, config: dict[str, Any]) -> dict[str, Any]:
    """What config.json holds: the registry name of the variant, its config and the vaezoo version."""
    return {"architecture": architecture, "config": config, "vaezoo_version": __version__}


def write_model_dir(directory: str | Path, architecture: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    dtype: torch.dtype | None = None) -> Path:
    """Write config.json and model.safetensors (atomically) into ``directory``.

    ``dtype=torch.float16`` (or bfloat16) stores floating tensors at half size; loading casts them back.
    """
    directory = Path(directory)
    tensors = {
        name: tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        for name, tensor in state_dict.items()
    }
    save_tensors(directory / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_NAME, model_config_json(architecture, config))
    return directory


def read_config_json(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}; a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); restore it or re-export the model") from None
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), str) or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{path} lacks 'architecture' and 'config'; it was not written by vaezoo")
    return data


def check_no_pickles(directory: str | Path) -> None:
    """Refuse a weights source that is, or offers only, pickle files: unpickling can run arbitrary code."""
    path = Path(directory)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"{path} is a pickle-format file: vaezoo loads safetensors only, since unpickling can run arbitrary "
                "code; convert it with safetensors.torch.save_file in a trusted environment"
            )
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{path} holds {', '.join(pickles)} but no {WEIGHTS_NAME}: vaezoo loads safetensors only, "
            "since unpickling a file can run arbitrary code; convert the weights with safetensors.torch.save_file"
        )
