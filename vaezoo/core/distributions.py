"""The diagonal Gaussian that encoders return, with its analytic KL; the posterior of a top-down hierarchy.

>>> import torch
>>> q = DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
>>> q.kl().tolist()  # KL(N(0, I) || N(0, I)) = 0
[0.0, 0.0]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def at_least_float32(t: Tensor) -> Tensor:
    """float16/bfloat16 as float32, others unchanged: densities summed over many dims need the precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over every non-batch dim; log-densities are summed to shape (B,).

    It is a :class:`vaezoo.core.contract.Posterior` for one Gaussian latent: ``kl()`` is against N(0, I).
    """

    is_gaussian = True

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        # Clamping keeps exp() finite early in training without changing any reachable optimum.
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def layers(self) -> list[DiagonalGaussian]:
        return [self]

    def mode(self) -> Tensor:
        return self.mean

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.logvar)

    def rsample(self, temperature: float = 1.0) -> Tensor:
        """Reparameterized sample z = mean + std * eps (Kingma and Welling 2014, eq. 10)."""
        return self.mean + temperature * self.std * torch.randn_like(self.mean)

    def log_prob(self, z: Tensor) -> Tensor:  # (B,), in at least float32
        mean, logvar, z = at_least_float32(self.mean), at_least_float32(self.logvar), at_least_float32(z)
        log_density = -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 / logvar.exp())
        return log_density.flatten(1).sum(1)

    def kl_per_dim(self, prior: DiagonalGaussian | None = None) -> Tensor:
        """KL(self || prior) elementwise; prior None means N(0, I).

        KL(N(m1, v1) || N(m2, v2)) = 0.5 * (log v2/v1 + (v1 + (m1 - m2)^2) / v2 - 1); with m2 = 0, v2 = 1
        this is the seed's -0.5 * (1 + logvar - mean^2 - exp(logvar)) (Kingma and Welling 2014, appendix B).
        """
        mean, logvar = at_least_float32(self.mean), at_least_float32(self.logvar)
        if prior is None:
            return -0.5 * (1 + logvar - mean**2 - logvar.exp())
        prior_mean, prior_logvar = at_least_float32(prior.mean), at_least_float32(prior.logvar)
        return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp() - 1)

    def kl(self, prior: DiagonalGaussian | None = None) -> Tensor:  # (B,)
        return self.kl_per_dim(prior).flatten(1).sum(1)

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self.mean.shape)})"


def standard_normal_log_prob(z: Tensor) -> Tensor:  # (B,), in at least float32
    return (-0.5 * (LOG_2PI + at_least_float32(z) ** 2)).flatten(1).sum(1)


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """bound * tanh(x / bound): the identity near 0, smoothly bounded (NVAE's soft_clamp5, Vahdat and Kautz 2020),
    so that a log-variance or a mean cannot blow the KL up early in training."""
    return bound * torch.tanh(x / bound)


@dataclass
class TopDownPosterior:
    """q(z | x) of a top-down hierarchy from one pass (LVAE, NVAE, VDVAE): per-layer posteriors, priors and
    samples, bottom first (index 0 = z_1), as a hierarchy's ``decode`` takes its latents.

    Each layer's q and p are those of this pass, conditioned on the ``samples`` drawn above it; so
    ``log_prob`` is exact at this pass's samples only (which is why Metropolis-within-Gibbs, needing
    q at any z, does not apply). A :class:`vaezoo.core.contract.Posterior`.
    """

    posteriors: list[DiagonalGaussian]  # q(z_i | x, z_{>i})
    priors: list[DiagonalGaussian]  # p(z_i | z_{>i})
    samples: list[Tensor]  # z_i; the z_{>i} each layer was conditioned on
    is_gaussian = True

    @property
    def mean(self) -> list[Tensor]:
        return [q.mean for q in self.posteriors]

    @property
    def layers(self) -> list[DiagonalGaussian]:
        return self.posteriors

    def mode(self) -> list[Tensor]:
        return self.mean

    def rsample(self, temperature: float = 1.0) -> list[Tensor]:
        """New z_i from each layer's q given this pass's z_{>i} (the pass's own draw is ``samples``)."""
        return [q.rsample(temperature) for q in self.posteriors]

    def log_prob(self, z: list[Tensor]) -> Tensor:  # (B,)
        """sum_i log q(z_i | x, z_{>i}), each layer's q conditioned on this pass's samples above it."""
        return sum(q.log_prob(zi) for q, zi in zip(self.posteriors, z))

    def log_prior_ratio(self) -> Tensor:  # (B,)
        """sum_i log p(z_i | z_{>i}) - log q(z_i | x, z_{>i}) at this pass's samples: an importance weight's
        latent part (Burda et al. 2016), what ``VAE.importance_sample`` returns beside p(x | z)'s parameters."""
        log_prior = sum(p.log_prob(z) for p, z in zip(self.priors, self.samples))
        return log_prior - self.log_prob(self.samples)

    def kl_per_dim(self) -> list[Tensor]:  # each (B, *layer's shape)
        """KL(q(z_i | x, z_{>i}) || p(z_i | z_{>i})) per dim of each layer, analytic given this pass's samples."""
        return [q.kl_per_dim(p) for q, p in zip(self.posteriors, self.priors)]

    def kl_per_layer(self) -> list[Tensor]:  # L x (B,)
        return [kl.flatten(1).sum(1) for kl in self.kl_per_dim()]

    def kl(self) -> Tensor:  # (B,)
        """sum_i KL(q(z_i | x, z_{>i}) || p(z_i | z_{>i})) (LVAE, Sønderby et al. 2016, eq. 13)."""
        return torch.stack(self.kl_per_layer()).sum(0)
