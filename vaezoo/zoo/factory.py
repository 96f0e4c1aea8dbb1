"""The factory: build or load any model by name, tag, folder or Hub id, and describe it.

>>> import vaezoo
>>> model = vaezoo.create_model("beta-vae", preset="tiny", beta=2.0)
>>> model = vaezoo.from_pretrained("vae-mlp.digits")  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from vaezoo.core.config import config_fields, config_to_dict
from vaezoo.core.distributed import resolve_device
from vaezoo.core.model import VAE
from vaezoo.errors import ConfigError, VAEZooError
from vaezoo.io.hub import HUB_PREFIX
from vaezoo.io.model_dir import check_no_pickles, read_config_json
from vaezoo.zoo.builder import build_model, load_model_dir, preset_overrides, resolve_config
from vaezoo.zoo.pretrained import describe_tag, load_pretrained
from vaezoo.zoo.registry import REGISTRY, get_model_class, is_model, split_name


def create_model(name: str, pretrained: bool = False, preset: str | None = None, *,
                 pretrained_path: str | None = None, pretrained_cfg: dict[str, Any] | None = None, **overrides: Any):
    """Build a model by registry name, with config overrides.

    ``name`` is an arch (``"vae-mlp"``), a pretrained tag (``"vae-mlp.fmnist"``, whose config is
    used) or a Hub id (``"hf-hub:ORG/NAME[@REV]"``, loaded with its weights). ``preset`` applies a
    named config such as ``"tiny"``; ``overrides`` set config fields. With ``pretrained=True`` the
    weights are loaded strictly (see vaezoo.zoo.pretrained for where they are looked for);
    ``pretrained_path`` names a model directory to take them from instead.

    >>> model = create_model("beta-vae", preset="tiny", beta=2.0)
    >>> model.config.beta
    2.0
    >>> model = create_model("vae-mlp.digits", pretrained=True)  # doctest: +SKIP
    """
    if pretrained or name.startswith("hf-hub:"):
        return load_pretrained(name, preset=preset, pretrained_path=pretrained_path, pretrained_cfg=pretrained_cfg,
                               **overrides)
    config = resolve_config(name, preset, **overrides)
    model_class = get_model_class(name)
    model = build_model(model_class, config, name)
    return model


def model_info(name: str) -> dict[str, Any]:
    """What ``vaezoo info`` shows: class, plugin distribution, default config, size, presets, tags and the contract.

    ``capabilities`` maps every :class:`~vaezoo.core.contract.Capabilities` field to the class's value;
    ``reported_metrics`` is the class's ``{name: meaning}`` of the extra figures it reports.
    ``conditional`` and ``log_likelihood`` repeat two capabilities for callers written before them.

    >>> model_info("vq-vae")["capabilities"]["log_likelihood"]
    False
    """
    arch, tag = split_name(name)
    entry = REGISTRY.get(arch)
    model_class = entry.load()
    config = resolve_config(name)
    model = build_model(model_class, config, name)
    doc = (model_class.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "class": f"{model_class.__module__}.{model_class.__qualname__}",
        "distribution": entry.distribution,
        "summary": doc[0] if doc else "",
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": config_to_dict(config),
        "config_fields": list(config_fields(model_class.config_class)),
        "presets": sorted(model_class.presets),
        "pretrained_tags": [f"{arch}.{tag}" for tag in model_class.pretrained_tags],
        "capabilities": asdict(model_class.capabilities),
        "reported_metrics": dict(model_class.reported_metrics),
        "conditional": model_class.is_conditional,  # kept for callers written before "capabilities"
        "log_likelihood": model_class.has_log_likelihood,
        **({"pretrained": _tag_summary(name)} if tag is not None else {}),
    }


def _tag_summary(name: str) -> dict[str, Any]:
    row = describe_tag(name)
    return {"dataset": row["dataset"], "weights": row["weights"], "test_metrics": row["metrics"]}


WEIGHT_SOURCE_KEYWORDS = {"pretrained_path", "pretrained_cfg", "token"}


def from_pretrained(source: str | Path, device: str = "cpu", **kwargs: Any):
    """Load a model from a model directory, ``hf-hub:ORG/NAME[@REV]``, or a registry tag (``hvae.fmnist``).

    Keywords behave the same for every kind of source: ``preset`` and config fields override the saved
    config where they keep the weights' shapes (e.g. ``kl_warmup_steps``); a field that changes a shape,
    or one the variant does not have, is an error naming it. ``pretrained_path``, ``pretrained_cfg`` and
    ``token`` choose where a tag's or Hub id's weights come from.

    >>> model = vaezoo.from_pretrained("vae-mlp.digits")  # doctest: +SKIP
    >>> model = vaezoo.from_pretrained("runs/my-vae", kl_warmup_steps=0)  # doctest: +SKIP
    """
    text = str(source)
    if Path(text).is_dir():
        return _load_folder(text, device, **kwargs)
    if Path(text).is_file():
        check_no_pickles(text)  # a .bin/.pt/.pkl is refused, saying why
        raise VAEZooError(f"{text} is a file; pass the model directory that holds config.json and model.safetensors")
    if text.startswith(HUB_PREFIX) or is_model(text):
        return load_pretrained(text, **kwargs).to(device)
    if "." in text and split_name(text)[0] in REGISTRY.entries:
        resolve_config(text)  # the arch exists but the tag does not: raise with suggestions
    raise VAEZooError(
        f"model source {text!r} is not a model directory, an hf-hub:ORG/NAME id or a registry tag; "
        "run `vaezoo list --pretrained` for the tags"
    )


def _load_folder(folder: str, device: str, preset: str | None = None, **overrides: Any) -> VAE:
    """A model folder with a tag's keywords: ``preset`` and config overrides apply; weight sources do not."""
    misplaced = sorted(set(overrides) & WEIGHT_SOURCE_KEYWORDS)
    if misplaced:
        raise ConfigError(f"{misplaced[0]}= chooses where a registry tag's or hf-hub id's weights come from; "
                          f"{folder} is a model folder already: drop it")
    if preset is not None:
        architecture = read_config_json(folder)["architecture"]
        overrides = {**preset_overrides(get_model_class(architecture), architecture, preset), **overrides}
    return load_model_dir(folder, device=device, **overrides)


def load_model_source(source: str, device: str = "auto") -> Any:
    """A model from a run folder, a registry tag (``hvae.fmnist``) or a Hub id (``hf-hub:ORG/NAME``)."""
    return from_pretrained(source, device=str(resolve_device(device)))
