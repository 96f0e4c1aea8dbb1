"""Observation models p(x | z). The decoder outputs their parameters; these turn them into nats.

Every ``log_prob`` is summed over all non-batch dims and returns shape (B,), as in the seed's
``reduction='sum'``; averaging over the batch is the caller's job. ``observed`` (bool, broadcastable
to x) restricts the sum to the observed values: log p(x_obs | z), which imputation weighs by.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.config import VAEConfig

LOG_2PI = math.log(2 * math.pi)


def _sum_values(log_density: Tensor, observed: Tensor | None) -> Tensor:  # (B, ...) -> (B,)
    if observed is not None:
        log_density = torch.where(observed, log_density, torch.zeros((), dtype=log_density.dtype))
    return log_density.flatten(1).sum(1)


class BernoulliLikelihood(nn.Module):
    """p(x | z) = Bernoulli(sigmoid(logits)); -log p is the seed's summed binary cross-entropy."""

    def log_prob(self, logits: Tensor, x: Tensor, observed: Tensor | None = None) -> Tensor:  # (B,)
        return _sum_values(-F.binary_cross_entropy_with_logits(logits, x, reduction="none"), observed)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits))


class GaussianLikelihood(nn.Module):
    """p(x | z) = N(mean, scale^2); a fixed scale makes -log p a scaled MSE plus a constant.

    With ``scale=None`` a log-scale per channel (per feature for vectors) is learned, which
    calibrates the reconstruction/KL balance instead of leaving it to a hand-set beta.
    """

    def __init__(self, channels: int, scale: float | None) -> None:
        super().__init__()
        self.channel_dim = 1
        if scale is None:
            self.log_scale = nn.Parameter(torch.zeros(channels))
        else:
            self.register_buffer("log_scale", torch.full((channels,), math.log(scale)), persistent=False)

    def _log_scale(self, like: Tensor) -> Tensor:
        return self.log_scale.view(1, -1, *([1] * (like.dim() - 2)))

    def log_prob(self, mean: Tensor, x: Tensor, observed: Tensor | None = None) -> Tensor:  # (B,)
        log_scale = self._log_scale(mean)
        return _sum_values(-0.5 * LOG_2PI - log_scale - 0.5 * ((x - mean) / log_scale.exp()) ** 2, observed)

    def mean(self, mean: Tensor) -> Tensor:
        return mean

    def sample(self, mean: Tensor) -> Tensor:
        return mean + self._log_scale(mean).exp() * torch.randn_like(mean)


def build_likelihood(config: VAEConfig) -> nn.Module:
    if config.likelihood == "bernoulli":
        return BernoulliLikelihood()
    return GaussianLikelihood(config.input_shape[0], config.gaussian_scale)
