"""Encoder and decoder backbones that variants compose (diffusers-style: the model owns an
Encoder and a Decoder). Chosen by config: ``encoder="mlp" | "conv" | "timm:<name>"`` and
``decoder="mlp" | "conv"``; ``"auto"`` means conv for images and mlp for vectors.

An encoder maps x (B, *input_shape) to features (B, F) and exposes ``out_features``;
a decoder maps a vector (B, in_features) to likelihood parameters (B, *param_shape(config)): (B, *input_shape),
or more channels for the logistic mixture.
Each casts a floating input to its weights' dtype, so a float64 batch meets a float32 model and a
float32 latent a bfloat16 one.

>>> from vaezoo.core.config import VAEConfig
>>> encoder = build_encoder(VAEConfig(input_shape=(64,), hidden_dims=(32,)))
>>> encoder.out_features
32
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaezoo.core.config import VAEConfig
from vaezoo.core.likelihoods import param_shape
from vaezoo.errors import ConfigError, InputError, did_you_mean


def in_weights_dtype(x: Tensor, module: nn.Module) -> Tensor:
    """A floating ``x`` in the dtype of ``module``'s weights (a no-op when they agree); other dtypes as they are."""
    weight = next(module.parameters(), None)
    if weight is None or not x.is_floating_point() or x.dtype == weight.dtype:
        return x
    return x.to(weight.dtype)


def mlp(in_features: int, widths: Sequence[int], activate_last: bool = True) -> nn.Sequential:
    """Linear layers with ReLU between them (the seed's building block)."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Linear(in_features, width))
        if activate_last or i < len(widths) - 1:
            layers.append(nn.ReLU())
        in_features = width
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten, then Linear+ReLU for each width in ``hidden_dims``."""

    def __init__(self, input_shape: Sequence[int], hidden_dims: Sequence[int]) -> None:
        super().__init__()
        in_features = math.prod(input_shape)
        self.net = mlp(in_features, hidden_dims)
        self.out_features = hidden_dims[-1] if hidden_dims else in_features

    def forward(self, x: Tensor) -> Tensor:  # (B, *input_shape) -> (B, F)
        return self.net(in_weights_dtype(x.flatten(1), self))


class MLPDecoder(nn.Module):
    """Mirror of MLPEncoder: widths reversed, then a linear layer to every output element."""

    def __init__(self, in_features: int, output_shape: Sequence[int], hidden_dims: Sequence[int]) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        widths = list(reversed(hidden_dims))
        self.net = nn.Sequential(
            mlp(in_features, widths), nn.Linear(widths[-1] if widths else in_features, math.prod(output_shape))
        )

    def forward(self, h: Tensor) -> Tensor:  # (B, F) -> (B, *output_shape)
        return self.net(in_weights_dtype(h, self)).view(-1, *self.output_shape)


