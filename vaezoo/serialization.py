"""A model directory: ``config.json`` (variant name, config, vaezoo version) and ``model.safetensors``.

The layout follows huggingface_hub's ``PyTorchModelHubMixin``; loading is strict and never unpickles.

>>> import tempfile, vaezoo
>>> model = vaezoo.create_model("vae-mlp", preset="tiny")
>>> folder = tempfile.mkdtemp()
>>> model.save_pretrained(folder)
>>> vaezoo.load_model_dir(folder).config == model.config
True
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, atomic_write_json, load_state_dict_strict, load_tensors, save_tensors
from .config import config_to_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def model_config_json(model: Any) -> dict[str, Any]:
    from . import __version__

    if not model.model_name:
        raise CheckpointError(
            f"this {type(model).__name__} has no registry name; build it with vaezoo.create_model(name) "
            "so that config.json can say which variant to rebuild"
        )
    return {
        "architecture": model.model_name.partition(".")[0],
        "config": config_to_dict(model.config),
        "vaezoo_version": __version__,
    }


def save_model_dir(model: Any, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write config.json and model.safetensors (atomically) into ``directory``.

    ``dtype=torch.float16`` (or bfloat16) stores floating tensors at half size; loading casts them back.
    """
    directory = Path(directory)
    config = model_config_json(model)
    tensors = {
        name: tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        for name, tensor in model.state_dict().items()
    }
    save_tensors(directory / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_NAME, config)
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


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu", *,
                   expected_architecture: str | None = None, **overrides: Any) -> Any:
    """Rebuild the model named in config.json and load model.safetensors strictly.

    ``overrides`` may change config fields that keep the weights' shapes (e.g. ``kl_warmup_steps``);
    one that changes a shape is a clear error naming the mismatching tensors.
    """
    from .config import config_from_dict, replace_config
    from .errors import UnknownModelError
    from .registry import build_model, get_model_class

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    check_no_pickles(directory)
    data = read_config_json(directory)
    architecture = data["architecture"]
    if expected_architecture is not None and architecture != expected_architecture:
        raise CheckpointError(
            f"{directory} holds a {architecture!r} model, not {expected_architecture!r}; pass the matching name"
        )
    try:
        model_class = get_model_class(architecture)
    except UnknownModelError as error:
        raise UnknownModelError(
            f"{directory / CONFIG_NAME} names a variant that is not installed: {error}; "
            "install the plugin that provides it"
        ) from None
    config = config_from_dict(model_class.config_class, data["config"], source=str(directory / CONFIG_NAME))
    if overrides:
        config = replace_config(config, source="overrides", **overrides)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file() and (directory / "checkpoints" / "last.safetensors").is_file():
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_NAME} yet: its training has not finished; continue it with "
            f"`vaezoo train {architecture} --resume --out {directory}`"
        )
    model = build_model(model_class, config, architecture)
    model.model_name = architecture
    load_state_dict_strict(model, load_tensors(weights), source=str(weights))
    return model.to(device).eval()
