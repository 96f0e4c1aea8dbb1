"""A VAE whose posterior is an inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever and
Welling 2016, "Improved Variational Inference with Inverse Autoregressive Flow", arXiv:1606.04934), each
step a MADE (Germain, Gregor, Murray and Larochelle 2015, "MADE: Masked Autoencoder for Distribution
Estimation", arXiv:1502.03509).

The encoder is vae-mlp's: features h(x), then z_0 ~ N(mu(x), diag sigma^2(x)). T = ``flow_steps`` IAF steps
follow, each with the numerically stable, LSTM-like update of IAF section 4 and Algorithm 1:

    [m_t, s_t] = MADE_t(z_{t-1}, h)          (m_t,i and s_t,i depend on z_{t-1} only through dims before i)
    sigma_t = sigmoid(s_t),   z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t

The Jacobian dz_t/dz_{t-1} is triangular with diagonal sigma_t, so the density is exact:

    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t sum_i log sigma_t,i

The order of the latent dims is reversed between steps, as in the paper's experiments (odd steps use the
reversed order, rather than permuting z), and s_t starts near +2 (the paper's "forget gate bias" of +1 or
+2), so sigma_t ~ 0.88 and each step starts as a small change of z. h enters each MADE's hidden layer as
an extra linear input, as the context of openai/iaf. The prior is N(0, I) on z_T, which the decoder takes.
The KL has no closed form, so

    KL ~= log q(z_T | x) - log N(z_T; 0, I)      one Monte Carlo sample: the z_T that is decoded
    -ELBO = -log p(x | z_T) + that estimate       (``neg_elbo``, weight 1; ``loss`` weights the KL by beta)

Both are unbiased estimates, so a ``kl`` can come out below zero on a batch. ``importance_sample`` uses
the same exact log q, so ``log_likelihood`` is a valid importance-weighted bound (Burda et al. 2016).

What ``encode`` returns, :class:`IAFPosterior` (a ``vaezoo.Posterior``):
``mean`` and ``mode()`` are the flow's image of mu (z_T at zero noise): the deterministic code that
``reconstruct`` and the applications decode; E_q[z_T] and the mode of q have no closed form, so this is
neither exactly. ``rsample`` draws through the flow; ``log_prob(z)`` is exact at any z, by inverting each
step dim by dim (latent_dim MADE passes per step; the cost of Metropolis-within-Gibbs); ``kl()`` is the
one-sample Monte Carlo estimate above, so it is random; ``is_gaussian`` is False unless ``flow_steps=0``.

Reference implementations read: pythae (clementchadebec/benchmark_VAE,
src/pythae/models/normalizing_flows/made/made_model.py: MADE's degree masks, an input unit of degree d
feeding hidden units of degree >= d and those feeding outputs of degree > their own; and
normalizing_flows/iaf/iaf_model.py: the dims flipped between steps; its steps are the affine
(z - mu) * exp(-alpha), not the sigmoid update used here) and openai/iaf (graphy/nodes/ar.py ``mlp``: the
context added to the first hidden layer, strictly masked outputs; models.py ``cvae_layer``: outputs scaled
by 0.1 at the start, log q corrected by the steps' log-scales).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("iaf-vae", preset="tiny", input_shape=(1, 8, 8))
    >>> out = model(torch.rand(4, 1, 8, 8))
    >>> out.neg_elbo.shape
    torch.Size([4])
    >>> model.log_likelihood(torch.rand(3, 1, 8, 8), iw_samples=5).shape
    torch.Size([3])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.contract import Capabilities, ImportanceSample, VAEOutput
from vaezoo.core.distributions import DiagonalGaussian, at_least_float32, standard_normal_log_prob
from vaezoo.core.validation import check_count
from vaezoo.errors import ConfigError
from vaezoo.zoo.tags import PretrainedTag
from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig

FORGET_GATE_BIAS = 2.0  # initial s_t: sigmoid(2) ~ 0.88 keeps most of z_{t-1} (IAF section 4, "+1 or +2")
OUTPUT_INIT_SCALE = 0.1  # MADE's output weights start 10x smaller, as openai/iaf scales its AR outputs by 0.1


@dataclass(frozen=True)
class IAFVAEConfig(VanillaVAEConfig):
    flow_steps: int = 2  # T, the IAF steps after z_0; 0 leaves vae-mlp's Gaussian posterior (with a Monte Carlo KL)
    # Width of each step's MADE hidden layer; at least latent_dim lets every dim see all dims before it.
    flow_hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.flow_steps, "flow_steps", minimum=0, error=ConfigError,
                    hint=" (IAF steps after the Gaussian z_0, e.g. 2; 0 = a Gaussian posterior)")
        check_count(self.flow_hidden, "flow_hidden", error=ConfigError,
                    hint=" (width of each MADE's hidden layer, e.g. 256)")


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        # Not persistent: the mask follows from the config, so checkpoints hold weights only.
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(latent_dim: int, hidden: int, reverse: bool) -> tuple[Tensor, Tensor]:
    """MADE's degrees (Germain et al. 2015, the masks' construction): inputs/outputs 1..D in autoregressive order (D..1 by
    dim index when ``reverse``), hidden units 0..D-1 cyclically; degree 0 units carry the context only."""
    order = torch.arange(1, latent_dim + 1)
    return (order.flip(0) if reverse else order), torch.arange(hidden) % latent_dim


class MADE(nn.Module):
    """(z (B, D), context (B, F)) -> (m, s), each (B, D): m_i and s_i depend on z only through the dims
    before i in the order (dim 0 first, or dim D-1 first when ``reverse``), and on all of the context.

    >>> made = MADE(latent_dim=3, hidden=8, context_features=5)
    >>> [t.shape for t in made(torch.randn(2, 3), torch.randn(2, 5))]
    [torch.Size([2, 3]), torch.Size([2, 3])]
    """

    def __init__(self, latent_dim: int, hidden: int, context_features: int, reverse: bool = False) -> None:
        super().__init__()
        input_degrees, hidden_degrees = made_degrees(latent_dim, hidden, reverse)
        self.register_buffer("degrees", input_degrees, persistent=False)  # (D,): each dim's place in the order, 1..D
        # Input j feeds hidden unit k when deg(k) >= deg(j); hidden unit k feeds output i when deg(i) > deg(k):
        # so output i sees input j only if deg(j) < deg(i), strictly: the autoregressive property (Germain et al.).
        self.input_layer = MaskedLinear(latent_dim, hidden, hidden_degrees[:, None] >= input_degrees[None, :])
        self.context_layer = nn.Linear(context_features, hidden)  # openai/iaf: context joins the first hidden layer
        output_mask = (input_degrees[:, None] > hidden_degrees[None, :]).repeat(2, 1)  # rows: m then s
        self.output_layer = MaskedLinear(hidden, 2 * latent_dim, output_mask)
        self.activation = nn.ELU()
        with torch.no_grad():
            self.output_layer.weight.mul_(OUTPUT_INIT_SCALE)
            self.output_layer.bias.zero_()
            self.output_layer.bias[latent_dim:] = FORGET_GATE_BIAS

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:  # (B, D), (B, F) -> 2 x (B, D)
        hidden = self.activation(self.input_layer(z) + self.context_layer(context))  # (B, H)
        shift, gate_logit = self.output_layer(hidden).chunk(2, dim=1)
        return shift, gate_logit


class FlowResult(NamedTuple):
    """The other end of the flow and log|det dz_T/dz_0| = sum_t sum_i log sigma_t,i, shape (B,)."""

    z: Tensor
    log_det: Tensor


class InverseAutoregressiveFlow(nn.Module):
    """T IAF steps z_0 -> z_T given context h, the dim order reversed at every other step.

    >>> flow = InverseAutoregressiveFlow(latent_dim=3, steps=2, hidden=8, context_features=5)
    >>> z0, h = torch.randn(4, 3), torch.randn(4, 5)
    >>> torch.allclose(flow.inverse(flow(z0, h).z, h).z, z0, atol=1e-5)
    True
    """

    def __init__(self, latent_dim: int, steps: int, hidden: int, context_features: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.steps = nn.ModuleList(MADE(latent_dim, hidden, context_features, reverse=t % 2 == 1) for t in range(steps))

    def forward(self, z: Tensor, context: Tensor) -> FlowResult:  # (B, D), (B, F)
        """z_T from z_0 (IAF Algorithm 1): one MADE pass per step."""
        log_det = at_least_float32(z.new_zeros(z.shape[0]))
        for made in self.steps:
            shift, gate_logit = made(z, context)
            gate = torch.sigmoid(gate_logit)
            z = gate * z + (1 - gate) * shift
            log_det = log_det + at_least_float32(F.logsigmoid(gate_logit)).sum(1)  # log sigma: stable for any s
        return FlowResult(z, log_det)

    def inverse(self, z: Tensor, context: Tensor) -> FlowResult:  # (B, D), (B, F)
        """z_0 from z_T, and log|det dz_T/dz_0| there: exact after D MADE passes per step.

        z_{t-1} = m_t + (z_t - m_t) / sigma_t, where (m_t, sigma_t) of the k-th dim in the step's order need only
        the dims before it: pass k solves that dim from the k - 1 solved so far. The unsolved dims stay 0, as
        a garbage guess could overflow, and 0 * inf in a masked weight is NaN.
        """
        log_det = at_least_float32(z.new_zeros(z.shape[0]))
        for made in reversed(self.steps):
            target, z = z, torch.zeros_like(z)
            for k in range(1, self.latent_dim + 1):
                shift, gate_logit = made(z, context)
                z = torch.where(made.degrees == k, shift + (target - shift) / torch.sigmoid(gate_logit), z)
            log_det = log_det + at_least_float32(F.logsigmoid(gate_logit)).sum(1)  # last pass: every dim solved before
        return FlowResult(z, log_det)


class FlowSample(NamedTuple):
    """One z_T ~ q(z_T | x) with its exact log q(z_T | x) and the flow's log-determinant, each (B,)."""

    z: Tensor  # (B, D)
    log_prob: Tensor  # log q(z_T | x) = log N(z_0; mu, sigma^2) - log_det
    log_det: Tensor  # sum_t sum_i log sigma_t,i


