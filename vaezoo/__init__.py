"""vaezoo: a plugin-based zoo of variational autoencoders in PyTorch.

>>> import vaezoo
>>> vaezoo.list_models()
['beta-vae', 'cvae', 'hvae', 'vae-mlp', 'vq-vae']
>>> model = vaezoo.create_model("vae-mlp", latent_dim=8)
"""
from __future__ import annotations

from .config import VAEConfig, config_from_dict, config_to_dict
from .distributions import DiagonalGaussian
from .errors import (
    CapabilityError,
    ConfigError,
    DataError,
    InputError,
    PluginError,
    PretrainedUnavailableError,
    StorageError,
    UnknownModelError,
    VAEZooError,
)
from .model import VAE, PretrainedTag, StepOutput, TrainingStage, VAEOutput
from .serialization import load_model_dir
from .pretrained import from_pretrained
from .training import TrainConfig, Trainer, TrainResult, train
from .registry import create_model, get_model_class, is_model, list_models, model_info, register_model
from . import apps  # what VAEs are used for: vaezoo.apps.generate, impute, detect_anomalies, ...

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "VAEConfig",
    "VAEOutput",
    "StepOutput",
    "TrainingStage",
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
    "apps",
    "__version__",
]
