"""A pretrained tag's metadata, kept apart from the architecture (as timm's PretrainedCfg). Imports nothing of vaezoo."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PretrainedTag:
    """Metadata of a pretrained tag ``name.tag``, kept apart from the architecture (as timm does)."""

    config: dict[str, Any]  # overrides applied to the variant's default config
    dataset: str  # what it was trained on, e.g. "fashion-mnist"
    hf_hub_id: str | None = None  # Hub repo holding the weights, e.g. "vaezoo/vae-mlp.fmnist"
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields it was trained with
    description: str = ""