class IAFPosterior:
    """q(z_T | x): a diagonal Gaussian z_0 pushed through the IAF given the encoder's features.

    A ``vaezoo.Posterior``; see the module docstring for what ``mean``, ``log_prob`` and ``kl`` mean here.

    >>> model = vaezoo.create_model("iaf-vae", preset="tiny", input_shape=(64,))  # doctest: +SKIP
    >>> posterior = model.encode(torch.rand(2, 64))                                 # doctest: +SKIP
    >>> z, log_q, _ = posterior.rsample_with_log_prob()                             # doctest: +SKIP
    """

    def __init__(self, base: DiagonalGaussian, context: Tensor, flow: InverseAutoregressiveFlow) -> None:
        self.base = base  # q(z_0 | x)
        self.context = context  # h, (B, F)
        self.flow = flow
        self.is_gaussian = len(flow.steps) == 0  # no step: q is the diagonal Gaussian itself

    @property
    def mean(self) -> Tensor:
        """The flow's image of mu (z_T at zero noise), the deterministic code; not E_q[z_T], which has no closed form."""
        return self.flow(self.base.mean, self.context).z

    @property
    def layers(self) -> list[IAFPosterior]:
        return [self]

    def mode(self) -> Tensor:
        return self.mean

    def rsample(self, temperature: float = 1.0) -> Tensor:
        """z_T = flow(mu + temperature * sigma * eps): reparameterized through the flow."""
        return self.flow(self.base.rsample(temperature), self.context).z

    def rsample_with_log_prob(self) -> FlowSample:
        """One z_T ~ q with its exact log-density, by the change of variables (IAF section 4)."""
        z0 = self.base.rsample()
        z, log_det = self.flow(z0, self.context)
        return FlowSample(z, self.base.log_prob(z0) - log_det, log_det)

    def log_prob(self, z: Tensor) -> Tensor:  # (B,)
        """Exact log q(z | x) at any z: invert the flow, then log N(z_0; mu, sigma^2) - log_det.

        -inf where z_0 overflows (a z so far out that dividing by the gates leaves the float range: its
        log-density is below what a float holds), never NaN.
        """
        z0, log_det = self.flow.inverse(z.to(self.context.dtype), self.context)  # a float32 z meets a bfloat16 model
        log_q = self.base.log_prob(z0) - log_det
        return torch.where(torch.isfinite(z0).all(1), log_q, log_q.new_tensor(-torch.inf))

    def kl(self) -> Tensor:  # (B,)
        """One-sample Monte Carlo estimate of KL(q || N(0, I)): log q(z) - log N(z; 0, I) at a fresh z ~ q."""
        z, log_q, _ = self.rsample_with_log_prob()
        return log_q - standard_normal_log_prob(z)

    def __repr__(self) -> str:
        return f"IAFPosterior(shape={tuple(self.base.mean.shape)}, steps={len(self.flow.steps)})"


