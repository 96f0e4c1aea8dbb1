"""WAE-MMD (Tolstikhin, Bousquet, Gelly and Schoelkopf 2018, "Wasserstein Auto-Encoders", arXiv:1711.01558,
Algorithm 2), with vae-mlp's networks and a deterministic encoder.

The encoder maps x to one code z = f(x) (B, latent_dim), the decoder maps z to p(x | z)'s parameters, and the
objective is the reconstruction cost plus a penalty that pulls the distribution of the codes Q_Z towards the
prior P_Z = N(0, I) (Algorithm 2, with z_i = f(x_i) and fresh z~_i ~ P_Z):

    loss = 1/n sum_i c(x_i, G(z_i)) + lambda * MMD^2_k({z_i}, {z~_i})

MMD^2_k is the unbiased estimate of vaezoo.core.mmd.mmd_squared, by default with Tolstikhin et al.'s inverse
multiquadric kernel k(x, y) = C / (C + ||x - y||^2), C = 2 * latent_dim * sigma^2, summed over the scales
.1 .. 10 of their reference code, and lambda = 10 as their MNIST config. The cost c is the framework's
likelihood: c(x, G(z)) = -log p(x | z) (binary cross-entropy under the default Bernoulli likelihood, squared
error plus a constant under a Gaussian one), and the reconstruction is that likelihood's mean at z = f(x).

There is no ELBO. q(z | x) is a point mass at f(x): it has no density, so KL(q(z | x) || p(z)) is +inf and the
ELBO is -inf, a bound that says nothing. The class declares ``Capabilities(elbo=False)``: ``forward`` fills
``kl`` and ``neg_elbo`` with that +inf, and vaezoo's evaluate reports the loss instead of them, bench prints
them n/a with the reason, and the trainer validates by the loss (``TrainingStage(validation="loss")``). For the
same reason there are no importance weights (``log_likelihood=False``) and no Metropolis-within-Gibbs
imputation. Sampling draws z from the prior N(0, I), and the GMM latent sampler fitted to the codes applies.

References read: Tolstikhin et al.'s code (tolstikhin/wae, wae.py ``mmd_penalty`` and configs.py) and pythae
(clementchadebec/benchmark_VAE, src/pythae/models/wae_mmd/wae_mmd_model.py, which uses the encoder's embedding
only). Differences: both use a squared-error cost (the reference scales it by 0.05) where this uses -log p(x | z);
pythae's MMD term is N * MMD^2_u minus a constant (it subtracts the kernel's diagonal from every row and divides
by N - 1 and N), so its lambda acts N times stronger than here; the reference's RBF kernel picks C by a median
heuristic where this uses pythae's fixed C.

    >>> import torch
    >>> model = WAE(WAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4))
    >>> out = model(torch.rand(8, 64))
    >>> sorted(out.metrics), bool(out.neg_elbo.isinf().all())
    (['mmd'], True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaezoo.core.backbones import build_decoder, build_encoder
from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import Capabilities, StepOutput, TrainingStage, VAEOutput
from vaezoo.core.mmd import IMQ_SCALES, check_kernel, mmd_squared
from vaezoo.core.model import VAE
from vaezoo.errors import ConfigError
from vaezoo.zoo.tags import PretrainedTag


@dataclass(frozen=True)
class WAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp
    latent_dim: int = 32
    wae_lambda: float = 10.0  # lambda of Algorithm 2, the weight of MMD^2 (>= 0; Tolstikhin et al.'s MNIST config: 10)
    kernel: str = "imq"  # "imq" (inverse multiquadric, Tolstikhin et al.) | "rbf" (Gaussian); see vaezoo.core.mmd
    kernel_bandwidth: float = 1.0  # sigma in C = 2 * latent_dim * sigma^2: the prior's scale
    kernel_scales: tuple[float, ...] = IMQ_SCALES  # the kernel is summed over C * s for these s (the reference's)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.wae_lambda >= 0:
            raise ConfigError(f"wae_lambda={self.wae_lambda} must be >= 0 (0 trains a plain autoencoder), e.g. 10")
        check_kernel(self.kernel, self.kernel_bandwidth, self.kernel_scales)
        if self.kl_warmup_steps != 0:
            raise ConfigError(f"kl_warmup_steps={self.kl_warmup_steps} has nothing to warm up: a WAE has no KL term; "
                              "set kl_warmup_steps=0")


@dataclass
class PointMass:
    """q(z | x) of a deterministic encoder: all its mass on the code f(x) (a vaezoo Posterior, not Gaussian)."""

    code: Tensor  # (B, latent_dim), f(x)
    is_gaussian = False

    @property
    def mean(self) -> Tensor:
        return self.code

    @property
    def layers(self) -> list[PointMass]:
        return [self]

    def mode(self) -> Tensor:
        return self.code

    def rsample(self, temperature: float = 1.0) -> Tensor:
        """Every draw is the code itself."""
        return self.code

    def log_prob(self, z: Tensor) -> Tensor:  # (B,)
        """log q(z | x) as a point mass: 0 at the code, -inf anywhere else (no density with respect to Lebesgue)."""
        at_code = (z == self.code).flatten(1).all(1)
        return torch.where(at_code, 0.0, -math.inf).to(self.code.dtype)

    def kl(self) -> Tensor:  # (B,)
        """KL(q(z | x) || N(0, I)) of a point mass against a continuous prior: +inf (hence Capabilities(elbo=False))."""
        return self.code.new_full(self.code.shape[:1], math.inf)


class WAE(VAE):
    """WAE-MMD: a deterministic encoder, loss = -log p(x | G(f(x))) + lambda * MMD^2(Q_Z, N(0, I)); no ELBO.

    >>> import torch
    >>> model = WAE(WAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4))
    >>> model.stages()[0].validation
    'loss'
    """

    config_class = WAEConfig
    registry_name = "wae"
    # A point-mass q(z | x): no density, so no ELBO, no importance weights and no MWG (see the module docstring).
    capabilities = Capabilities(elbo=False, log_likelihood=False, mwg_imputation=False)
    reported_metrics = {"mmd": "unbiased MMD^2 between the batch's codes f(x) and as many draws of p(z) = N(0, I)"}
    train_defaults = {"lr": 2e-3}  # vae-mlp's, for the same networks; not re-measured on this objective
    presets = {"tiny": {"hidden_dims": (32,), "latent_dim": 4}}
    pretrained_tags = {
        # vae-mlp.fmnist's networks and recipe (50 epochs) on the MMD objective: the side-by-side comparison.
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist", hf_hub_id="vaezoo/wae.fmnist", recipe={"epochs": 50},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/wae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def __init__(self, config: WAEConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.code_head = nn.Linear(self.encoder.out_features, config.latent_dim)  # the embedding only, as pythae
        self.decoder = build_decoder(config, config.latent_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass:
        return PointMass(self.code_head(self.encoder(x)))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        posterior = self.encode(x, y)
        z = posterior.mean  # (B, latent_dim), z_i = f(x_i)
        params = self.decode(z, y)
        recon = -self.likelihood.log_prob(params, x)  # (B,): the cost c(x, G(z)) = -log p(x | z)
        mmd = self.mmd(z)
        loss = recon.mean() + self.config.wae_lambda * mmd  # Algorithm 2
        kl = posterior.kl()  # (B,) +inf: not a figure (capabilities.elbo is False)
        return VAEOutput(loss=loss, terms={"mmd": mmd.detach()}, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl,
                         params=params, metrics={"mmd": mmd.detach()})

    def mmd(self, z: Tensor) -> Tensor:
        """MMD^2_u between the codes z (B, D) and B fresh draws of the prior N(0, I), a scalar."""
        config = self.config
        prior_draws = torch.randn_like(z)  # (B, D) ~ P_Z
        return mmd_squared(z, prior_draws, config.kernel, config.kernel_bandwidth, config.kernel_scales)

    def objective(self, x: Tensor, y: Tensor | None = None) -> StepOutput:
        """The training step: forward's loss with its finite parts (recon, mmd), without the +inf kl."""
        out = self(x, y)
        return StepOutput(loss=out.loss, terms={"recon": out.recon.detach(), **out.terms})

    def stages(self) -> list[TrainingStage]:
        """One stage, validated by its loss: there is no -ELBO to validate by."""
        return [TrainingStage("main", self.parameters, self.objective, validation="loss")]
