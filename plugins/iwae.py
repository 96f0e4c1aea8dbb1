"""Importance-weighted autoencoders: IWAE (Burda, Grosse and Salakhutdinov 2016, "Importance Weighted
Autoencoders", arXiv:1509.00519) and the MIWAE, PIWAE and CIWAE objectives of Rainforth, Kosiorek, Le,
Maddison, Igl, Wood and Teh 2018 ("Tighter Variational Bounds are Not Necessarily Better", arXiv:1802.04537).
``objective="miwae"`` is Rainforth et al.'s multiply importance weighted bound; the model registered as ``miwae``
(plugins/miwae.py) is another: Mattei and Frellsen's 2019 MIWAE, for data with missing values.

The networks are vae-mlp's (an MLP encoder, one Gaussian latent under N(0, I), an MLP decoder, with
the same parameter names, so a vae-mlp state dict loads strictly); only the objective differs. With
z_1 .. z_S ~ q(z | x) and the log importance weights

    log w_s = log p(x | z_s) + log p(z_s) - log q(z_s | x)

the objectives (``objective``; K = ``iw_samples``, M = ``iw_groups``) are

    iwae   L_K     = log (1/K) sum_k w_k                                    (Burda et al., eq. 8)
    miwae  L_{M,K} = (1/M) sum_m log (1/K) sum_k w_{m,k}                    (Rainforth et al.'s MIWAE)
    ciwae  C_beta  = beta * (1/K) sum_k log w_k + (1 - beta) * L_K          (Rainforth et al.'s CIWAE)
    piwae  the decoder (generative network) ascends L_{MK} over all M * K samples, the encoder
           (inference network) ascends L_{M,K} on the same samples         (Rainforth et al.'s PIWAE)

each a lower bound on log p(x) (L_K rises with K to log p(x); L_1 is the ELBO). The loss is minus the
batch mean of the bound, with reparameterized samples (Burda et al., section 3). CIWAE's ELBO term is
the Monte Carlo average of the same K log weights, as in the reference implementation.

What ``forward`` reports besides the loss is the standard one-sample -ELBO, recon + analytic KL with
weight 1 (recon from the first draw), as vae-mlp reports it, so the figures compare across variants;
``metrics["iw_bound"]`` is the batch mean of the bound the model trains on (for piwae the decoder's L_{MK}).
There is no KL term to warm up, so ``kl_warmup_steps`` must stay 0.

Reference implementation read: pythae (clementchadebec/benchmark_VAE), src/pythae/models/iwae/iwae_model.py,
miwae/miwae_model.py, piwae/piwae_model.py and ciwae/ciwae_model.py. Differences: pythae returns the
surrogate -(sum_k stopgrad(w~_k) log w_k), whose gradient is that of the bound but whose value is not,
where this file returns the bound itself (logsumexp); pythae's MIWAE and PIWAE normalise the weights over
its M axis (``number_gradient_estimates``) rather than its K axis, i.e. they compute MIWAE(K, M); and
pythae's PIWAE returns two losses for a trainer with one optimizer per network, where this file routes
the gradients inside one loss (``IWAE._piwae_loss``).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("iwae", preset="tiny", input_shape=(1, 8, 8), objective="miwae", iw_groups=2)
    >>> out = model(torch.rand(4, 1, 8, 8))
    >>> bool(out.metrics["iw_bound"] == -out.loss)
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import VAEOutput
from vaezoo.core.distributions import DiagonalGaussian
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.core.likelihoods import param_shape
from vaezoo.core.validation import check_count, check_output_size
from vaezoo.errors import ConfigError, did_you_mean
from vaezoo.zoo.tags import PretrainedTag

OBJECTIVES = ("iwae", "miwae", "piwae", "ciwae")
GROUPED_OBJECTIVES = ("miwae", "piwae")  # the objectives that use iw_groups


@dataclass(frozen=True)
class IWAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp
    latent_dim: int = 32
    objective: str = "iwae"  # "iwae" (Burda et al.) | "miwae" | "piwae" | "ciwae" (Rainforth et al.)
    iw_samples: int = 5  # K, importance samples per bound (Burda et al. train with 1, 5 and 50)
    iw_groups: int = 1  # M, independent K-sample bounds averaged by "miwae" and "piwae" (M * K samples in all)
    ciwae_beta: float = 0.5  # beta of "ciwae", the ELBO's share in beta * ELBO + (1 - beta) * IWAE, in [0, 1]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective={self.objective!r} is unknown; use one of {', '.join(OBJECTIVES)}"
                              + did_you_mean(str(self.objective), OBJECTIVES))
        check_count(self.iw_samples, "iw_samples", error=ConfigError, hint=" (K, samples per bound, e.g. 5)")
        check_count(self.iw_groups, "iw_groups", error=ConfigError, hint=" (M, bounds averaged by miwae/piwae, e.g. 1)")
        if self.iw_groups > 1 and self.objective not in GROUPED_OBJECTIVES:
            raise ConfigError(f"iw_groups={self.iw_groups} is used only by objective='miwae' or 'piwae', not "
                              f"{self.objective!r}; set iw_groups=1, or raise iw_samples for one tighter bound")
        if not 0.0 <= self.ciwae_beta <= 1.0:
            raise ConfigError(f"ciwae_beta={self.ciwae_beta} must be in [0, 1] (0 is IWAE, 1 the ELBO)")
        if self.kl_warmup_steps != 0:
            raise ConfigError(f"kl_warmup_steps={self.kl_warmup_steps} has nothing to warm up: the importance-weighted "
                              "bound has no separate KL term; set kl_warmup_steps=0")

    @property
    def total_samples(self) -> int:
        """z's drawn per example at each step: M * K for miwae and piwae, K otherwise."""
        return self.iw_groups * self.iw_samples


