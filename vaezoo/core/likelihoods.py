"""Observation models p(x | z). The decoder outputs their parameters; these turn them into nats.

Every ``log_prob`` is summed over all non-batch dims and returns shape (B,), as in the seed's
``reduction='sum'``; averaging over the batch is the caller's job. ``observed`` (bool, broadcastable
to x) restricts the sum to the observed values: log p(x_obs | z), which imputation weighs by.
``param_shape(config)`` is the shape of one example's parameters, which every decoder outputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.config import VAEConfig
from vaezoo.errors import InputError

LOG_2PI = math.log(2 * math.pi)
LOGISTIC_MIXTURE = "logistic_mixture"
PIXEL_LEVELS = 256  # the values of an 8-bit pixel channel
HALF_BIN = 1.0 / (PIXEL_LEVELS - 1)  # half a bin's width once [0, 255] is rescaled to [-1, 1]
LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor on log s (pixel_cnn_pp/nn.py): s = e^-7 already puts a bin's mass in one bin
LOG_SCALE_MAX = 7.0  # s = e^7 is flat over [-1, 1]; the cap keeps exp(-log s) from underflowing to a 0 bin width


def coupling_count(channels: int) -> int:
    """Coefficients that couple a pixel's channel c to the channels j < c: C(C-1)/2, 3 for RGB as in PixelCNN++."""
    return channels * (channels - 1) // 2


def param_shape(config: VAEConfig) -> tuple[int, ...]:
    """The shape of one example's likelihood parameters: what a decoder outputs for this config.

    ``input_shape`` for the Bernoulli and Gaussian likelihoods; (K (1 + 2C + C(C-1)/2), H, W) for
    ``logistic_mixture`` with K = ``mixture_components`` (10 K channels for RGB, PixelCNN++'s layout; 3 K for grayscale).

    >>> param_shape(VAEConfig(input_shape=(3, 32, 32), likelihood="logistic_mixture", mixture_components=10))
    (100, 32, 32)
    """
    if config.likelihood != LOGISTIC_MIXTURE:
        return tuple(config.input_shape)
    channels, height, width = config.input_shape
    return (config.mixture_components * (1 + 2 * channels + coupling_count(channels)), height, width)


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


