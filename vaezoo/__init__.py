"""vaezoo: a plugin-based zoo of variational autoencoders in PyTorch.

>>> import vaezoo
>>> vaezoo.list_models("beta-*")
['beta-tcvae', 'beta-vae']
>>> model = vaezoo.create_model("vae-mlp", latent_dim=8)

The package is layered (see README, "How the code is laid out"): this file only re-exports the
public API from the layers below; no module of vaezoo imports it.
"""
from __future__ import annotations

from vaezoo import apps  # what VAEs are used for: vaezoo.apps.generate, impute, detect_anomalies, ...
from vaezoo._version import __version__
from vaezoo.core.config import VAEConfig, config_from_dict, config_to_dict
from vaezoo.core.contract import Capabilities, ImportanceSample, Posterior, StepOutput, TrainingStage, VAEOutput
from vaezoo.core.distributions import DiagonalGaussian
from vaezoo.core.model import VAE
from vaezoo.errors import (
    CapabilityError,
    CheckpointError,
    ConfigError,
    ConformanceError,
    DataError,
    FolderInUseError,
    HubError,
    InputError,
    PluginError,
    PretrainedUnavailableError,
    StorageError,
    TrainingDivergedError,
    UnknownModelError,
    VAEZooError,
)
from vaezoo.training.trainer import TrainConfig, Trainer, TrainResult, train
from vaezoo.zoo.builder import load_model_dir
from vaezoo.zoo.factory import create_model, from_pretrained, model_info
from vaezoo.zoo.registry import get_model_class, is_model, list_models, register_model
from vaezoo.zoo.tags import PretrainedTag

__all__ = [
    "VAE",
    "VAEConfig",
    "VAEOutput",
    "StepOutput",
    "TrainingStage",
    "Capabilities",
    "Posterior",
    "ImportanceSample",
    "PretrainedTag",
    "DiagonalGaussian",
    "create_model",
    "list_models",
    "model_info",
    "is_model",
    "get_model_class",
    "register_model",
    "load_model_dir",
    "from_pretrained",
    "train",
    "Trainer",
    "TrainConfig",
    "TrainResult",
    "config_to_dict",
    "config_from_dict",
    "VAEZooError",
    "UnknownModelError",
    "ConfigError",
    "DataError",
    "PluginError",
    "PretrainedUnavailableError",
    "CapabilityError",
    "InputError",
    "StorageError",
    "CheckpointError",
    "HubError",
    "TrainingDivergedError",
    "FolderInUseError",
    "ConformanceError",
    "apps",
    "__version__",
]