# --- the bounds, from log weights of shape (S, B): draw s of example b -------------------------------
def iwae_bound(log_weights: Tensor) -> Tensor:
    """log (1/S) sum_s w_s per example, (S, B) -> (B,) (Burda et al., eq. 8).

    >>> iwae_bound(torch.tensor([[0.0], [math.log(3.0)]])).tolist()  # log((1 + 3) / 2)
    [0.6931471824645996]
    """
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def miwae_bound(log_weights: Tensor, groups: int) -> Tensor:
    """The mean over M = ``groups`` of K-sample IWAE bounds, (M * K, B) -> (B,) (Rainforth et al.'s MIWAE).

    Draws m * K .. m * K + K - 1 form group m.

    >>> miwae_bound(torch.tensor([[0.0], [math.log(3.0)]]), groups=2).tolist()  # (log 1 + log 3) / 2
    [0.5493061542510986]
    """
    grouped = log_weights.view(groups, -1, log_weights.shape[1])  # (M, K, B); the draws are iid, so any split works
    return (torch.logsumexp(grouped, dim=1) - math.log(grouped.shape[1])).mean(0)


def ciwae_bound(log_weights: Tensor, beta: float) -> Tensor:
    """beta * ELBO + (1 - beta) * IWAE from the same S draws, (S, B) -> (B,) (Rainforth et al.'s CIWAE)."""
    return beta * log_weights.mean(0) + (1.0 - beta) * iwae_bound(log_weights)


class _Draws(NamedTuple):
    """S draws z ~ q(z | x) per example; row s * B + b of the flat tensors is draw s of example b."""

    posterior: DiagonalGaussian  # q(z | x), (B, D)
    z: Tensor  # (S * B, D)
    target: Tensor  # x repeated S times, (S * B, *input_shape)
    params: Tensor  # p(x | z)'s parameters, (S * B, *param_shape)
    log_px_given_z: Tensor  # (S, B)
    log_prior_ratio: Tensor  # log p(z) - log q(z | x), (S, B)

    @property
    def log_weights(self) -> Tensor:  # (S, B)
        return self.log_px_given_z + self.log_prior_ratio