class IAFVAE(VanillaVAE):
    """vae-mlp with an inverse autoregressive flow posterior: loss = recon + beta * (one-sample MC KL).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("iaf-vae", preset="tiny", input_shape=(64,))
    >>> model.encode(torch.rand(2, 64)).rsample().shape
    torch.Size([2, 4])
    """

    config_class = IAFVAEConfig
    registry_name = "iaf-vae"
    # All four: the prior is N(0, I) on z_T (temperature); importance_sample gives the exact log q (log_likelihood,
    # importance imputation); log_prob inverts the flow, so q is exact at any z, which is all Metropolis-within-
    # Gibbs needs of it besides the N(0, I) prior (slow: latent_dim MADE passes per step and evaluation).
    capabilities = Capabilities()
    reported_metrics = {
        "flow_log_det": "log|det dz_T/dz_0| = sum over steps and dims of log sigma_t,i at the decoded sample (nats; "
                        "0 = no step, below 0 = the flow contracts volume)",
    }
    presets = {"tiny": {"hidden_dims": (32,), "latent_dim": 4, "flow_steps": 2, "flow_hidden": 16}}
    # Its own tags (vae-mlp's are not this architecture's): vae-mlp.digits' networks and recipe, so the two compare at the same architecture and budget.
    pretrained_tags = {
        # vae-mlp.fmnist's networks and recipe (50 epochs) with the default IAF steps on the posterior.
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist", hf_hub_id="vaezoo/iaf-vae.fmnist", recipe={"epochs": 50},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8, "flow_steps": 2, "flow_hidden": 64}, dataset="digits",
            hf_hub_id="vaezoo/iaf-vae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }
    train_defaults = {"lr": 2e-3}  # vae-mlp's; not tuned for the flow

    def __init__(self, config: IAFVAEConfig) -> None:
        super().__init__(config)  # encoder, posterior_head (mu, log sigma^2 of z_0), decoder
        self.flow = InverseAutoregressiveFlow(
            config.latent_dim, config.flow_steps, config.flow_hidden, self.encoder.out_features
        )

    def encode(self, x: Tensor, y: Tensor | None = None) -> IAFPosterior:
        features = self.encoder(x)  # (B, F): the features give mu, log sigma^2 and the context h (IAF section 4)
        return IAFPosterior(DiagonalGaussian(*self.posterior_head(features)), features, self.flow)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        z, log_q, log_det = self.encode(x, y).rsample_with_log_prob()
        params = self.decode(z, y)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = log_q - standard_normal_log_prob(z)  # (B,) one-sample MC estimate at the decoded z
        loss = (recon + self.kl_weight(self.config.beta) * kl).mean()
        return VAEOutput(loss=loss, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params,
                         metrics={"flow_log_det": log_det.mean().detach()})

    def importance_sample(self, x: Tensor, y: Tensor | None = None) -> ImportanceSample:
        """p(x | z_T)'s parameters and log N(z_T; 0, I) - log q(z_T | x) at one z_T ~ q, with the exact flow density."""
        z, log_q, _ = self.encode(x, y).rsample_with_log_prob()
        return ImportanceSample(self.decode(z, y), standard_normal_log_prob(z) - log_q)
