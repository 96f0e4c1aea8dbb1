"""InfoVAE (Zhao, Song and Ermon 2017, "InfoVAE: Information Maximizing Variational Autoencoders",
arXiv:1706.02262), with the MMD divergence: the MMD-VAE.

vae-mlp's networks (an MLP encoder with a Gaussian q(z | x), p(z) = N(0, I), an MLP decoder, with the same
parameter names, so a vae-mlp state dict loads strictly); only the objective differs. InfoVAE's eq. 6, with
the divergence D between the aggregate posterior q(z) = E_data[q(z | x)] and the prior taken as MMD^2, is

    loss = E_q[-log p(x | z)] + (1 - alpha) * KL(q(z | x) || p(z)) + (alpha + lambda - 1) * MMD^2(q(z), p(z))

per example averaged over the batch, where MMD^2 is the unbiased estimate (vaezoo.core.mmd.mmd_squared) between
the batch's reparameterized z ~ q(z | x) (the same draws the reconstruction uses) and as many draws from N(0, I).
alpha = 0, lambda = 1 is the ELBO (the MMD weight is 0); alpha = 1 drops the per-example KL (Zhao et al.'s
MMD-VAE); the KL weight 1 - alpha is ramped by ``kl_warmup_steps`` like vae-mlp's beta. Zhao et al. require
lambda > 0 and alpha + lambda - 1 >= 0 (a non-negative weight on the divergence), and so does the config.

What ``forward`` reports besides the loss is the -ELBO, recon + KL with weight 1, as vae-mlp reports it; q(z | x)
is a Gaussian density, so ``log_likelihood`` (Burda et al.'s importance-weighted bound) works unchanged.
``metrics["mmd"]`` is the batch's MMD^2 estimate (unweighted). Defaults: alpha = 0 keeps the full KL (q(z | x)
stays a posterior the IW bound can use) and lambda = 10 puts a weight of 9 on MMD^2; the IMQ kernel at one
scale, as pythae's info_vae. Neither is tuned: set them per data set.

Reference implementation read: pythae (clementchadebec/benchmark_VAE), src/pythae/models/info_vae/info_vae_model.py
and info_vae_config.py. Same loss and kernels; differences: pythae's MMD term subtracts the kernel's diagonal
from every row (``k - k.diag()``) and divides by N - 1 and N rather than N(N - 1) and N^2, which is N * MMD^2_u
minus a constant, so its lambda acts N times stronger than here; and pythae's recon is BCE or MSE where this is
the configured likelihood's -log p(x | z).

    >>> import torch
    >>> model = InfoVAE(InfoVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4))
    >>> sorted(model(torch.rand(8, 64)).metrics)
    ['mmd']
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import VAEOutput
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.core.mmd import check_kernel, mmd_squared
from vaezoo.errors import ConfigError
from vaezoo.zoo.tags import PretrainedTag


@dataclass(frozen=True)
class InfoVAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp
    latent_dim: int = 32
    alpha: float = 0.0  # alpha of eq. 6: the KL weight is 1 - alpha (<= 1); 1 is the MMD-VAE without a per-example KL
    info_lambda: float = 10.0  # lambda of eq. 6 (> 0): the MMD^2 weight is alpha + lambda - 1 (>= 0)
    kernel: str = "imq"  # "imq" (inverse multiquadric) | "rbf" (Gaussian); see vaezoo.core.mmd
    kernel_bandwidth: float = 1.0  # sigma in C = 2 * latent_dim * sigma^2: the prior's scale
    kernel_scales: tuple[float, ...] = (1.0,)  # the kernel is summed over C * s for these s (pythae's info_vae: one)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha <= 1.0:
            raise ConfigError(f"alpha={self.alpha} must be <= 1: the KL weight 1 - alpha cannot be negative")
        if not self.info_lambda > 0:
            raise ConfigError(f"info_lambda={self.info_lambda} must be > 0 (Zhao et al. 2017, eq. 6), e.g. 10")
        if not self.mmd_coefficient >= 0:
            raise ConfigError(f"alpha={self.alpha} and info_lambda={self.info_lambda} give the MMD^2 term the weight alpha + "
                              f"lambda - 1 = {self.mmd_coefficient:g} < 0; raise info_lambda to at least {1 - self.alpha:g}")
        check_kernel(self.kernel, self.kernel_bandwidth, self.kernel_scales)

    @property
    def kl_coefficient(self) -> float:
        """1 - alpha, the weight of KL(q(z | x) || p(z)) in eq. 6."""
        return 1.0 - self.alpha

    @property
    def mmd_coefficient(self) -> float:
        """alpha + lambda - 1, the weight of MMD^2(q(z), p(z)) in eq. 6."""
        return self.alpha + self.info_lambda - 1.0


class InfoVAE(GaussianLatentVAE):
    """vae-mlp's networks trained on InfoVAE's objective with the MMD divergence (eq. 6); reports the -ELBO.

    >>> import torch
    >>> model = InfoVAE(InfoVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4, alpha=0.0, info_lambda=1.0))
    >>> out = model(torch.rand(8, 64))
    >>> bool(torch.isclose(out.loss, out.neg_elbo.mean()))  # alpha = 0, lambda = 1: the ELBO loss
    True
    """

    config_class = InfoVAEConfig
    registry_name = "info-vae"
    reported_metrics = {"mmd": "unbiased MMD^2 between the batch's z ~ q(z | x) and as many draws of p(z) = N(0, I)"}
    train_defaults = {"lr": 2e-3}  # vae-mlp's, for the same networks; not re-measured on this objective
    presets = {
        "tiny": {"hidden_dims": (32,), "latent_dim": 4},
        "mmd-vae": {"alpha": 1.0, "info_lambda": 10.0},  # no per-example KL: Zhao et al.'s MMD-VAE
    }
    pretrained_tags = {
        # vae-mlp.fmnist's networks and recipe (50 epochs) on the InfoVAE objective: the side-by-side comparison.
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist", hf_hub_id="vaezoo/info-vae.fmnist", recipe={"epochs": 50},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/info-vae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        posterior = self.encode(x, y)
        z = posterior.rsample()  # (B, D), reparameterized: both the reconstruction and q(z)'s sample for the MMD
        params = self.decode(z, y)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = posterior.kl()  # (B,) analytic
        mmd = self.mmd(z)
        config = self.config
        loss = recon.mean() + self.kl_weight(config.kl_coefficient) * kl.mean() + config.mmd_coefficient * mmd  # eq. 6
        return VAEOutput(loss=loss, terms={"mmd": mmd.detach()}, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl,
                         params=params, metrics={"mmd": mmd.detach()})

    def mmd(self, z: Tensor) -> Tensor:
        """MMD^2_u between the codes z (B, D) ~ q(z) and B fresh draws of the prior N(0, I), a scalar."""
        config = self.config
        prior_draws = torch.randn_like(z)  # (B, D) ~ p(z)
        return mmd_squared(z, prior_draws, config.kernel, config.kernel_bandwidth, config.kernel_scales)
