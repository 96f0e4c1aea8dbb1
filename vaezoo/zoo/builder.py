"""Building a variant from a config, and a model folder to a model and back (timm's _builder).

>>> import tempfile, vaezoo
>>> model = vaezoo.create_model("vae-mlp", preset="tiny")
>>> folder = tempfile.mkdtemp()
>>> model.save_pretrained(folder)
>>> vaezoo.load_model_dir(folder).config == model.config
True
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaezoo.core.config import replace_config
from vaezoo.core.hub_mixin import load_model_folder
from vaezoo.core.model import VAE
from vaezoo.core.sizes import check_model_size
from vaezoo.errors import CheckpointError, ConfigError, PluginError, UnknownModelError, VAEZooError, did_you_mean
from vaezoo.io.model_dir import CONFIG_NAME, check_no_pickles, read_config_json
from vaezoo.zoo.registry import REGISTRY, get_model_class, split_name


def build_model(model_class: type, config: Any, name: str) -> Any:
    """``model_class(config)``, turning a failure inside the variant's constructor into one clear error.

    A config too large to build (over :data:`vaezoo.core.sizes.MAX_PARAMETERS`, counted on the meta
    device) or running out of memory is a ConfigError; any other non-vaezoo exception is the variant's
    bug, reported as a PluginError that names where the class comes from.
    """
    check_model_size(model_class, config, name)
    try:
        return model_class(config)
    except VAEZooError:
        raise
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, MemoryError) or "allocate" in str(error):
            raise ConfigError(
                f"{name!r} with this config needs more memory than there is ({' '.join(str(error).split())[:160]}); "
                "use smaller sizes (hidden_dims, latent_dim, conv_channels)"
            ) from None
        raise _constructor_error(model_class, name, error) from None
    except Exception as error:
        raise _constructor_error(model_class, name, error) from None


def _constructor_error(model_class: type, name: str, error: Exception) -> PluginError:
    entry = REGISTRY.entries.get(split_name(name)[0])
    origin = f"distribution {entry.distribution!r}" if entry is not None else model_class.__module__
    return PluginError(
        f"building {name!r} ({model_class.__module__}.{model_class.__qualname__}, from {origin}) failed: "
        f"{type(error).__name__}: {' '.join(str(error).split())}; report it to the variant's authors"
    )


def resolve_config(name: str, preset: str | None = None, **overrides: Any):
    """The config ``create_model(name, preset=..., **overrides)`` would build, without building it."""
    arch, tag = split_name(name)
    model_class = get_model_class(arch)
    config = model_class.config_class()
    if tag is not None:
        if tag not in model_class.pretrained_tags:
            tags = [f"{arch}.{t}" for t in model_class.pretrained_tags]
            raise UnknownModelError(
                f"unknown pretrained tag {name!r}" + did_you_mean(name, tags)
                + (f"; tags of {arch!r}: {', '.join(tags)}" if tags else f"; {arch!r} has no pretrained tags")
            )
        config = replace_config(config, source=f"pretrained tag {name!r}", **model_class.pretrained_tags[tag].config)
    if preset is not None:
        config = replace_config(config, source=f"preset {preset!r}", **preset_overrides(model_class, arch, preset))
    if overrides:
        config = replace_config(config, source="overrides", **overrides)
    return config


def preset_overrides(model_class: type, arch: str, preset: str) -> dict[str, Any]:
    if preset not in model_class.presets:
        raise ConfigError(
            f"unknown preset {preset!r} for {arch!r}" + did_you_mean(preset, model_class.presets)
            + f"; presets: {', '.join(model_class.presets) or 'none'}"
        )
    return model_class.presets[preset]


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu", *,
                   expected_architecture: str | None = None, **overrides: Any) -> VAE:
    """Rebuild the variant named in config.json and load model.safetensors strictly.

    ``overrides`` may change config fields that keep the weights' shapes (e.g. ``kl_warmup_steps``);
    one that changes a shape is a clear error naming the mismatching tensors.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    check_no_pickles(directory)
    architecture = read_config_json(directory)["architecture"]
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
    return load_model_folder(model_class, directory, architecture=architecture, device=device,
                             build=lambda config: build_model(model_class, config, architecture), **overrides)


def save_model_dir(model: VAE, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """``model.save_pretrained(directory, dtype=dtype)``: config.json, model.safetensors and a card."""
    model.save_pretrained(directory, dtype=dtype)
    return Path(directory)
