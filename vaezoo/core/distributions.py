"""The diagonal Gaussian that encoders return, with its analytic KL.

>>> import torch
>>> q = DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
>>> q.kl().tolist()  # KL(N(0, I) || N(0, I)) = 0
[0.0, 0.0]
"""
from __future__ import annotations

import math

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