class DiscretizedLogisticMixture(nn.Module):
    """p(x | z) for 8-bit images: per pixel, a mixture of K discretized logistics over each channel's 256 values.

    Salimans et al. 2017 (PixelCNN++, arXiv:1701.05517), eq. 2, as in openai/pixel-cnn's
    ``discretized_mix_logistic_loss`` and VDVAE's ``DmolNet`` (Child 2021, arXiv:2011.10650). A value x in
    [0, 1] is the bin b = round(255 x) (a value between bins counts as the nearest one), rescaled as
    the references do to v_b = 2b/255 - 1 in [-1, 1]; under component k with mean mu and scale s

        P(b) = sigmoid((v_b + 1/255 - mu) / s) - sigmoid((v_b - 1/255 - mu) / s),

    and the edge bins take the tails: P(0) = sigmoid((v_0 + 1/255 - mu) / s), P(255) = 1 - sigmoid((v_255 - 1/255 - mu) / s).
    The channels of a pixel share the component; channel c's mean is mu_c + sum_{j<c} tanh(a_cj) v_j
    (PixelCNN++ sec. 2.2: for RGB, mu_G + a v_R and mu_B + b v_R + c v_G). log s is clamped to [-7, 7].

    ``params`` (B, K (1 + 2C + C(C-1)/2), H, W), see :func:`param_shape`: the K mixture logits, then the C K
    means (channel-major: channel 0's K, then channel 1's), the C K log-scales, then the C(C-1)/2 K coupling
    pre-activations, for the pairs (c, j) = (1, 0), (2, 0), (2, 1), ...
    """

    def __init__(self, channels: int, components: int) -> None:
        super().__init__()
        self.channels, self.components = channels, components
        self.param_channels = components * (1 + 2 * channels + coupling_count(channels))

    def log_prob(self, params: Tensor, x: Tensor, observed: Tensor | None = None) -> Tensor:  # (B,)
        """log P(x) in nats, summed per example. With ``observed``, a hidden channel's term is left out of
        each component before the mixture is summed: exact for grayscale and for hidden channels after the
        observed ones (a fully hidden pixel adds 0); a hidden channel before an observed one still shifts
        that one's mean by the value given for it."""
        logits, means, log_scales, coeffs = self._split(params)  # (B, K, H, W), then (B, C or pairs, K, H, W)
        bins = (x.to(logits.dtype) * (PIXEL_LEVELS - 1)).round().clamp(0, PIXEL_LEVELS - 1)  # (B, C, H, W)
        values = (bins * (2 * HALF_BIN) - 1).unsqueeze(2)  # (B, C, 1, H, W), v_b in [-1, 1]
        log_mass = _log_bin_mass(values - self._coupled_means(means, coeffs, values), log_scales, bins.unsqueeze(2))
        log_pixel_given = log_mass  # (B, C, K, H, W)
        if observed is not None:
            observed = observed.expand_as(x)
            log_pixel_given = torch.where(observed.unsqueeze(2), log_mass, torch.zeros((), dtype=log_mass.dtype))
        log_pixel = torch.logsumexp(F.log_softmax(logits, dim=1) + log_pixel_given.sum(1), dim=1)  # (B, H, W)
        if observed is not None:  # exactly 0, not a sum of mixture weights rounded near 1, for a fully hidden pixel
            log_pixel = torch.where(observed.any(1), log_pixel, torch.zeros((), dtype=log_pixel.dtype))
        return log_pixel.flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        """E[x] in [0, 1], (B, C, H, W): each component's logistic clipped to [-1, 1] (the edge bins hold its
        tails), E[clip(X)] = -1 + s (log sigmoid((1 - mu) / s) - log sigmoid((-1 - mu) / s)); exact up to the
        rounding to bins for one channel, while a coupled channel's mean uses the earlier channels' expected values."""
        logits, means, log_scales, coeffs = self._split(params)
        expected = []  # per channel, (B, K, H, W)
        for c in range(self.channels):
            shifted = means[:, c] + sum(torch.tanh(coeffs[:, _pair(c, j)]) * expected[j] for j in range(c))
            scale = log_scales[:, c].exp()
            expected.append(-1 + scale * (F.logsigmoid((1 - shifted) / scale) - F.logsigmoid((-1 - shifted) / scale)))
        weights = F.softmax(logits, dim=1).unsqueeze(1)  # (B, 1, K, H, W)
        mixture_mean = (weights * torch.stack(expected, 1)).sum(2).clamp(-1, 1)  # (B, C, H, W)
        return ((mixture_mean + 1) / 2).to(params.dtype)

    def sample(self, params: Tensor) -> Tensor:
        """x ~ p(x | params) on the 256 bins, values b/255 in [0, 1]: a component by Gumbel-max, then a logistic
        draw per channel clipped to [-1, 1] and rounded to its bin (so the edge bins get their tails), the
        later channels' means coupled to the bins drawn before them, as ``log_prob`` scores them."""
        logits, means, log_scales, coeffs = self._split(params)
        tiny = torch.finfo(logits.dtype).tiny
        gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(tiny, 1 - 1e-7)))
        chosen = F.one_hot((logits + gumbel).argmax(1), self.components).movedim(-1, 1).unsqueeze(1).to(logits.dtype)

        def pick(per_component: Tensor) -> Tensor:  # (B, C', K, H, W) -> (B, C', H, W), the chosen component's
            return (per_component * chosen).sum(2)

        means, scales, coupling = pick(means), pick(log_scales).exp(), torch.tanh(pick(coeffs))
        uniform = torch.rand_like(means).clamp(tiny, 1 - 1e-7)
        draws = means + scales * (torch.log(uniform) - torch.log1p(-uniform))  # logistic noise, (B, C, H, W)
        values: list[Tensor] = []
        for c in range(self.channels):
            value = draws[:, c] + sum(coupling[:, _pair(c, j)] * values[j] for j in range(c))
            values.append(((value.clamp(-1, 1) + 1) / (2 * HALF_BIN)).round() * (2 * HALF_BIN) - 1)
        return ((torch.stack(values, 1) + 1) / 2).to(params.dtype)

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Logits (B, K, H, W); means and log-scales (B, C, K, H, W); coupling pre-activations (B, pairs, K, H, W).
        In at least float32: the log-masses of a half-precision decoder are summed in float32."""
        if params.dim() != 4 or params.shape[1] != self.param_channels:
            raise InputError(
                f"params of shape {tuple(params.shape)} do not fit likelihood='logistic_mixture' with {self.components} "
                f"components over {self.channels} channels, which takes (B, {self.param_channels}, H, W); size the "
                "decoder's output with vaezoo.core.likelihoods.param_shape(config)"
            )
        params = params.to(torch.promote_types(params.dtype, torch.float32))
        k, per_channel = self.components, self.channels * self.components
        logits = params[:, :k]
        means = params[:, k : k + per_channel].unflatten(1, (self.channels, k))
        log_scales = params[:, k + per_channel : k + 2 * per_channel].unflatten(1, (self.channels, k))
        coeffs = params[:, k + 2 * per_channel :].unflatten(1, (coupling_count(self.channels), k))
        return logits, means, log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX), coeffs

    def _coupled_means(self, means: Tensor, coeffs: Tensor, values: Tensor) -> Tensor:
        """mu_c + sum_{j<c} tanh(a_cj) v_j for each channel c, given the values v (B, C, 1, H, W): (B, C, K, H, W)."""
        coupled = [means[:, c] + sum(torch.tanh(coeffs[:, _pair(c, j)]) * values[:, j] for j in range(c))
                   for c in range(self.channels)]
        return torch.stack(coupled, 1)


def _pair(channel: int, earlier: int) -> int:
    """Index of the coefficient coupling ``channel`` to ``earlier`` < channel: (1, 0), (2, 0), (2, 1), ... -> 0, 1, 2, ..."""
    return channel * (channel - 1) // 2 + earlier


def _log_bin_mass(centered: Tensor, log_scales: Tensor, bins: Tensor) -> Tensor:
    """log P(bin) of logistics with log-scales ``log_scales`` at values minus means ``centered``; the edge bins take the tails.

    Inside, log(sigmoid(u) - sigmoid(l)) = log sigmoid(u) + log sigmoid(-l) + log(1 - e^(l - u)) for u > l: exact
    where the difference of two CDFs near 0 or 1 cancels, which PixelCNN++ patches with the density at the bin's
    centre once the mass falls below 1e-5; so the 256 masses of a pixel sum to 1 for any mean and scale.
    """
    inv_scale = torch.exp(-log_scales)
    upper = inv_scale * (centered + HALF_BIN)
    lower = inv_scale * (centered - HALF_BIN)
    inside = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
    bottom, top = F.logsigmoid(upper), F.logsigmoid(-lower)  # log P(x <= edge of bin 0), log P(x > edge of bin 255)
    return torch.where(bins == 0, bottom, torch.where(bins == PIXEL_LEVELS - 1, top, inside))


def build_likelihood(config: VAEConfig) -> nn.Module:
    if config.likelihood == "bernoulli":
        return BernoulliLikelihood()
    if config.likelihood == LOGISTIC_MIXTURE:
        return DiscretizedLogisticMixture(config.input_shape[0], config.mixture_components)
    return GaussianLikelihood(config.input_shape[0], config.gaussian_scale)
