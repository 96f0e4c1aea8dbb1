"""DIP-VAE, types I and II (Kumar, Sattigeri and Balakrishnan 2018, "Variational Inference of Disentangled
Latent Concepts from Unlabeled Observations", arXiv:1711.00848), with vae-mlp's networks.

The ELBO plus a penalty that pulls a covariance matrix C (D x D) of the latents towards the identity, so that
the aggregate posterior q(z) = E_data[q(z | x)] decorrelates like the prior N(0, I):

    loss = E_q[-log p(x | z)] + KL(q(z | x) || p(z)) + lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2

- type I (eq. 6):  C = Cov_data[mu(x)], the covariance of the encoder means over the batch;
- type II (eq. 7): C = Cov_q(z) = E_data[Sigma(x)] + Cov_data[mu(x)], the aggregate posterior's covariance.

Both covariances are batch estimates normalised by B (E[mu mu^T] - E[mu] E[mu]^T, as disentanglement_lib's
``compute_covariance_z_mean``; torch.cov(mu.T, correction=0)). ``lambda_d`` left unset (None) takes
disentanglement_lib's defaults: 10 * lambda_od for type I, lambda_od for type II; ``lambda_od`` = 10 lies inside
its sweep (1 to 50) and is not tuned here. ``kl_warmup_steps`` ramps the KL only. ``neg_elbo`` is recon + KL with
weight 1; ``metrics`` holds the two unweighted penalties of the batch's C.

References read: google-research/disentanglement_lib disentanglement_lib/methods/unsupervised/vae.py (``DIPVAE``,
``regularize_diag_off_diag_dip``, ``compute_covariance_z_mean``) and its sweep
disentanglement_lib/config/unsupervised_study_v1/sweep.py (``lambda_d_factor`` 10 and 1). pythae has no DIP-VAE
(its disentangled_beta_vae is Burgess et al.'s capacity objective, vaezoo's beta-vae "capacity"); AntixK/PyTorch-VAE
models/dip_vae.py was read and not followed: it centres mu over the latent dim instead of the batch, leaves the
covariance unnormalised, and adds exp(2 logvar) where Sigma is exp(logvar).

    >>> import torch
    >>> model = DIPVAE(DIPVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4, dip_type="ii"))
    >>> sorted(model(torch.rand(8, 64)).metrics)
    ['cov_diag', 'cov_offdiag']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import VAEOutput
from vaezoo.core.distributions import DiagonalGaussian, at_least_float32
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.errors import ConfigError, did_you_mean
from vaezoo.zoo.tags import PretrainedTag

DIP_TYPES = ("i", "ii")
LAMBDA_D_FACTORS = {"i": 10.0, "ii": 1.0}  # disentanglement_lib's lambda_d_factor per type (unsupervised_study_v1)


@dataclass(frozen=True)
class DIPVAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp
    latent_dim: int = 10  # few latents, as disentanglement_lib, so that each can take one factor
    dip_type: str = "i"  # "i": C = Cov[mu(x)] (eq. 6) | "ii": C = E[Sigma(x)] + Cov[mu(x)] (eq. 7)
    lambda_od: float = 10.0  # weight of sum_{i != j} C_ij^2 (disentanglement_lib sweeps 1 to 50)
    lambda_d: float | None = None  # weight of sum_i (C_ii - 1)^2; None = 10 * lambda_od (type i) or lambda_od (ii)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dip_type not in DIP_TYPES:
            raise ConfigError(f"dip_type={self.dip_type!r} is unknown; use 'i' (covariance of the encoder means) or 'ii' "
                              f"(covariance of q(z))" + did_you_mean(str(self.dip_type), DIP_TYPES))
        if not self.lambda_od >= 0:
            raise ConfigError(f"lambda_od={self.lambda_od} must be >= 0 (0 drops the off-diagonal penalty), e.g. 10")
        if self.lambda_d is not None and not self.lambda_d >= 0:
            raise ConfigError(f"lambda_d={self.lambda_d} must be >= 0, or None for disentanglement_lib's default "
                              f"({LAMBDA_D_FACTORS[self.dip_type]:g} * lambda_od for dip_type={self.dip_type!r})")

    @property
    def diagonal_weight(self) -> float:
        """lambda_d as set, else disentanglement_lib's lambda_d_factor * lambda_od for this type."""
        return LAMBDA_D_FACTORS[self.dip_type] * self.lambda_od if self.lambda_d is None else self.lambda_d


