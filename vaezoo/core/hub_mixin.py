"""save_pretrained / from_pretrained / push_to_hub for every variant, through huggingface_hub's ModelHubMixin hooks.

vaezoo implements the mixin's ``_save_pretrained`` and ``_from_pretrained`` itself instead of using
``PyTorchModelHubMixin``, whose loading is non-strict and falls back to pickle: here weights are
safetensors only, loaded strictly (every key, every shape, no NaN), and config.json names the variant.

>>> import tempfile, vaezoo
>>> from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig
>>> folder = tempfile.mkdtemp()
>>> VanillaVAE(VanillaVAEConfig(latent_dim=4)).save_pretrained(folder)
>>> VanillaVAE.from_pretrained(folder).config.latent_dim
4
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import ModelCard, ModelHubMixin

from vaezoo.core.config import config_from_dict, config_to_dict, replace_config
from vaezoo.core.sizes import check_weights_fit
from vaezoo.errors import CheckpointError
from vaezoo.io.cards import card_text_for
from vaezoo.io.folders import replace_folder
from vaezoo.io.hub import HUB_PREFIX, download_model_dir, parse_hub_source, upload_model_dir
from vaezoo.io.model_dir import CONFIG_NAME, WEIGHTS_NAME, check_no_pickles, read_config_json, write_model_dir
from vaezoo.io.tensors import load_state_dict_strict, load_tensors

ModelT = TypeVar("ModelT", bound="VAEHubMixin")


def load_model_folder(model_class: type[ModelT], directory: str | Path, *, architecture: str | None = None,
                      build: Callable[[Any], ModelT] | None = None, device: str | torch.device = "cpu",
                      **overrides: Any) -> ModelT:
    """Build ``model_class`` from ``directory``'s config.json (plus ``overrides``) and load its weights strictly.

    ``architecture`` is the name config.json must give (default: the class's ``registry_name``);
    ``build`` turns the config into a model (default: the class itself). ``overrides`` may change
    fields that keep the weights' shapes; one that changes a shape is a clear error naming the tensors.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    check_no_pickles(directory)
    data = read_config_json(directory)
    expected = architecture or model_class.registry_name
    if expected is not None and data["architecture"] != expected:
        raise CheckpointError(f"{directory} holds a {data['architecture']!r} model, not {expected!r}; "
                              "pass the matching name or class")
    config = config_from_dict(model_class.config_class, data["config"], source=str(directory / CONFIG_NAME))
    if overrides:
        config = replace_config(config, source="overrides", **overrides)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file() and (directory / "checkpoints" / "last.safetensors").is_file():
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_NAME} yet: its training has not finished; continue it with "
            f"`vaezoo train {data['architecture']} --resume --out {directory}`"
        )
    check_weights_fit(model_class, config, weights)  # from the file's header, before a real model is allocated
    model = (build or model_class)(config)
    load_state_dict_strict(model, load_tensors(weights), source=str(weights))
    return model.to(device).eval()


