"""Pretrained timm image networks as the feature space of Frechet distances on a user's RGB images (rFID-style).

The benchmark's own classifiers (vaezoo/eval/classifier.py) exist only for the datasets vaezoo ships. For any other
image data, ``vaezoo bench --fd-features NAME`` measures the Frechet distances in the pooled features of a timm
network instead: FID's recipe (Heusel et al. 2017, arXiv:1706.08500) with FID's own network being
``inception_v3.tv_in1k`` (torchvision's Inception-v3 weights; the FID of pytorch-fid uses TF-ported ones, so the
figures are comparable between vaezoo runs, not with published FIDs). Weights are safetensors only: the Hub
repo's ``model.safetensors`` through vaezoo's Hub client (offline: the cache), or a local file.

>>> network = load_feature_network("inception_v3.tv_in1k")  # doctest: +SKIP
>>> network.features(images).shape  # (B, 3, H, W) in [0, 1] -> (B, 2048)  # doctest: +SKIP
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.errors import ConfigError, DataError, did_you_mean
from vaezoo.io.hub import download_model_dir
from vaezoo.io.model_dir import PICKLE_SUFFIXES
from vaezoo.io.tensors import load_state_dict_strict, load_tensors

FEATURE_BATCH = 64  # images per forward pass: a 299x299 Inception batch of 1000 would take tens of GB


class FeatureNetwork(nn.Module):
    """A timm network without its head: ``features(x)`` resizes images in [0, 1] to the network's input size
    (bilinear, antialiased), repeats one channel to three, normalises with the network's mean and std, and
    returns its pooled features (B, F)."""

    classifies_data = False  # no head for the benchmark's classes: no conditional sample accuracy from it

    def __init__(self, network: nn.Module, name: str, input_size: tuple[int, int], mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.network, self.name, self.input_size = network.eval(), name, tuple(input_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"{self.name} features take images (B, 1 or 3, H, W), not shape {tuple(x.shape)}")
        parts = []
        for batch in x.split(FEATURE_BATCH):
            batch = batch.float().expand(-1, 3, -1, -1)
            batch = F.interpolate(batch, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
            parts.append(self.network((batch - self.mean) / self.std).flatten(1))
        return torch.cat(parts) if parts else x.new_zeros((0, self.network.num_features))


@functools.lru_cache(maxsize=2)  # a benchmark of many models loads it once
def load_feature_network(name: str, weights: str | None = None) -> FeatureNetwork:
    """timm's ``name`` (a pretrained tag such as ``inception_v3.tv_in1k``) with its classifier head removed, its
    weights from ``weights`` (a local .safetensors file) or from the Hub repo timm names for it (``model.safetensors``,
    through the Hugging Face cache; HF_HUB_OFFLINE=1 reads the cache only). ConfigError for an unknown name,
    DataError for a bad file, HubError when the Hub cannot supply the weights."""
    import timm  # heavy; only a benchmark asked for these features needs it
    from timm.models import get_pretrained_cfg

    known = timm.list_models(pretrained=True)
    if name not in known:
        raise ConfigError(f"--fd-features {name!r} is not a pretrained timm model" + did_you_mean(name, known)
                          + "; e.g. inception_v3.tv_in1k (FID's network)")
    config = get_pretrained_cfg(name)
    if weights is None:
        if not config.hf_hub_id:
            raise ConfigError(f"timm's {name!r} has no Hugging Face Hub repo to fetch weights from; pass --fd-weights "
                              "FILE.safetensors")
        file = download_model_dir(config.hf_hub_id, filenames=("model.safetensors",)) / "model.safetensors"
    else:
        file = _checked_weights_file(weights)
    network = timm.create_model(name, pretrained=False, num_classes=0)
    heads = config.classifier if isinstance(config.classifier, (list, tuple)) else [config.classifier or "-"]
    branches = {child for child, _ in network.named_children()}
    # Left out: the ImageNet head, which num_classes=0 removed, and branches the features never run (Inception-v3's
    # AuxLogits, which timm too loads non-strictly); a wrong file still fails below on the keys it lacks.
    tensors = {key: value for key, value in load_tensors(file).items()
               if key.split(".")[0] in branches and not any(key.startswith(f"{head}.") for head in heads)}
    load_state_dict_strict(network, tensors, source=f"{file} (timm's {name})")
    return FeatureNetwork(network, name, tuple(config.input_size[1:]), tuple(config.mean), tuple(config.std))


def _checked_weights_file(weights: str) -> Path:
    path = Path(weights)
    if path.suffix in PICKLE_SUFFIXES:
        raise DataError(f"--fd-weights {weights} is a pickle ({path.suffix}); vaezoo loads safetensors only: convert it "
                        "with safetensors.torch.save_file(torch.load(...), 'model.safetensors')")
    if not path.is_file():
        raise DataError(f"--fd-weights {weights} does not exist; pass the network's .safetensors file")
    return path