class DIPPenalties(NamedTuple):
    """The two parts of the DIP regulariser for one covariance C, unweighted scalars."""

    offdiag: Tensor  # sum_{i != j} C_ij^2
    diag: Tensor  # sum_i (C_ii - 1)^2


def dip_covariance(posterior: DiagonalGaussian, dip_type: str) -> Tensor:
    """C of eq. 6 (type "i") or eq. 7 (type "ii") over the batch, shape (D, D).

    >>> q = DiagonalGaussian(torch.randn(6, 3), torch.zeros(6, 3))
    >>> bool(torch.allclose(dip_covariance(q, "i"), torch.cov(q.mean.T, correction=0), atol=1e-6))
    True
    """
    mean = at_least_float32(posterior.mean)  # (B, D)
    centred = mean - mean.mean(0)
    covariance = centred.T @ centred / mean.shape[0]  # Cov_data[mu(x)], normalised by B
    if dip_type == "ii":
        covariance = covariance + torch.diag(at_least_float32(posterior.variance).mean(0))  # + E_data[Sigma(x)]
    return covariance


def dip_penalties(covariance: Tensor) -> DIPPenalties:
    """How far C is from the identity: its squared off-diagonal entries and squared diagonal deviations from 1."""
    diagonal = covariance.diagonal()
    off_diagonal = covariance - torch.diag(diagonal)
    return DIPPenalties(offdiag=(off_diagonal**2).sum(), diag=((diagonal - 1) ** 2).sum())


class DIPVAE(GaussianLatentVAE):
    """vae-mlp's networks trained on the ELBO plus DIP-VAE's covariance penalty (type I or II); reports the -ELBO.

    >>> import torch
    >>> model = DIPVAE(DIPVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4, lambda_od=0.0, lambda_d=0.0))
    >>> out = model(torch.rand(8, 64))
    >>> bool(torch.isclose(out.loss, out.neg_elbo.mean()))  # no penalty: the ELBO loss
    True
    """

    config_class = DIPVAEConfig
    registry_name = "dip-vae"
    reported_metrics = {
        "cov_offdiag": "sum of squared off-diagonal entries of the DIP covariance of the batch (type I or II)",
        "cov_diag": "sum of squared deviations from 1 of the DIP covariance's diagonal",
    }
    train_defaults = {"lr": 2e-3}  # vae-mlp's, for the same networks; not re-measured on this objective
    presets = {
        "tiny": {"hidden_dims": (32,), "latent_dim": 4},
        "ii": {"dip_type": "ii"},  # DIP-VAE-II with lambda_d = lambda_od
    }
    pretrained_tags = {
        # shapes2d (dSprites-like, 56k training images, 64x64): DIP-VAE-I, lambda_od = 10, lambda_d = 100;
        # networks and budget of vae-mlp.shapes2d. A 64-wide hidden layer keeps the weights near 1 MB (the zoo
        # stays under 30 MB); an MLP, as Chen et al. use on dSprites, because conv nets train 20x slower per
        # step on this CPU (measured: 495 vs 21 ms at batch 64).
        "shapes2d": PretrainedTag(
            {"input_shape": (1, 64, 64), "encoder": "mlp", "decoder": "mlp", "hidden_dims": (64,), "latent_dim": 10},
            dataset="shapes2d", hf_hub_id="vaezoo/dip-vae.shapes2d", recipe={"epochs": 100, "batch_size": 64},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/dip-vae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        posterior = self.encode(x, y)
        params = self.decode(posterior.rsample(), y)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = posterior.kl()  # (B,) analytic
        config = self.config
        penalties = dip_penalties(dip_covariance(posterior, config.dip_type))
        dip = config.lambda_od * penalties.offdiag + config.diagonal_weight * penalties.diag  # eq. 6 / eq. 7
        loss = recon.mean() + self.kl_weight(1.0) * kl.mean() + dip
        metrics = {"cov_offdiag": penalties.offdiag.detach(), "cov_diag": penalties.diag.detach()}
        return VAEOutput(loss=loss, terms={"dip": dip.detach()}, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl,
                         params=params, metrics=metrics)