class VAEHubMixin(ModelHubMixin, library_name="vaezoo", tags=["vaezoo", "variational-autoencoder"]):
    """The model-folder and Hub half of the VAE contract; see the module docstring."""

    registry_name = None  # the variant's name in the registry, e.g. "vae-mlp"; config.json's "architecture"
    pretrained_tag = None  # e.g. "fmnist" when loaded from the tag vae-mlp.fmnist; set by the loader

    def architecture_name(self) -> str:
        name = type(self).registry_name
        if not name:
            raise CheckpointError(
                f"{type(self).__name__} has no registry_name, so config.json could not say which variant to rebuild; "
                f"set registry_name = 'my-vae' in the class, or register it (vaezoo.register_model)"
            )
        return name

    def _save_pretrained(self, save_directory: Path) -> None:
        """config.json and model.safetensors (the mixin adds the README.md card if the folder has none)."""
        write_model_dir(save_directory, self.architecture_name(), config_to_dict(self.config), self.state_dict())

    def save_pretrained(self, save_directory: str | Path, *, dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        """Write config.json, model.safetensors and a README.md card (unless the folder has one) to ``save_directory``.

        The folder is replaced as a whole (vaezoo.io.folders): a crash or kill at any moment leaves the
        old model or the new one, never new weights beside an old config.json. Other files in it stay.
        ``dtype=torch.float16`` (or bfloat16) stores floating tensors at half size; loading casts them back.

        >>> model.save_pretrained("my-vae")  # doctest: +SKIP
        """
        architecture = self.architecture_name()

        def fill(staging: Path) -> None:
            if dtype is None:
                ModelHubMixin.save_pretrained(self, staging, **kwargs)  # our _save_pretrained, then the card
            else:
                write_model_dir(staging, architecture, config_to_dict(self.config), self.state_dict(), dtype=dtype)

        replace_folder(save_directory, fill, replaced=(CONFIG_NAME, WEIGHTS_NAME))

    @classmethod
    def _from_pretrained(cls: type[ModelT], *, model_id: str, revision: str | None = None,
                         cache_dir: str | Path | None = None, force_download: bool = False,
                         local_files_only: bool = False, token: str | bool | None = None,
                         device: str | torch.device = "cpu", **overrides: Any) -> ModelT:
        """Strict, safetensors-only loading from a folder, ``ORG/NAME`` or ``hf-hub:ORG/NAME[@REV]``."""
        if cls.registry_name is None:
            raise CheckpointError(f"{cls.__name__}.from_pretrained needs a variant class with a registry_name; "
                                  f"to load whichever variant a folder or repo holds, use vaezoo.from_pretrained({model_id!r})")
        if Path(model_id).is_dir():
            folder = Path(model_id)
        else:
            source = model_id if model_id.startswith(HUB_PREFIX) else HUB_PREFIX + model_id
            repo_id, at = parse_hub_source(source)
            folder = download_model_dir(repo_id, at or revision, token=token if isinstance(token, str) else None,
                                        cache_dir=cache_dir, local_files_only=local_files_only,
                                        force_download=force_download)
        return load_model_folder(cls, folder, device=device, **overrides)

    @classmethod
    def from_pretrained(cls: type[ModelT], pretrained_model_name_or_path: str | Path, *, force_download: bool = False,
                        token: str | bool | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, revision: str | None = None, **model_kwargs: Any) -> ModelT:
        """This class from a model folder or a Hub repo, strictly; ``model_kwargs`` override config fields.

        The mixin's own ``from_pretrained`` would decode config.json into the constructor's arguments;
        vaezoo's config.json wraps the config with the variant's name, so loading goes straight to
        ``_from_pretrained``.

        >>> VanillaVAE.from_pretrained("my-org/my-vae", revision="v1")  # doctest: +SKIP
        """
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token,
                                    **model_kwargs)

    @classmethod
    def from_foreign_folder(cls: type[ModelT], folder: Path, config: Any) -> ModelT:
        """This variant from ``folder`` in another library's layout (a pretrained tag's ``hub_files``, fetched from
        its ``hub_subfolder``), built with ``config`` (the tag's, plus the caller's overrides); vaezoo.zoo.pretrained
        calls it for such a tag when the folder holds no model.safetensors. A variant that reads such weights
        overrides it, converting them in memory (safetensors only) and loading them strictly; the default refuses."""
        raise CheckpointError(f"{folder} holds no {WEIGHTS_NAME} and {cls.__name__} reads no other weights layout; "
                              "pass a vaezoo model folder (one that save_pretrained wrote)")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card save_pretrained writes when the folder has none (see vaezoo.io.cards)."""
        return ModelCard(card_text_for(name=self.model_name, dataset=kwargs.get("dataset", "unknown"),
                                       metrics=kwargs.get("metrics", {}), command="(trained in Python)"))

    def push_to_hub(self, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | None = None,
                    card_metrics: dict[str, Any] | None = None, dataset: str = "unknown",
                    commit_message: str | None = None) -> str:
        """Save this model with a card to a temporary folder, check it loads back, and upload it; return the commit URL.

        >>> model.push_to_hub("my-org/my-vae", private=True)  # doctest: +SKIP
        """
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card_kwargs={"dataset": dataset, "metrics": card_metrics or {}})
            load_model_folder(type(self), folder)  # what is published must load back, strictly
            return upload_model_dir(folder, repo_id, private=private, revision=revision, token=token,
                                    commit_message=commit_message)

    @property
    def model_name(self) -> str:
        """The registry name, with the pretrained tag it was loaded from: ``vae-mlp`` or ``vae-mlp.fmnist``."""
        name = type(self).registry_name or type(self).__name__
        return f"{name}.{self.pretrained_tag}" if self.pretrained_tag else name
