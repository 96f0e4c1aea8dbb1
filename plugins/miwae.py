"""MIWAE: a VAE trained on data with missing values (Mattei and Frellsen 2019, "MIWAE: Deep Generative
Modelling and Imputation of Incomplete Data Sets", ICML, arXiv:1812.02633).

Not to be confused with ``iwae``'s ``objective="miwae"``, the *multiply* importance weighted bound of
Rainforth et al. 2018 on complete data: registry name ``miwae`` is Mattei and Frellsen's model here.

NaN in x marks a missing value. With o the observed entries of x, x~ = x with the missing entries set
to 0 (what the encoder reads, as in the reference's ``xhat_0``) and z_1 .. z_K ~ q(z | x~):

    log w_k = log p(x_o | z_k) + log p(z_k) - log q(z_k | x~)            (the decoder factorises over values,
                                                                            so log p(x_o | z) sums the observed ones)
    L_K(x_o) = log (1/K) sum_k w_k  <=  log p(x_o)                        (the MIWAE bound, sec. 2, eq. 4-5)

and the loss is minus its batch mean, with reparameterized z (one encoder pass, K decoder passes). On
complete data o is everything, and MIWAE is IWAE (Burda et al. 2016, arXiv:1509.00519, eq. 8): the same
networks, draws and numbers as ``iwae`` with ``objective="iwae"`` (tests/test_miwae.py checks it bit for bit).

Single imputation (sec. 3.2, eq. 8-9) is the self-normalised importance-weighted mean
E[x_m | x_o] ~= sum_k w_k E[x_m | z_k] / sum_k w_k. The framework's ``vaezoo.apps.impute(model, x,
method="importance")`` computes exactly that from ``importance_sample`` and the likelihood's observed mask;
with ``fill=0`` and ``iterations=1`` its proposal is the paper's q(z | x~), and its default adapts the
proposal over rounds (see vaezoo/apps/imputation.py). Nothing here overrides it.

What ``forward`` reports besides the loss: ``neg_elbo`` per example is the one-sample -ELBO over the
observed values, -log p(x_o | z_1) + KL(q(z | x~) || p(z)) with the analytic KL and weight 1 (vae-mlp's
figure on complete data); on incomplete data it is in nats of the observed values only, so it compares
across models only at the same missingness. ``metrics["iw_bound"]`` is the batch mean of L_K and
``metrics["observed_fraction"]`` the share of values observed. ``log_likelihood`` on x with NaN estimates
log p(x_o): ``log_weights`` scores the observed values only. There is no KL term to warm up.

K = ``iw_samples`` defaults to 5, iwae's default (the paper trains with K = 20): a step costs one
encoder pass and K decoder passes, so K = 5 keeps a CPU epoch within a few vae-mlp epochs, while
any K > 1 already gives a bound that is tighter than the ELBO. Preset ``k20`` is the paper's K.

Reference implementation read: pamattei/miwae, MIWAE_Pytorch_exercises_demo.ipynb (``miwae_loss``: the
mask multiplies the per-value log-densities of the zero-filled data before the sum over values;
``miwae_impute``: softmax over the K log weights, einsum with draws from p(x | z_k)). Differences: the
notebook's bound omits the -log K (it adds it when printing) and uses a Student's t likelihood on
standardised UCI data, where this file takes vaezoo's likelihoods; its imputation averages samples of
x_m | z_k, where vaezoo averages their means E[x_m | z_k] (the same expectation, less variance).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("miwae", preset="tiny", input_shape=(1, 8, 8))
    >>> x = torch.rand(4, 1, 8, 8).masked_fill(torch.rand(4, 1, 8, 8) < 0.3, float("nan"))
    >>> bool(model(x).loss.isfinite())
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import Capabilities, VAEOutput
from vaezoo.core.distributions import DiagonalGaussian, at_least_float32
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.core.likelihoods import param_shape
from vaezoo.core.validation import check_count, check_output_size, value_problem
from vaezoo.errors import ConfigError, InputError
from vaezoo.zoo.tags import PretrainedTag
from vaezoo_plugins.iwae import iwae_bound


@dataclass(frozen=True)
class MIWAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp and iwae
    latent_dim: int = 32
    iw_samples: int = 5  # K, importance samples per bound (the paper trains with 20; 5 is cheap on a CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.iw_samples, "iw_samples", error=ConfigError, hint=" (K, samples per bound, e.g. 5)")
        if self.kl_warmup_steps != 0:
            raise ConfigError(f"kl_warmup_steps={self.kl_warmup_steps} has nothing to warm up: the MIWAE bound has "
                              "no separate KL term; set kl_warmup_steps=0")


def zero_filled(x: Tensor) -> Tensor:
    """x with each NaN (missing value) set to 0: what the encoder reads, and a NaN-free target for the likelihood.

    >>> zero_filled(torch.tensor([[0.5, float("nan")]])).tolist()
    [[0.5, 0.0]]
    """
    return torch.where(torch.isnan(x), torch.zeros((), dtype=x.dtype, device=x.device), x)


class _Draws(NamedTuple):
    """K draws z ~ q(z | x~) per example; row k * B + b of the flat tensors is draw k of example b."""

    posterior: DiagonalGaussian  # q(z | x~), (B, D)
    params: Tensor  # p(x | z)'s parameters, (K * B, *param_shape)
    log_px_given_z: Tensor  # log p(x_o | z_k), (K, B)
    log_prior_ratio: Tensor  # log p(z_k) - log q(z_k | x~), (K, B)
    observed: Tensor  # bool, (B, *input_shape)

    @property
    def log_weights(self) -> Tensor:  # (K, B)
        return self.log_px_given_z + self.log_prior_ratio


class MIWAE(GaussianLatentVAE):
    """vae-mlp's networks trained on the MIWAE bound over the observed values; NaN in x marks a missing value.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("miwae", preset="tiny", input_shape=(64,)).eval()
    >>> x = torch.rand(3, 64)
    >>> x[0, :32] = float("nan")                       # the first row's first half is missing
    >>> model.log_likelihood(x, iw_samples=50).shape   # log p(x_o) per row
    torch.Size([3])
    """

    config_class = MIWAEConfig
    registry_name = "miwae"
    capabilities = Capabilities(missing_values=True)
    reported_metrics = {
        "iw_bound": "the MIWAE bound log (1/K) sum_k w_k over the observed values, nats per example",
        "observed_fraction": "the share of the values that are observed (not NaN)",
    }
    train_defaults = {"lr": 2e-3}  # vae-mlp's and iwae's, for these networks; not re-measured with missing data
    presets = {
        "tiny": {"hidden_dims": (32,), "latent_dim": 4},
        "k20": {"iw_samples": 20},  # the paper's K
    }
    # The complete digits (no value missing): on them miwae trains as iwae; it imputes whatever is NaN at use.
    pretrained_tags = {
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/miwae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z | x~), x~ = x zero-filled where it is NaN (the paper's encoder input)."""
        return super().encode(zero_filled(x), y)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        draws = self._draw(self.prepare_target(x), self.config.iw_samples)
        bound = iwae_bound(draws.log_weights)  # (B,)
        recon = -draws.log_px_given_z[0]  # (B,): the first draw, a one-sample ELBO over the observed values
        kl = draws.posterior.kl()  # (B,) analytic, weight 1
        metrics = {"iw_bound": bound.mean().detach(), "observed_fraction": draws.observed.float().mean()}
        return VAEOutput(loss=-bound.mean(), recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl,
                         params=draws.params[: x.shape[0]], metrics=metrics)

    def training_bound(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """L_K over the observed values per example at one fresh set of K draws, (B,), in nats."""
        self.check_input(x, y)
        return iwae_bound(self._draw(self.prepare_target(x), self.config.iw_samples).log_weights)

    def log_weights(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One draw of log p(x_o | z) + log p(z) - log q(z | x~), (B,): ``log_likelihood`` then bounds log p(x_o)."""
        params, log_prior_ratio = self.importance_sample(x, y)  # encode zero-fills x
        return self.likelihood.log_prob(params, zero_filled(x), ~torch.isnan(x)) + log_prior_ratio

    def prepare_target(self, x: Tensor) -> Tensor:
        """As the base class, but a missing value stays NaN under dynamic binarization (only observed ones are drawn)."""
        x = at_least_float32(x)
        if self.config.dynamic_binarization and self.training:
            return torch.where(torch.isnan(x), x, torch.bernoulli(zero_filled(x)))
        return x

    def _check_values(self, x: Tensor) -> None:
        """NaN is a missing value; Inf is refused, and the observed values must fit the likelihood."""
        if bool(torch.isinf(x).any()):
            raise InputError("x holds Inf values; mark a missing value with NaN, not Inf")
        problem = value_problem(zero_filled(x), self.config.likelihood)
        if problem:
            raise InputError(f"x {problem}")

    def _draw(self, x: Tensor, samples: int) -> _Draws:
        """Encode x~ once, draw ``samples`` reparameterized z per example, and weigh each by the observed values.

        The draws are made as iwae's are (one randn of (K * B, D)), so on complete data the numbers are iwae's.
        """
        check_output_size(x.shape[0] * samples, param_shape(self.config), "batch * iw_samples",
                          hint=" draws per step; lower the batch size or iw_samples")
        observed = ~torch.isnan(x)  # (B, *input_shape)
        filled = zero_filled(x)
        posterior = self.encode(filled)  # (B, D)
        repeated = DiagonalGaussian(posterior.mean.repeat(samples, 1), posterior.logvar.repeat(samples, 1))
        z = repeated.rsample()  # (K * B, D)
        tile = (samples, *([1] * (x.dim() - 1)))
        params = self.decode(z)
        # log p(x_o | z): the 0s standing in for missing values are scored, then masked out, so no NaN reaches a gradient
        log_px_given_z = self.likelihood.log_prob(params, filled.repeat(tile), observed.repeat(tile)).view(samples, -1)
        log_prior_ratio = (self.log_prior(z) - repeated.log_prob(z)).view(samples, -1)  # (K, B)
        return _Draws(posterior, params, log_px_given_z, log_prior_ratio, observed)
