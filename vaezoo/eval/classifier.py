"""A small CNN classifier whose penultimate features define the benchmark's Frechet distance.

The Frechet distance between generated and test images is measured in the feature space of a
classifier trained on the same dataset (as FID uses Inception; Heusel et al. 2017, arXiv:1706.08500).
Inception does not fit 8x8 digits, so each dataset ships its own small CNN in
``vaezoo/eval/classifiers/<dataset>.safetensors`` with ``<dataset>.json`` (config and test accuracy),
trained by ``benchmarks/train_classifiers.py``.

>>> from vaezoo.eval.classifier import load_classifier
>>> classifier = load_classifier("digits")  # doctest: +SKIP
>>> classifier.features(x).shape  # (B, 1, 8, 8) -> (B, 128)  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vaezoo.errors import ConfigError, DataError
from vaezoo.io.atomic import atomic_write_json
from vaezoo.io.tensors import load_state_dict_strict, load_tensors, save_tensors

CLASSIFIER_DIR = Path(__file__).parent / "classifiers"


class SmallCNN(nn.Module):
    """conv3x3 stages (the first at full resolution, the rest stride 2), then the features, then a linear head.

    The features are a ``hidden``-wide ReLU layer over the flattened last stage (as FID's pool features
    sit on top of Inception's spatial maps); ``hidden=0`` averages the last stage over space instead,
    which keeps no layout and classifies Fashion-MNIST worse (test accuracy 0.814 vs 0.919 here).
    ``features(x)`` is (B, hidden or channels[-1]); ``forward(x)`` the class logits.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (16, 32, 64),
                 hidden: int = 128) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"SmallCNN takes (C, H, W) images; input_shape={tuple(input_shape)} is not an image")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.channels = tuple(channels)
        self.hidden = hidden
        layers: list[nn.Module] = []
        in_channels, height, width = input_shape
        for index, out_channels in enumerate(channels):
            stride = 1 if index == 0 else 2
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ReLU()]
            in_channels, height, width = out_channels, (height - 1) // stride + 1, (width - 1) // stride + 1
        self.trunk = nn.Sequential(*layers)
        if hidden:
            self.embed = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * width, hidden), nn.ReLU())
        self.dropout = nn.Dropout(0.3 if hidden else 0.0)
        self.head = nn.Linear(hidden or in_channels, num_classes)

    def features(self, x: Tensor) -> Tensor:  # (B, C, H, W) in [0, 1] -> (B, hidden or channels[-1])
        maps = self.trunk(x)
        return self.embed(maps) if self.hidden else maps.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes) logits
        return self.head(self.dropout(self.features(x)))

    def config(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes, "channels": list(self.channels),
                "hidden": self.hidden}


def classifier_paths(dataset: str, directory: str | Path | None = None) -> tuple[Path, Path]:
    """(weights, config) paths of the shipped classifier for ``dataset``."""
    folder = Path(directory) if directory is not None else CLASSIFIER_DIR
    return folder / f"{dataset}.safetensors", folder / f"{dataset}.json"


def has_classifier(dataset: str, directory: str | Path | None = None) -> bool:
    weights, config = classifier_paths(dataset, directory)
    return weights.is_file() and config.is_file()


def load_classifier(dataset: str, directory: str | Path | None = None) -> SmallCNN:
    """The shipped classifier for ``dataset``, loaded strictly from safetensors, in eval mode.

    Weights go through vaezoo.io.tensors like a model's: checksummed, strict, never unpickled.
    """
    weights, config_path = classifier_paths(dataset, directory)
    if not (weights.is_file() and config_path.is_file()):
        raise DataError(
            f"no classifier for dataset {dataset!r} at {weights}; train one with "
            f"`python benchmarks/train_classifiers.py --data {dataset}`"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{config_path} is not valid JSON ({error}); restore it or retrain the classifier") from None
    model = SmallCNN(tuple(config["input_shape"]), config["num_classes"], tuple(config["channels"]),
                     config.get("hidden", 0))  # files from before the hidden layer average over space
    load_state_dict_strict(model, load_tensors(weights), source=str(weights))
    return model.eval()


def save_classifier(model: SmallCNN, dataset: str, metadata: dict[str, Any], directory: str | Path | None = None) -> Path:
    """Write ``<dataset>.safetensors`` and ``<dataset>.json`` (config plus ``metadata``, e.g. test accuracy), atomically."""
    weights, config_path = classifier_paths(dataset, directory)
    save_tensors(weights, {k: v.cpu() for k, v in model.state_dict().items()}, metadata={"format": "pt"})
    atomic_write_json(config_path, {**model.config(), "dataset": dataset, **metadata})
    return weights
