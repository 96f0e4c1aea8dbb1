"""A pretrained tag's metadata, kept apart from the architecture (as timm's PretrainedCfg). Imports only vaezoo's errors."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vaezoo.errors import ConfigError


@dataclass(frozen=True)
class PretrainedTag:
    """Metadata of a pretrained tag ``name.tag``, kept apart from the architecture (as timm does).

    The types are checked when the tag is made, so a plugin that declares a bad one fails as it is
    imported (and is reported as broken) rather than in the middle of ``vaezoo list --pretrained``.

    >>> PretrainedTag({"latent_dim": 8}, dataset="digits", recipe={"epochs": 200}).dataset
    'digits'
    """

    config: dict[str, Any]  # overrides applied to the variant's default config
    dataset: str  # what it was trained on, e.g. "fashion-mnist"
    hf_hub_id: str | None = None  # Hub repo holding the weights, e.g. "vaezoo/vae-mlp.fmnist"
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields it was trained with
    description: str = ""
    # Weights kept in another library's layout in the Hub repo: its subfolder ("vae") and the files to fetch there
    # (JSON and safetensors only), read by the variant's ``from_foreign_folder``. Empty: a vaezoo model folder at the root.
    hub_subfolder: str = ""
    hub_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("config", "recipe"):
            value = getattr(self, name)
            if not (isinstance(value, Mapping) and all(isinstance(key, str) for key in value)):
                raise ConfigError(f"PretrainedTag {name}={value!r:.80} must be a dict of field names to values, "
                                  f"e.g. {{'latent_dim': 8}}")
        if not (isinstance(self.dataset, str) and self.dataset):
            raise ConfigError(f"PretrainedTag dataset={self.dataset!r:.80} must name the dataset, e.g. 'digits'")
        if self.hf_hub_id is not None and not (isinstance(self.hf_hub_id, str) and self.hf_hub_id.strip()):
            raise ConfigError(f"PretrainedTag hf_hub_id={self.hf_hub_id!r:.80} must be a Hub repo id ORG/NAME, or None")
        if not isinstance(self.description, str):
            raise ConfigError(f"PretrainedTag description={self.description!r:.80} must be a string")
        if not isinstance(self.hub_subfolder, str) or ".." in self.hub_subfolder.split("/") or self.hub_subfolder[:1] == "/":
            raise ConfigError(f"PretrainedTag hub_subfolder={self.hub_subfolder!r:.80} must be a relative folder in the repo")
        if not (isinstance(self.hub_files, tuple) and all(isinstance(name, str) and name.endswith((".json", ".safetensors"))
                                                          and "/" not in name for name in self.hub_files)):
            raise ConfigError(f"PretrainedTag hub_files={self.hub_files!r:.80} must be a tuple of .json and .safetensors "
                              "file names (no pickle is ever fetched), e.g. ('config.json', 'model.safetensors')")
