"""Ex-post latent samplers: densities fitted on a trained model's posterior means that can stand in for its prior.

Ghosh et al. 2020, "From Variational to Deterministic Autoencoders" (arXiv:1903.12436), section 4:
after training, fit a density q_delta(z) to the codes of the training data, the aggregate posterior
q(z) = E_x q(z | x), and generate x = decode(z) with z ~ q_delta(z) instead of z ~ p(z). A prior that
the encoder's codes do not fill (holes, or mass the posterior never visits) then no longer decides
what is sampled. Their density is a Gaussian mixture with full covariances (as pythae's
GaussianMixtureSampler, clementchadebec/benchmark_VAE src/pythae/samplers/gaussian_mixture/
gaussian_mixture_sampler.py, which fits sklearn.mixture.GaussianMixture(covariance_type="full")):

    q_delta(z) = sum_k w_k N(z; mu_k, Sigma_k),   Sigma_k = L_k L_k^T (L_k lower triangular, its Cholesky factor)

The mixture lives in buffers (weights (K,), means (K, D), scale_tril (K, D, D)), so it is saved in
model.safetensors and loaded strictly with the model; config.json's ``latent_sampler`` and
``sampler_components`` say which shapes to rebuild before loading. Fitting (scikit-learn's EM) is in
:mod:`vaezoo.apps.samplers`; this module only holds the fitted density.

>>> import torch
>>> gmm = GaussianMixtureSampler(num_components=3, latent_dim=2)   # before fitting: N(0, I) three times over
>>> gmm.sample(5, generator=torch.Generator().manual_seed(0)).shape
torch.Size([5, 2])
>>> round(float(gmm.log_prob(torch.zeros(1, 2))), 4)              # log N(0; 0, I) in 2-D = -log(2 pi)
-1.8379
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaezoo.core.distributions import at_least_float32
from vaezoo.core.validation import check_batch, check_count, check_non_negative_number
from vaezoo.errors import ConfigError, InputError

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")  # scikit-learn's, all stored as full Cholesky factors


class GaussianMixtureSampler(nn.Module):
    """A K-component Gaussian mixture over D-dim latents with full covariances, held in buffers.

    ``weights`` (K,) sum to 1, ``means`` (K, D), ``scale_tril`` (K, D, D) the lower Cholesky factors L_k
    of the covariances. Built unfitted (every component N(0, I), so it equals the standard prior) at the
    shapes config.json names, then filled by ``load_state_dict``; or from a fitted scikit-learn mixture
    with :meth:`from_sklearn`.

    >>> from sklearn.mixture import GaussianMixture                      # doctest: +SKIP
    >>> gmm = GaussianMixtureSampler.from_sklearn(GaussianMixture(10).fit(codes))  # doctest: +SKIP
    >>> z = gmm.sample(64)                                               # doctest: +SKIP
    """

    kind = "gmm"  # config.json's latent_sampler for this class

    def __init__(self, num_components: int, latent_dim: int) -> None:
        super().__init__()
        check_count(num_components, "num_components", error=ConfigError, hint=" (components of the mixture)")
        check_count(latent_dim, "latent_dim", error=ConfigError)
        self.register_buffer("weights", torch.full((num_components,), 1.0 / num_components))
        self.register_buffer("means", torch.zeros(num_components, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).expand(num_components, latent_dim, latent_dim).clone())

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def from_sklearn(cls, mixture: Any) -> GaussianMixtureSampler:
        """The density of a fitted ``sklearn.mixture.GaussianMixture`` (any covariance_type), in float32 buffers.

        The Cholesky factors are computed in float64 from scikit-learn's covariances (which already hold
        its ``reg_covar`` on the diagonal), then stored in float32.
        """
        if not all(hasattr(mixture, name) for name in ("weights_", "means_", "covariances_")):
            raise InputError(f"{type(mixture).__name__} is not a fitted Gaussian mixture (no weights_, means_ and "
                             "covariances_); call its fit(codes) first")
        means = torch.from_numpy(np.asarray(mixture.means_, dtype=np.float64))  # (K, D)
        count, dim = means.shape
        covariances = _full_covariances(np.asarray(mixture.covariances_, dtype=np.float64),
                                        getattr(mixture, "covariance_type", "full"), count, dim)
        scale_tril, info = torch.linalg.cholesky_ex(covariances)
        if bool(info.any()):
            raise InputError("the fitted mixture has a covariance that is not positive definite; refit it with a "
                             "larger reg_covar")
        sampler = cls(count, dim)
        weights = torch.from_numpy(np.asarray(mixture.weights_, dtype=np.float64))
        sampler.weights.copy_(weights / weights.sum())
        sampler.means.copy_(means)
        sampler.scale_tril.copy_(scale_tril)
        return sampler

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws z ~ q_delta(z), shape (n, D), in the buffers' dtype and device.

        A component k ~ Categorical(w), then z = mu_k + temperature * L_k eps with eps ~ N(0, I): the
        temperature scales each component's spread as it scales the prior's noise (0: the component means).
        ``generator`` (on the buffers' device) makes the draws reproducible without touching the global RNG.
        """
        check_count(n, "n")
        check_non_negative_number(temperature, "temperature", hint=" (1 samples the mixture itself)")
        weights = at_least_float32(self.weights)
        component = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        noise = torch.randn(n, self.latent_dim, 1, generator=generator, device=weights.device, dtype=weights.dtype)
        spread = at_least_float32(self.scale_tril)[component] @ noise  # (n, D, D) @ (n, D, 1) -> (n, D, 1)
        return (at_least_float32(self.means)[component] + temperature * spread.squeeze(-1)).to(self.means.dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q_delta(z) in nats, (B, D) -> (B,), computed in at least float32.

        log sum_k w_k N(z; mu_k, L_k L_k^T), with N's log-density -(D log 2 pi + |L_k^-1 (z - mu_k)|^2) / 2
        - sum_i log L_k,ii (a triangular solve instead of an inverse).
        """
        check_batch(z, (self.latent_dim,), "z")
        scale_tril = at_least_float32(self.scale_tril)
        z = z.to(device=scale_tril.device, dtype=scale_tril.dtype)
        offsets = (z[None] - at_least_float32(self.means)[:, None]).transpose(1, 2)  # (K, D, B)
        whitened = torch.linalg.solve_triangular(scale_tril, offsets, upper=False)  # (K, D, B)
        half_log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,) = log |Sigma_k| / 2
        log_normal = -0.5 * (self.latent_dim * math.log(2 * math.pi) + whitened.pow(2).sum(1)) - half_log_det[:, None]
        return torch.logsumexp(log_normal + at_least_float32(self.weights).log()[:, None], dim=0)  # (B,)

    def extra_repr(self) -> str:
        return f"num_components={self.num_components}, latent_dim={self.latent_dim}"


LATENT_SAMPLER_CLASSES: dict[str, type[GaussianMixtureSampler]] = {GaussianMixtureSampler.kind: GaussianMixtureSampler}
LATENT_SAMPLERS = tuple(LATENT_SAMPLER_CLASSES)  # the names config.json's latent_sampler, sample(sampler=) and the CLI take


def build_latent_sampler(kind: str, num_components: int, latent_dim: int) -> GaussianMixtureSampler:
    """The unfitted sampler config.json describes (``latent_sampler``, ``sampler_components``), at its shapes."""
    if kind not in LATENT_SAMPLER_CLASSES:
        raise ConfigError(f"latent_sampler={kind!r} is unknown; use one of {', '.join(LATENT_SAMPLER_CLASSES)}")
    return LATENT_SAMPLER_CLASSES[kind](num_components, latent_dim)


def _full_covariances(covariances: np.ndarray, covariance_type: str, count: int, dim: int) -> Tensor:
    """scikit-learn's covariances_ of any covariance_type as (K, D, D) float64 matrices."""
    if covariance_type not in COVARIANCE_TYPES:
        raise InputError(f"covariance_type={covariance_type!r} is unknown; use one of {', '.join(COVARIANCE_TYPES)}")
    values = torch.from_numpy(covariances)
    if covariance_type == "tied":  # one (D, D) matrix shared by every component
        return values.expand(count, dim, dim).clone()
    if covariance_type == "diag":  # (K, D) variances
        return torch.diag_embed(values)
    if covariance_type == "spherical":  # (K,) one variance per component
        return values[:, None, None] * torch.eye(dim, dtype=values.dtype)
    return values