class ConvTrunk(nn.Module):
    """Stride-2 3x3 convolutions, one stage per width: (B, C, H, W) -> (B, C', ceil(H/2^n), ceil(W/2^n))."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.SiLU()]
            in_channels = width
        self.net = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.net(in_weights_dtype(x, self))


class ConvTransposeTrunk(nn.Module):
    """Inverse of ConvTrunk: stride-2 transposed convolutions, then a 3x3 conv to ``out_channels``,
    cropped to ``output_hw`` (the trunk overshoots when H is not a power of two times the grid)."""

    def __init__(self, in_channels: int, channels: Sequence[int], out_channels: int, output_hw: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.ConvTranspose2d(in_channels, width, 4, stride=2, padding=1), nn.SiLU()]
            in_channels = width
        layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.output_hw = output_hw

    def forward(self, h: Tensor) -> Tensor:
        out = self.net(h)
        return out[..., : self.output_hw[0], : self.output_hw[1]]


def conv_grid(input_shape: Sequence[int], stages: int) -> tuple[int, int]:
    """Spatial size after ``stages`` stride-2 convolutions with padding 1."""
    _, height, width = input_shape
    for _ in range(stages):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


class ConvEncoder(nn.Module):
    def __init__(self, input_shape: Sequence[int], conv_channels: Sequence[int]) -> None:
        super().__init__()
        self.trunk = ConvTrunk(input_shape[0], conv_channels)
        grid_h, grid_w = conv_grid(input_shape, len(conv_channels))
        self.out_features = conv_channels[-1] * grid_h * grid_w

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C' * h * w)
        return self.trunk(x).flatten(1)


class ConvDecoder(nn.Module):
    def __init__(self, in_features: int, output_shape: Sequence[int], conv_channels: Sequence[int]) -> None:
        super().__init__()
        widths = list(reversed(conv_channels))
        self.grid = (widths[0], *conv_grid(output_shape, len(widths)))
        self.project = nn.Sequential(nn.Linear(in_features, math.prod(self.grid)), nn.SiLU())
        self.trunk = ConvTransposeTrunk(widths[0], widths[1:] + [widths[-1]], output_shape[0], tuple(output_shape[1:]))

    def forward(self, h: Tensor) -> Tensor:  # (B, F) -> (B, C, H, W)
        return self.trunk(self.project(in_weights_dtype(h, self)).view(-1, *self.grid))


class TimmEncoder(nn.Module):
    """Any timm model as a feature extractor, randomly initialised (no weights are fetched)."""

    def __init__(self, model_name: str, input_shape: Sequence[int]) -> None:
        super().__init__()
        import timm  # imported here: timm is only needed when a config asks for it

        if not timm.is_model(model_name):
            raise ConfigError(
                f"encoder='timm:{model_name}': timm has no model {model_name!r}"
                + did_you_mean(model_name, timm.list_models())
                + "; see timm.list_models()"
            )
        self.net = timm.create_model(model_name, pretrained=False, in_chans=input_shape[0], num_classes=0)
        self.out_features = int(self.net.num_features)
        self._check_input_fits(model_name, tuple(input_shape))

    def _check_input_fits(self, model_name: str, input_shape: tuple[int, ...]) -> None:
        """Run one example through now: a model built for a fixed size (a ViT at 224) fails here, at build time,
        naming both sizes, rather than at the first batch. Skipped on the meta device (a size estimate)."""
        weight = next(self.net.parameters(), None)
        if weight is None or weight.is_meta:
            return
        was_training = self.net.training
        try:
            with torch.no_grad():
                self.net.eval()(torch.zeros(1, *input_shape, device=weight.device, dtype=weight.dtype))
        except Exception as error:  # timm raises AssertionError, RuntimeError or ValueError for a size it cannot take
            fixed = tuple(getattr(self.net, "pretrained_cfg", {}).get("input_size") or ())[-2:]
            size = f"images of {fixed[0]}x{fixed[1]} pixels (input_shape=({input_shape[0]}, {fixed[0]}, {fixed[1]}))" \
                if len(fixed) == 2 else "data of the size it was built for"
            raise ConfigError(
                f"encoder='timm:{model_name}' cannot take input_shape={input_shape} ({' '.join(str(error).split())[:160]}); "
                f"use {size}, or a timm model without a fixed input size (e.g. 'timm:resnet18')"
            ) from None
        finally:
            self.net.train(was_training)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(in_weights_dtype(x, self))


def resolve_backbone(config: VAEConfig, which: str) -> str:
    choice = getattr(config, which)
    if choice == "auto":
        return "conv" if config.is_image else "mlp"
    return choice


def build_encoder(config: VAEConfig) -> nn.Module:
    choice = resolve_backbone(config, "encoder")
    if choice == "mlp":
        return MLPEncoder(config.input_shape, config.hidden_dims)
    if choice == "conv":
        return ConvEncoder(config.input_shape, config.conv_channels)
    return TimmEncoder(choice.removeprefix("timm:"), config.input_shape)


def build_decoder(config: VAEConfig, in_features: int) -> nn.Module:
    """(B, in_features) -> the likelihood's parameters, (B, *param_shape(config)): input_shape, or wider for a mixture."""
    output_shape = param_shape(config)
    if resolve_backbone(config, "decoder") == "mlp":
        return MLPDecoder(in_features, output_shape, config.hidden_dims)
    return ConvDecoder(in_features, output_shape, config.conv_channels)


class GaussianHead(nn.Module):
    """Linear map from features to the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.linear(h).chunk(2, dim=-1)
        return mean, logvar


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B,) integer labels in 0..num_classes-1 -> (B, num_classes) one-hot rows in ``dtype``; other labels are an InputError."""
    if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"dtype {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise InputError(f"labels y must be a tensor of integer class ids in 0..{num_classes - 1}, got {got}; "
                         "pass e.g. torch.tensor([3, 1]) (y.long() for float labels that are whole numbers)")
    try:
        return torch.nn.functional.one_hot(y.long(), num_classes).to(dtype)
    except RuntimeError:  # a label outside 0..num_classes-1
        raise InputError(f"labels y hold {int(y.min())}..{int(y.max())} but this model knows 0..{num_classes - 1}; "
                         "pass labels in that range") from None
