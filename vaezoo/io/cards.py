"""Model cards: README.md with huggingface_hub's card metadata and vaezoo's own block (name, dataset, metrics).

A card comes with a plugin or a download, so reading one is defensive: at most MAX_HEADER_BYTES of
YAML header, parsed with yaml's safe loader and no aliases (a billion-laughs header would expand
to gigabytes), and metrics kept only where they are numbers. What cannot be read is left out with
one warning naming the card.
"""
from __future__ import annotations

import json
import logging
import shlex
import warnings
from pathlib import Path
from typing import Any

import yaml  # huggingface_hub's own dependency, which its cards are written with
from huggingface_hub import ModelCard, ModelCardData

from vaezoo.io.atomic import atomic_write_text
from vaezoo.io.model_dir import CARD_NAME

logger = logging.getLogger(__name__)
MAX_HEADER_BYTES = 64 * 1024  # vaezoo's cards have headers of about 1 KB
MAX_CARD_BYTES = 1024 * 1024  # what `vaezoo info` shows of a card's text


def card_text_for(*, name: str, dataset: str, metrics: dict[str, Any], command: str, description: str = "",
                  split: str = "test", source: str | None = None) -> str:
    """A card's text: huggingface_hub's YAML metadata (library_name, tags, datasets, metrics), then markdown.

    ``source`` is what loads the model (a run folder's path, a tag, ``hf-hub:ORG/NAME``), shown in the
    card's usage snippet; without it a tag loads by its name and anything else by its folder's path.
    """
    arch = name.partition(".")[0]
    kind = "variational autoencoder" if "neg_elbo" in metrics else "autoencoder"  # wae has no ELBO: not variational
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
        description or f"A `{arch}` {kind} trained by vaezoo on {dataset}.",
        "",
        f"## {split.capitalize()} metrics (nats per example)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in metrics.items()),
        "",
        "## Training",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Usage",
        "",
        *usage_lines(source or (name if "." in name else None)),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def usage_lines(source: str | None) -> list[str]:
    """The card's usage snippet: load ``source`` in Python and from the shell (a folder's path when None)."""
    if source is None:
        return ["```python", "import vaezoo", 'model = vaezoo.from_pretrained("path/to/this/folder")  # or "hf-hub:ORG/NAME"',
                "samples = model.sample(16)", "```", ""]
    return ["```python", "import vaezoo", f"model = vaezoo.from_pretrained({json.dumps(source)})",
            "samples = model.sample(16)", "```", "", "```bash", f"vaezoo sample {shlex.quote(source)} --n 16 -o samples.png",
            f"vaezoo eval {shlex.quote(source)}", "```", ""]


def _cell(value: Any) -> str:
    """A metric for the card's table: floats to 3 decimals, a dict of them (e.g. per layer) as ``a=1.000, b=2.000``."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_model_card(directory: str | Path, *, name: str, dataset: str, metrics: dict[str, Any],
                     command: str, description: str = "", split: str = "test", source: str | None = None) -> Path:
    """Write README.md (atomically) with :func:`card_text_for`'s text."""
    path = Path(directory) / CARD_NAME
    text = card_text_for(name=name, dataset=dataset, metrics=metrics, command=command, description=description, split=split,
                         source=source)
    atomic_write_text(path, str(ModelCard(text)))
    return path


def read_card_metadata(directory: str | Path, context: str = "fix the card's YAML header") -> dict[str, Any]:
    """The ``vaezoo`` block of a model card's YAML (name, dataset, test_metrics), or {} without a card.

    A card that cannot be read safely gives {} and a metric that is not a number (or a dict of numbers,
    such as one per layer) is left out, each with one warning naming the card; ``context`` says who
    ships it and the fix.
    """
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return {}
    try:
        block = _vaezoo_block(_card_header(path))
    except ValueError as problem:
        warnings.warn(f"model card {path}: {problem}; its metadata is ignored ({context})", RuntimeWarning, stacklevel=2)
        return {}
    dropped = []
    for key in [key for key in block if key.endswith("_metrics")]:
        metrics = block[key] if isinstance(block[key], dict) else {}
        dropped += [f"{key}[{name!r}]={value!r:.40}" for name, value in metrics.items() if not _is_metric(value)]
        block[key] = {name: value for name, value in metrics.items() if _is_metric(value)}
    if dropped:
        warnings.warn(f"model card {path}: {', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} not a number; "
                      f"left out ({context})", RuntimeWarning, stacklevel=2)
    return block


def _card_header(path: Path) -> str:
    """The YAML between a card's leading ``---`` lines, read no further than MAX_HEADER_BYTES."""
    with open(path, "rb") as file:
        head = file.read(MAX_HEADER_BYTES + 8).decode("utf-8", errors="replace")
    if not head.startswith("---"):
        raise ValueError("it has no YAML header (a first line ---)")
    end = head.find("\n---", 3)
    if end < 0:
        raise ValueError(f"its YAML header does not end within {MAX_HEADER_BYTES // 1024} KB")
    return head[3:end]


class _NoAliasLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing aliases: a header of a few KB cannot expand into gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError(f"it uses the YAML alias *{self.peek_event().anchor}, which vaezoo does not expand")
        return super().compose_node(parent, index)


def _vaezoo_block(header: str) -> dict[str, Any]:
    try:
        data = yaml.load(header, Loader=_NoAliasLoader)  # a safe loader: plain data only, no aliases
    except (yaml.YAMLError, RecursionError, ValueError) as error:
        raise ValueError(" ".join(str(error).split())[:200]) from None
    block = data.get("vaezoo") if isinstance(data, dict) else None
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ValueError(f"its vaezoo entry is a {type(block).__name__}, not a mapping")
    return dict(block)


def _is_metric(value: Any) -> bool:
    """A number (not a bool), or a dict of numbers such as kl_per_layer."""
    if isinstance(value, dict):
        return bool(value) and all(_is_metric(part) and not isinstance(part, dict) for part in value.values())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def card_body(directory: str | Path) -> str:
    """The card in ``directory`` without its YAML header (its first MAX_CARD_BYTES), or "" when there is none."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return ""
    with open(path, "rb") as file:
        text = file.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")
    if text.startswith("---"):
        text = text.split("---", 2)[-1]
    return text.strip()
