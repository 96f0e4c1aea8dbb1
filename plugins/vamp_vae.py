"""A VAE with a VampPrior (Tomczak and Welling 2018, "VAE with a VampPrior", AISTATS, arXiv:1705.07120).

The prior is the "variational mixture of posteriors": the model's own encoder evaluated at K learned
pseudo-inputs u_1 .. u_K, shaped like the data,

    p(z) = (1/K) sum_k q(z | u_k),   q(z | x) = N(mu(x), diag sigma^2(x))   (the paper's VampPrior)
    log p(z) = logsumexp_k log q(z | u_k) - log K

with the MLP encoder, decoder and Gaussian posterior of ``vae-mlp``. The KL between a Gaussian and a
mixture has no closed form, so it is a Monte Carlo estimate at the z that the reconstruction uses
(as in the reference code's ``calculate_loss``):

    KL(q(z | x) || p(z)) ~= log q(z | x) - log p(z),   z ~ q(z | x)
    -ELBO ~= -log p(x | z) + log q(z | x) - log p(z)          (one sample of z, per example)

``neg_elbo`` is this one-sample estimate (unbiased for the -ELBO; its ``kl`` part can be negative for
a single example), ``loss`` the same with the KL weighted by ``beta`` and the base class's warm-up.
``log_likelihood`` weighs each z ~ q(z | x) by p(x | z) p(z) / q(z | x) under the VampPrior, and
``prior_sample`` draws from the mixture: k uniform in 1..K, then z ~ q(z | u_k) with its standard
deviation scaled by the temperature.

The pseudo-inputs follow the reference implementation (github.com/jmtomczak/vae_vampprior,
``models/Model.py`` ``add_pseudoinputs`` and ``models/VAE.py`` ``log_p_z``; pythae's
``src/pythae/models/vamp/vamp_model.py`` builds the same, with a bias): u_k = hardtanh_[0, 1](W e_k),
a bias-free linear map of the k-th one-hot vector, i.e. the k-th column of W clamped to the data's
range. Here W is stored directly as K tensors of the input's shape; hardtanh clamps them to [0, 1] for
the Bernoulli and logistic-mixture likelihoods, and they are left unbounded for the Gaussian one (as an
earlier version of the reference's ``Model.py`` did for its "continuous" input type). The reference
initialises W as N(-0.05, 0.01), which hardtanh maps to 0 with zero gradient, so its pseudo-inputs never
move unless initialised from data; here they start at N(0.5, 0.1), inside the range where hardtanh
passes gradients. Each step encodes the K pseudo-inputs as well as the batch, so K = 500 costs about
as much as 500 more examples per step.

``log_prior`` overrides the contract's N(0, I), so the base class's ``importance_sample`` (hence
``log_likelihood`` and importance imputation) and Metropolis-within-Gibbs imputation score z under the
VampPrior.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vamp-vae", preset="tiny", input_shape=(1, 8, 8))
    >>> model(torch.rand(4, 1, 8, 8)).neg_elbo.shape
    torch.Size([4])
    >>> model.prior_sample(3).shape
    torch.Size([3, 4])
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.contract import VAEOutput
from vaezoo.core.distributions import LOG_2PI, DiagonalGaussian, at_least_float32
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.core.validation import check_count
from vaezoo.errors import CapabilityError, ConfigError
from vaezoo.zoo.tags import PretrainedTag
from vaezoo_plugins.vae_mlp import VanillaVAEConfig

PSEUDO_INPUT_INIT = (0.5, 0.1)  # mean and std of the pseudo-inputs at init: inside hardtanh's [0, 1], so they learn
MIXTURE_CHUNK_VALUES = 2**24  # (rows x K x latent_dim) values evaluated at once by mixture_log_prob, to bound memory


@dataclass(frozen=True)
class VampVAEConfig(VanillaVAEConfig):
    pseudo_inputs: int = 500  # K, the number of pseudo-inputs u_k and so of mixture components (the paper uses 500)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.pseudo_inputs, "pseudo_inputs", error=ConfigError,
                    hint=" (K, the number of mixture components of the VampPrior; the paper uses 500)")


def mixture_log_prob(z: Tensor, components: DiagonalGaussian) -> Tensor:
    """log (1/K) sum_k N(z; mean_k, diag exp(logvar_k)): z (B, D), components (K, D) -> (B,), in at least float32.

    The reference's ``log_p_z``: per-component log-densities (B, K), then a log-sum-exp over k, minus log K.
    Rows are taken in chunks so that the (rows, K, D) differences stay small under ``log_likelihood``.

    >>> q = DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    >>> round(float(mixture_log_prob(torch.zeros(1, 2), q)), 4)  # one component, N(0, I) at 0: -log(2 pi)
    -1.8379
    """
    mean, logvar = at_least_float32(components.mean), at_least_float32(components.logvar)  # (K, D)
    num_components, latent_dim = mean.shape
    precision = torch.exp(-logvar)
    rows = max(1, MIXTURE_CHUNK_VALUES // (num_components * latent_dim))
    log_mixture = []
    for chunk in at_least_float32(z).split(rows):
        squared = (chunk.unsqueeze(1) - mean) ** 2 * precision  # (b, K, D)
        log_component = -0.5 * (LOG_2PI + logvar + squared).sum(2)  # (b, K)
        log_mixture.append(torch.logsumexp(log_component, dim=1) - math.log(num_components))
    return torch.cat(log_mixture)  # an empty z is one empty chunk, so never an empty list


class VampPosterior(DiagonalGaussian):
    """q(z | x), a diagonal Gaussian whose ``kl()`` is against the VampPrior: a one-sample Monte Carlo estimate.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vamp-vae", preset="tiny", input_shape=(64,))
    >>> model.encode(torch.rand(3, 64)).kl().shape
    torch.Size([3])
    """

    def __init__(self, mean: Tensor, logvar: Tensor, log_prior: Callable[[Tensor], Tensor]) -> None:
        super().__init__(mean, logvar)
        self.log_prior = log_prior  # z (B, D) -> log p(z) (B,) under the model's VampPrior

    def kl(self, prior: DiagonalGaussian | None = None) -> Tensor:  # (B,)
        """KL(q || prior): analytic for a Gaussian ``prior``; for None (the VampPrior) log q(z) - log p(z) at one
        fresh z ~ q, an unbiased estimate (average several calls for a precise one)."""
        if prior is not None:
            return super().kl(prior)
        z = self.rsample()
        return self.log_prob(z) - self.log_prior(z)

    def kl_per_dim(self, prior: DiagonalGaussian | None = None) -> Tensor:
        if prior is None:
            raise CapabilityError("the VampPrior is a mixture that does not factorise over latent dims, so it has no "
                                  "per-dim KL; use kl() for the whole latent")
        return super().kl_per_dim(prior)


class PseudoInputs(nn.Module):
    """K learned pseudo-inputs u_k, shaped like the data: (K, *input_shape).

    The reference's hardtanh(W e_k) with W stored as the K inputs themselves; ``bounded`` clamps them to
    [0, 1], the range of data under the Bernoulli and logistic-mixture likelihoods.
    """

    def __init__(self, count: int, input_shape: Sequence[int], bounded: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(count, *input_shape))
        nn.init.normal_(self.weight, *PSEUDO_INPUT_INIT)
        self.bounded = bounded

    def forward(self) -> Tensor:  # () -> (K, *input_shape)
        return F.hardtanh(self.weight, 0.0, 1.0) if self.bounded else self.weight


class VampVAE(GaussianLatentVAE):
    """vae-mlp's encoder, decoder and Gaussian posterior under a VampPrior: loss = recon + beta * (Monte Carlo) KL.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vamp-vae", preset="tiny", input_shape=(64,))
    >>> model.log_likelihood(torch.rand(3, 64), iw_samples=5).shape
    torch.Size([3])
    """

    config_class = VampVAEConfig
    registry_name = "vamp-vae"
    # benchmarks/compile_default.py on Fashion-MNIST, 1 CPU thread, cold cache: torch.compile speeds the step 1.56x
    # and 1.68x (its mixture over the pseudo-inputs' posteriors is many small kernels, which Inductor fuses) and
    # pays for itself after 1,351 and 605 steps in two runs; rounded up, for a shared machine's noise.
    compile_pays_after_steps = 2000
    presets = {
        "tiny": {"hidden_dims": (32,), "latent_dim": 4, "pseudo_inputs": 10},
        # The paper's MNIST sizes (300-300 MLP, 40 latents, K = 500), with ReLU layers in place of its gated ones.
        "paper": {"hidden_dims": (300, 300), "latent_dim": 40, "pseudo_inputs": 500},
    }
    # vae-mlp.digits' networks and recipe, so the two compare at the same architecture and budget.
    pretrained_tags = {
        # vae-mlp.fmnist's networks and recipe (50 epochs) under a VampPrior with the paper's 500 pseudo-inputs.
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist", hf_hub_id="vaezoo/vamp-vae.fmnist", recipe={"epochs": 50},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8, "pseudo_inputs": 50}, dataset="digits",
            hf_hub_id="vaezoo/vamp-vae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def __init__(self, config: VampVAEConfig) -> None:
        super().__init__(config)  # encoder, posterior_head and decoder, as vae-mlp's
        self.pseudo_inputs = PseudoInputs(config.pseudo_inputs, config.input_shape, config.likelihood != "gaussian")

    # --- the prior ---------------------------------------------------------------------------------
    def _gaussian(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, *input_shape) -> 2 x (B, D)
        return self.posterior_head(self.encoder(x))

    def prior_components(self) -> DiagonalGaussian:
        """q(z | u_k) for every pseudo-input, the mixture's K components: mean and logvar of shape (K, latent_dim)."""
        return DiagonalGaussian(*self._gaussian(self.pseudo_inputs()))

    def log_prior(self, z: Tensor) -> Tensor:
        """The contract's log p(z), here logsumexp_k log q(z | u_k) - log K: z (B, latent_dim) -> (B,), at least float32."""
        return mixture_log_prob(z, self.prior_components())

    # --- the contract --------------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> VampPosterior:
        return VampPosterior(*self._gaussian(x), log_prior=self.log_prior)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        """-ELBO per example as a one-sample estimate: the KL is log q(z | x) - log p(z) at the decoded z."""
        self.check_input(x, y)
        x = self.prepare_target(x)
        posterior = self.encode(x)
        z = posterior.rsample()  # (B, D)
        params = self.decode(z)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = posterior.log_prob(z) - self.log_prior(z)  # (B,), no closed form under a mixture prior
        loss = (recon + self.kl_weight(self.config.beta) * kl).mean()
        return VAEOutput(loss=loss, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params)

    def prior_sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """n draws from the mixture, (n, latent_dim) in the model's dtype: k uniform in 0..K-1, then
        z = mean_k + temperature * std_k * eps (temperature 0 gives the chosen components' means)."""
        components = self.prior_components()
        k = torch.randint(self.config.pseudo_inputs, (n,), device=self.device)
        return DiagonalGaussian(components.mean[k], components.logvar[k]).rsample(temperature).to(self.dtype)