class IWAE(GaussianLatentVAE):
    """vae-mlp's networks trained on an importance-weighted bound (iwae, miwae, piwae or ciwae).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("iwae", preset="tiny", input_shape=(64,), iw_samples=50)
    >>> model.training_bound(torch.rand(3, 64)).shape
    torch.Size([3])
    """

    config_class = IWAEConfig
    registry_name = "iwae"
    reported_metrics = {"iw_bound": "the bound the model trains on (piwae: the decoder's M*K-sample IWAE bound), nats"}
    train_defaults = {"lr": 2e-3}  # vae-mlp's, measured for these networks on the ELBO; not re-measured on the IW bound
    presets = {
        "tiny": {"hidden_dims": (32,), "latent_dim": 4},
        "k50": {"iw_samples": 50},  # Burda et al.'s largest k
    }
    # vae-mlp.digits' networks and recipe, so the two compare at the same architecture and budget.
    pretrained_tags = {
        # vae-mlp.fmnist's networks and recipe (50 epochs), trained on the k = 5 bound: the side-by-side comparison.
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist", hf_hub_id="vaezoo/iwae.fmnist", recipe={"epochs": 50},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/iwae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        draws = self._draw(self.prepare_target(x), self.config.total_samples)
        bound, loss = self._objective(draws)
        recon = -draws.log_px_given_z[0]  # (B,): the first draw, a one-sample ELBO as vae-mlp reports it
        kl = draws.posterior.kl()  # (B,) analytic, weight 1
        params = draws.params[: x.shape[0]]  # the first draw's, (B, *param_shape)
        return VAEOutput(loss=loss, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params,
                         metrics={"iw_bound": bound.mean().detach()})

    def training_bound(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The bound of ``config.objective`` per example at one fresh set of draws, (B,), in nats.

        What ``metrics["iw_bound"]`` averages; for piwae, the decoder's M*K-sample IWAE bound.
        """
        self.check_input(x, y)
        return self._objective(self._draw(self.prepare_target(x), self.config.total_samples))[0]

    # --- the objective ---------------------------------------------------------------------------
    def _draw(self, x: Tensor, samples: int) -> _Draws:
        """Encode x once, draw ``samples`` reparameterized z per example, and weigh each."""
        check_output_size(x.shape[0] * samples, param_shape(self.config), "batch * iw_samples * iw_groups",
                          hint=" draws per step; lower the batch size, iw_samples or iw_groups")
        posterior = self.encode(x)  # (B, D)
        repeated = DiagonalGaussian(posterior.mean.repeat(samples, 1), posterior.logvar.repeat(samples, 1))
        z = repeated.rsample()  # (S * B, D)
        target = x.repeat(samples, *([1] * (x.dim() - 1)))  # (S * B, *input_shape), as log_likelihood repeats x
        params = self.decode(z)
        log_px_given_z = self.likelihood.log_prob(params, target).view(samples, -1)  # (S, B)
        log_prior_ratio = (self.log_prior(z) - repeated.log_prob(z)).view(samples, -1)
        return _Draws(posterior, z, target, params, log_px_given_z, log_prior_ratio)

    def _objective(self, draws: _Draws) -> tuple[Tensor, Tensor]:
        """(the reported bound per example (B,), the scalar loss) for ``config.objective``."""
        config, log_weights = self.config, draws.log_weights
        if config.objective == "piwae":
            return self._piwae_loss(draws)
        if config.objective == "miwae":
            bound = miwae_bound(log_weights, config.iw_groups)
        elif config.objective == "ciwae":
            bound = ciwae_bound(log_weights, config.ciwae_beta)
        else:
            bound = iwae_bound(log_weights)
        return bound, -bound.mean()

    def _piwae_loss(self, draws: _Draws) -> tuple[Tensor, Tensor]:
        """PIWAE in one loss: the decoder's gradient is that of L_{MK}, the encoder's that of L_{M,K}.

        ``generative`` holds the same log weights as ``draws.log_weights`` but reaches only the
        generative parameters (decoder and likelihood): the decoder runs again on z.detach(), and
        log p(z) - log q(z | x) is detached. Then

            surrogate = L_{MK}(generative) + L_{M,K}(log_weights) - L_{M,K}(generative)

        has the value of L_{MK} (the last two terms are equal); its encoder gradient comes from the
        middle term only (the others do not reach the encoder), and its generative gradient is
        grad L_{MK} + (grad_theta L_{M,K} - grad_theta L_{M,K}) = grad L_{MK}, since at fixed z both
        copies of the weights depend on theta the same way. The price is a second decoder pass.
        """
        groups = self.config.iw_groups
        if not torch.is_grad_enabled():  # evaluation: the value alone, without the second decoder pass
            bound = iwae_bound(draws.log_weights)
            return bound, -bound.mean()
        params = self.decode(draws.z.detach())
        generative = (self.likelihood.log_prob(params, draws.target).view_as(draws.log_px_given_z)
                      + draws.log_prior_ratio.detach())  # (S, B)
        bound = iwae_bound(generative)
        surrogate = bound + miwae_bound(draws.log_weights, groups) - miwae_bound(generative, groups)
        return bound, -surrogate.mean()
