"""Where a pretrained tag's weights are found, and loading them.

A tag's weights are resolved as timm does: an explicit override (``pretrained_path=`` a model
directory, or a ``pretrained_cfg`` overlay naming another ``hf_hub_id``), then the weights shipped
inside the installed plugin package (``<plugin package>/weights/<arch>.<tag>/``, so the zoo works
offline on a fresh machine), then the Hub repo named by the tag through huggingface_hub's cache
(which honours ``HF_HUB_OFFLINE``).

    >>> model = vaezoo.create_model("hvae.fmnist", pretrained=True)        # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from vaezoo.errors import PretrainedUnavailableError, VAEZooError
from vaezoo.io.cards import card_body, read_card_metadata
from vaezoo.io.hub import HUB_PREFIX, download_model_dir, parse_hub_source
from vaezoo.io.model_dir import WEIGHTS_NAME
from vaezoo.zoo.builder import load_model_dir, preset_overrides, resolve_config
from vaezoo.zoo.registry import REGISTRY, get_model_class, split_name
from vaezoo.zoo.tags import PretrainedTag


def shipped_weights_dir(name: str) -> Path:
    """Where the plugin that defines ``arch.tag`` ships its weights: ``<its package>/weights/<arch>.<tag>/``."""
    model_class = get_model_class(name)
    module_file = getattr(sys.modules[model_class.__module__], "__file__", None) or ""
    return Path(module_file).parent / "weights" / name


def default_tag_name(name: str) -> str:
    """``name`` itself when it has a tag, else the arch's first tag (the default, as in timm)."""
    arch, tag = split_name(name)
    if tag is not None:
        return name
    tags = get_model_class(arch).pretrained_tags
    if not tags:
        raise PretrainedUnavailableError(f"{arch!r} has no pretrained tags; build it with pretrained=False")
    return f"{arch}.{next(iter(tags))}"


def pretrained_tag(name: str) -> PretrainedTag:
    """The PretrainedTag behind ``arch.tag`` (or the arch's default tag)."""
    arch, tag = split_name(default_tag_name(name))
    resolve_config(f"{arch}.{tag}")
    return get_model_class(arch).pretrained_tags[tag]


def resolve_pretrained_dir(name: str, pretrained_path: str | Path | None = None,
                           pretrained_cfg: dict[str, Any] | None = None, token: str | None = None) -> Path:
    """The model directory holding ``name``'s weights, by timm's order (see the module docstring)."""
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not path.is_dir():
            raise PretrainedUnavailableError(f"pretrained_path={str(path)!r} is not a model directory")
        return path
    tag_name = default_tag_name(name)
    tag = _tag_with_overlay(tag_name, pretrained_cfg)
    if not pretrained_cfg:
        shipped = shipped_weights_dir(tag_name)
        if (shipped / WEIGHTS_NAME).is_file():
            return shipped
    if tag.hf_hub_id:
        repo_id, revision = parse_hub_source(HUB_PREFIX + tag.hf_hub_id)
        try:
            return download_model_dir(repo_id, revision, token=token, subfolder=tag.hub_subfolder,
                                      filenames=tag.hub_files)
        except VAEZooError as error:
            raise PretrainedUnavailableError(
                f"no weights for {tag_name!r}: none ship with the installed package and the Hub copy failed ({error})"
            ) from None
    raise PretrainedUnavailableError(
        f"no weights for {tag_name!r}: none ship with the installed package and the tag names no Hub repo; "
        "pass pretrained_path= a model directory"
    )


def _tag_with_overlay(tag_name: str, pretrained_cfg: dict[str, Any] | None) -> PretrainedTag:
    """The tag's metadata with a ``pretrained_cfg`` overlay applied (timm's), its keys checked."""
    tag = pretrained_tag(tag_name)
    if not pretrained_cfg:
        return tag
    fields = {f.name for f in dataclasses.fields(PretrainedTag)}
    unknown = sorted(set(pretrained_cfg) - fields)
    if unknown:
        raise PretrainedUnavailableError(f"pretrained_cfg has unknown keys {unknown}; use {', '.join(sorted(fields))}")
    return dataclasses.replace(tag, **pretrained_cfg)


def load_pretrained(name: str, preset: str | None = None, pretrained_path: str | Path | None = None,
                    pretrained_cfg: dict[str, Any] | None = None, token: str | None = None, **overrides: Any):
    """Build ``name`` (a tag, an arch, or an hf-hub id) from its weights' config.json and load them strictly.

    ``preset`` and ``overrides`` may change fields that keep the weights' shapes (see load_model_dir).
    """
    if name.startswith(HUB_PREFIX):
        return load_model_dir(download_model_dir(*parse_hub_source(name), token=token), **overrides)
    tag_name = default_tag_name(name)
    arch = split_name(tag_name)[0]
    if preset is not None:
        overrides = {**preset_overrides(get_model_class(arch), arch, preset), **overrides}
    directory = resolve_pretrained_dir(name, pretrained_path, pretrained_cfg, token)
    if _tag_with_overlay(tag_name, pretrained_cfg).hub_files and not (directory / WEIGHTS_NAME).is_file():
        # Another library's layout (the tag's hub_files): the variant converts it (VAEHubMixin.from_foreign_folder).
        model = get_model_class(arch).from_foreign_folder(directory, resolve_config(tag_name, **overrides)).eval()
    else:
        model = load_model_dir(directory, expected_architecture=arch, **overrides)
    model.pretrained_tag = split_name(tag_name)[1]  # which tag's weights it holds, for cards and messages
    return model


def describe_tag(name: str) -> dict[str, Any]:
    """What ``vaezoo list --pretrained`` shows: dataset, headline test metrics, where the weights are.

    The metrics come from the shipped model card; a card that cannot be read safely, or a metric in
    it that is not a number, is left out with one warning naming the tag and its distribution.
    """
    tag = pretrained_tag(name)
    shipped = shipped_weights_dir(name)
    distribution = REGISTRY.get(split_name(name)[0]).distribution
    context = f"shipped with tag {name!r} by distribution {distribution!r}: upgrade or reinstall it"
    metrics = read_card_metadata(shipped, context).get("test_metrics", {}) if shipped.is_dir() else {}
    weights = "shipped" if (shipped / "model.safetensors").is_file() else (f"hub:{tag.hf_hub_id}" if tag.hf_hub_id else "none")
    return {"dataset": tag.dataset, "nll": metrics.get("nll"), "neg_elbo": metrics.get("neg_elbo"), "weights": weights,
            "metrics": metrics}


def tag_card_text(name: str) -> str:
    """The shipped model card of ``arch.tag`` without its YAML header, or "" when none ships."""
    return card_body(shipped_weights_dir(name))
