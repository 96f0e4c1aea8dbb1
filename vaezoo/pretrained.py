"""Pretrained weights by name: model cards, where a tag's weights are found, and ``from_pretrained``.

    >>> import vaezoo
    >>> model = vaezoo.create_model("hvae.fmnist", pretrained=True)        # doctest: +SKIP
    >>> model = vaezoo.from_pretrained("runs/my-vae")                      # a model directory
    >>> model = vaezoo.from_pretrained("hf-hub:someone/my-vae@main")      # doctest: +SKIP

A tag's weights are resolved as timm does: an explicit override (``pretrained_path=`` a model
directory, or a ``pretrained_cfg`` overlay naming another ``hf_hub_id``), then the weights shipped
inside the installed plugin package (``<plugin package>/weights/<arch>.<tag>/``, so the zoo works
offline on a fresh machine), then the Hub repo named by the tag through huggingface_hub's cache
(which honours ``HF_HUB_OFFLINE``).
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import PretrainedUnavailableError, VAEZooError
from .hub import CARD_NAME, HUB_PREFIX, download_model_dir, parse_hub_source
from .model import PretrainedTag
from .registry import get_model_class, preset_overrides, split_name

logger = logging.getLogger(__name__)


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
    from .registry import resolve_config  # raises UnknownModelError with suggestions for a bad tag

    arch, tag = split_name(default_tag_name(name))
    resolve_config(f"{arch}.{tag}")
    return get_model_class(arch).pretrained_tags[tag]


def resolve_pretrained_dir(name: str, pretrained_path: str | Path | None = None,
                           pretrained_cfg: dict[str, Any] | None = None) -> Path:
    """The model directory holding ``name``'s weights, by timm's order (see the module docstring)."""
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not path.is_dir():
            raise PretrainedUnavailableError(f"pretrained_path={str(path)!r} is not a model directory")
        return path
    tag_name = default_tag_name(name)
    tag = pretrained_tag(tag_name)
    if pretrained_cfg:
        fields = {f.name for f in dataclasses.fields(PretrainedTag)}
        unknown = sorted(set(pretrained_cfg) - fields)
        if unknown:
            raise PretrainedUnavailableError(
                f"pretrained_cfg has unknown keys {unknown}; use {', '.join(sorted(fields))}"
            )
        tag = dataclasses.replace(tag, **pretrained_cfg)
    else:
        shipped = shipped_weights_dir(tag_name)
        if (shipped / "model.safetensors").is_file():
            return shipped
    if tag.hf_hub_id:
        repo_id, revision = parse_hub_source(HUB_PREFIX + tag.hf_hub_id)
        try:
            return download_model_dir(repo_id, revision)
        except VAEZooError as error:
            raise PretrainedUnavailableError(
                f"no weights for {tag_name!r}: none ship with the installed package and the Hub copy failed ({error})"
            ) from None
    raise PretrainedUnavailableError(
        f"no weights for {tag_name!r}: none ship with the installed package and the tag names no Hub repo; "
        "pass pretrained_path= a model directory"
    )


def load_pretrained(name: str, preset: str | None = None, pretrained_path: str | Path | None = None,
                    pretrained_cfg: dict[str, Any] | None = None, token: str | None = None, **overrides: Any):
    """Build ``name`` (a tag, an arch, or an hf-hub id) from its weights' config.json and load them strictly.

    ``preset`` and ``overrides`` may change fields that keep the weights' shapes (see load_model_dir).
    """
    from .serialization import load_model_dir

    if name.startswith(HUB_PREFIX):
        return load_model_dir(download_model_dir(*parse_hub_source(name), token=token), **overrides)
    tag_name = default_tag_name(name)
    arch = split_name(tag_name)[0]
    if preset is not None:
        overrides = {**preset_overrides(get_model_class(arch), arch, preset), **overrides}
    directory = resolve_pretrained_dir(name, pretrained_path, pretrained_cfg)
    model = load_model_dir(directory, expected_architecture=arch, **overrides)
    model.model_name = tag_name
    return model


def from_pretrained(source: str | Path, device: str = "cpu", **kwargs: Any):
    """Load a model from a model directory, ``hf-hub:ORG/NAME[@REV]``, or a registry tag (``hvae.fmnist``).

    >>> model = vaezoo.from_pretrained("vae-mlp.digits")  # doctest: +SKIP
    """
    from .registry import REGISTRY, is_model, resolve_config
    from .serialization import load_model_dir

    text = str(source)
    if Path(text).is_dir():
        return load_model_dir(text, device=device)
    if Path(text).is_file():
        from .serialization import check_no_pickles

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


# --- model cards ------------------------------------------------------------------------------
def write_model_card(directory: str | Path, *, name: str, dataset: str, metrics: dict[str, Any],
                     command: str, description: str = "", split: str = "test") -> Path:
    """Write README.md with huggingface_hub's card metadata (library_name, tags, datasets, metrics)."""
    from huggingface_hub import ModelCard, ModelCardData

    arch = split_name(name)[0]
    data = ModelCardData(
        library_name="vaezoo",
        tags=["vaezoo", "variational-autoencoder", arch],
        datasets=[dataset],
        metrics=sorted(k for k in ("neg_elbo", "nll") if k in metrics),
        license="apache-2.0",
    )
    data.vaezoo = {"name": name, "dataset": dataset, "split": split, f"{split}_metrics": metrics}  # read by list/info
    lines = [
        f"# {name}",
        "",
        description or f"A `{arch}` variational autoencoder trained by vaezoo on {dataset}.",
        "",
        f"## {split.capitalize()} metrics (nats per example)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()),
        "",
        "## Training",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Usage",
        "",
        "```python",
        "import vaezoo",
        f'model = vaezoo.create_model("{name}", pretrained=True)',
        "samples = model.sample(16)",
        "```",
        "",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = Path(directory) / CARD_NAME
    from .checkpoint import atomic_write_text

    atomic_write_text(path, str(card))
    return path


def read_card_metadata(directory: str | Path) -> dict[str, Any]:
    """The ``vaezoo`` block of a model card's YAML (name, dataset, test_metrics), or {} without a card."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(path)
    except Exception as error:  # a hand-edited card with broken YAML must not break loading
        logger.warning("cannot read the model card %s: %s", path, error)
        return {}
    return dict(card.data.to_dict().get("vaezoo") or {})


def describe_tag(name: str) -> dict[str, Any]:
    """What ``vaezoo list --pretrained`` shows: dataset, headline test metrics, where the weights are."""
    tag = pretrained_tag(name)
    shipped = shipped_weights_dir(name)
    metrics = read_card_metadata(shipped).get("test_metrics", {}) if shipped.is_dir() else {}
    weights = "shipped" if (shipped / "model.safetensors").is_file() else (f"hub:{tag.hf_hub_id}" if tag.hf_hub_id else "none")
    return {"dataset": tag.dataset, "nll": metrics.get("nll"), "neg_elbo": metrics.get("neg_elbo"), "weights": weights,
            "metrics": metrics}


def tag_card_text(name: str) -> str:
    """The shipped model card of ``arch.tag`` without its YAML header, or "" when none ships."""
    path = shipped_weights_dir(name) / CARD_NAME
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    if text.startswith("---"):
        text = text.split("---", 2)[-1]
    return text.strip()
