"""Model cards: README.md with huggingface_hub's card metadata and vaezoo's own block (name, dataset, metrics)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from vaezoo.io.atomic import atomic_write_text
from vaezoo.io.model_dir import CARD_NAME

logger = logging.getLogger(__name__)


def card_text_for(*, name: str, dataset: str, metrics: dict[str, Any], command: str, description: str = "",
                  split: str = "test") -> str:
    """A card's text: huggingface_hub's YAML metadata (library_name, tags, datasets, metrics), then markdown."""
    arch = name.partition(".")[0]
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
        "```python",
        "import vaezoo",
        f'model = vaezoo.create_model("{name}", pretrained=True)',
        "samples = model.sample(16)",
        "```",
        "",
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def _cell(value: Any) -> str:
    """A metric for the card's table: floats to 3 decimals, a dict of them (e.g. per layer) as ``a=1.000, b=2.000``."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_model_card(directory: str | Path, *, name: str, dataset: str, metrics: dict[str, Any],
                     command: str, description: str = "", split: str = "test") -> Path:
    """Write README.md (atomically) with :func:`card_text_for`'s text."""
    path = Path(directory) / CARD_NAME
    text = card_text_for(name=name, dataset=dataset, metrics=metrics, command=command, description=description, split=split)
    atomic_write_text(path, str(ModelCard(text)))
    return path


def read_card_metadata(directory: str | Path) -> dict[str, Any]:
    """The ``vaezoo`` block of a model card's YAML (name, dataset, test_metrics), or {} without a card."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return {}
    try:
        card = ModelCard.load(path)
    except Exception as error:  # a hand-edited card with broken YAML must not break loading
        logger.warning("cannot read the model card %s: %s", path, error)
        return {}
    return dict(card.data.to_dict().get("vaezoo") or {})


def card_body(directory: str | Path) -> str:
    """The card in ``directory`` without its YAML header, or "" when there is none."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    if text.startswith("---"):
        text = text.split("---", 2)[-1]
    return text.strip()
