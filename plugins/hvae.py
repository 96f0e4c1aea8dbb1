"""A hierarchical VAE with top-down inference: the Ladder VAE (Sønderby, Raiko, Maaløe, Sønderby and
Winther 2016, "Ladder Variational Autoencoders", arXiv:1602.02282) with NVAE's residual cells and
residual posterior (Vahdat and Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder",
arXiv:2007.03898). It is an MLP ladder (LVAE-style, vector latents), not the Hamiltonian VAE that
pythae calls HVAE; for the convolutional hierarchy with spatial latent groups, use ``vdvae``.

L stochastic layers z_1 (bottom) .. z_L (top), all diagonal Gaussians. The generative model runs
top-down through a deterministic state s (B, hidden_dim):

    p(z_L) = N(0, I),   p(z_i | z_{>i}) = N(mu_p(s_i), exp(logvar_p(s_i))),   p(x | z) = decoder(s_0)
    s_L = learned constant,   s_{i-1} = r(s_i + W_i z_i),   r(h) = h + f(LayerNorm(h))   (residual cell)

Inference shares that top-down path (LVAE's key idea): a bottom-up pass x -> backbone -> d_1 -> ...
-> d_L of residual blocks, then, from the top, with NVAE's residual normal (section 3.2) in place of
LVAE's precision-weighted merge:

    q(z_i | x, z_{>i}) = N(mu_p + dmu, exp(logvar_p + dlogvar)),   (dmu, dlogvar) = linear([s_i, d_i])
    KL(q || p) = 0.5 * sum(dmu^2 / exp(logvar_p) + exp(dlogvar) - dlogvar - 1)

so the posterior is a correction of the prior. The objective is the ELBO

    -ELBO = E_q[-log p(x | z)] + sum_i E_q[KL(q(z_i | x, z_{>i}) || p(z_i | z_{>i}))]

with the per-layer KLs analytic given one sample of z_{>i}. Training weights the KL by a linear
warm-up (LVAE; Bowman et al. 2016) and applies free bits per latent dim (Kingma et al. 2016,
arXiv:1606.04934, appendix C.8): sum_j max(lambda, batch mean of KL_j). The reported ``kl`` and
``neg_elbo`` are always the true KL with weight 1.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("hvae", preset="tiny", input_shape=(1, 8, 8))
    >>> out = model(torch.rand(4, 1, 8, 8))
    >>> sorted(out.terms)
    ['kl_0', 'kl_1', 'kl_2']
    >>> model.sample(2).shape
    torch.Size([2, 1, 8, 8])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaezoo.core.backbones import build_decoder, build_encoder, in_weights_dtype
from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import Capabilities, ImportanceSample, VAEOutput
from vaezoo.core.distributions import DiagonalGaussian, TopDownPosterior, soft_clamp
from vaezoo.core.model import VAE
from vaezoo.errors import ConfigError, InputError
from vaezoo.zoo.tags import PretrainedTag


@dataclass(frozen=True)
class HierarchicalVAEConfig(VAEConfig):
    latent_dims: tuple[int, ...] = (32, 16, 8)  # size of each stochastic layer z_1 .. z_L, bottom first
    latent_dim: int = 8  # derived: always set to latent_dims[-1], the size of the top layer z_L
    hidden_dim: int = 512  # width of the bottom-up features d_i and of the top-down state s
    num_blocks: int = 2  # residual blocks per layer on the bottom-up path
    # Nats per latent dim below which the KL is not penalised in training; 0 = off. Small on purpose: an
    # idle dim still costs up to this much in the reported ELBO.
    free_bits: float = 0.05
    beta: float = 1.0  # weight of the KL term after warm-up; 1 gives the ELBO
    kl_warmup_steps: int = 5000  # KL weight ramps 0 -> beta over these steps (about 10 Fashion-MNIST epochs at batch 128)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.latent_dims, tuple) or not self.latent_dims or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.latent_dims
        ):
            raise ConfigError(f"latent_dims={self.latent_dims!r} must be a non-empty tuple of positive integers, bottom first")
        # latent_dim names the top layer for the shared contract; latent_dims is the source of truth, so
        # that overriding latent_dims alone (create_model("hvae", latent_dims=(16, 4))) stays consistent.
        object.__setattr__(self, "latent_dim", self.latent_dims[-1])
        for name in ("hidden_dim", "num_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not self.free_bits >= 0:
            raise ConfigError(f"free_bits={self.free_bits} must be >= 0 nats per latent dim (0 turns it off)")
        if not self.beta >= 0:
            raise ConfigError(f"beta={self.beta} must be >= 0")


HierarchicalPosterior = TopDownPosterior  # the name hvae's users know


class ResidualBlock(nn.Module):
    """h + f(LayerNorm(h)): a pre-norm residual MLP block (NVAE section 3.1, for vectors).

    The branch's last layer starts at zero (Goyal et al. 2017), so every block is the identity at
    init and the latents reach the decoder undistorted, which keeps them from being ignored early on.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: Tensor) -> Tensor:  # (B, W) -> (B, W)
        return h + self.net(h)


class TopDownCell(nn.Module):
    """s + W z, then a residual block: NVAE's decoder combiner followed by a residual cell."""

    def __init__(self, width: int, latent_dim: int) -> None:
        super().__init__()
        self.combine = nn.Linear(latent_dim, width)
        self.block = ResidualBlock(width)

    def forward(self, state: Tensor, z: Tensor) -> Tensor:  # (B, W), (B, D) -> (B, W)
        return self.block(state + self.combine(z))


class GaussianParams(nn.Module):
    """Linear map from features to a soft-clamped (mean, log-variance) pair, as NVAE's samplers."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:  # (B, F) -> 2 x (B, D)
        mean, logvar = self.linear(h).chunk(2, dim=1)
        return soft_clamp(mean, 5.0), soft_clamp(logvar, 10.0)


class HierarchicalVAE(VAE):
    """MLP ladder VAE (LVAE-style; not pythae's Hamiltonian VAE; see vdvae for the conv one): loss = recon + beta * free-bits KL.

    Latents passed to ``decode`` and returned by ``prior_sample`` are lists bottom first:
    ``[z_1 (B, latent_dims[0]), ..., z_L (B, latent_dims[-1])]``.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("hvae", preset="tiny", input_shape=(64,))
    >>> model.log_likelihood(torch.rand(3, 64), iw_samples=5).shape
    torch.Size([3])
    """

    config_class = HierarchicalVAEConfig
    registry_name = "hvae"
    # Metropolis-within-Gibbs as vaezoo implements it needs one Gaussian latent under N(0, I), and a latent
    # sampler (a GMM fitted on the posterior means) one latent vector: a ladder of layers has neither.
    capabilities = Capabilities(mwg_imputation=False, latent_sampler=False)
    reported_metrics = {"kl_per_layer": "KL(q || p) of each stochastic layer z_1 .. z_L, bottom first (nats)"}
    presets = {
        # Fast tests. MLP backbones: on 8x8 digits a conv trunk this small learns far slower.
        "tiny": {
            "latent_dims": (8, 4, 2), "hidden_dim": 32, "num_blocks": 1, "encoder": "mlp",
            "decoder": "mlp", "hidden_dims": (64,), "conv_channels": (8, 16), "kl_warmup_steps": 100,
        },
        "mlp": {"encoder": "mlp", "decoder": "mlp"},  # LVAE's setting: MLP backbones, also for images
        "deep": {"latent_dims": (64, 32, 16, 8, 4)},
    }
    pretrained_tags = {
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28), "encoder": "mlp", "decoder": "mlp", "hidden_dims": (512,), "hidden_dim": 256,
             "num_blocks": 1},
            dataset="fashion-mnist", hf_hub_id="vaezoo/hvae.fmnist", recipe={"epochs": 80, "grad_clip": 100.0},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "encoder": "mlp", "decoder": "mlp", "hidden_dims": (256,), "hidden_dim": 128,
             "num_blocks": 1, "latent_dims": (16, 8, 4), "kl_warmup_steps": 2000},
            dataset="digits", hf_hub_id="vaezoo/hvae.digits", recipe={"epochs": 200, "batch_size": 64, "grad_clip": 100.0},
        ),
    }

    def __init__(self, config: HierarchicalVAEConfig) -> None:
        super().__init__(config)
        width, dims = config.hidden_dim, config.latent_dims
        self.encoder = build_encoder(config)
        self.input_projection = nn.Linear(self.encoder.out_features, width)
        # Bottom-up path d_1 .. d_L: block group i maps d_i to d_{i+1} (d_0 = projected backbone features).
        self.bottom_up = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(width) for _ in range(config.num_blocks))) for _ in dims
        )
        self.initial_state = nn.Parameter(torch.zeros(1, width))  # s_L, NVAE's learned top-down input
        self.prior_heads = nn.ModuleList(GaussianParams(width, d) for d in dims[:-1])  # no head for the top
        self.posterior_heads = nn.ModuleList(GaussianParams(2 * width, d) for d in dims)
        self.cells = nn.ModuleList(TopDownCell(width, d) for d in dims)
        self.decoder = build_decoder(config, width)

    # --- the top-down path, shared by inference, decoding and sampling -------------------------------
    def _bottom_up(self, x: Tensor) -> list[Tensor]:  # (B, *input_shape) -> L x (B, H)
        h = self.input_projection(self.encoder(x))
        features = []
        for block in self.bottom_up:
            h = block(h)
            features.append(h)
        return features

    def _top_down(
        self, batch: int, features: list[Tensor] | None = None, latents: Sequence[Tensor] | None = None,
        temperature: float = 1.0,
    ) -> tuple[Tensor, list[Tensor], list[DiagonalGaussian], list[DiagonalGaussian]]:
        """Run from z_L down to z_1; return the final state s_0 (B, H), the z_i, the priors and the posteriors.

        With ``features`` each z_i ~ q(z_i | x, z_{>i}); with ``latents`` the given z_i are used (no
        prior is computed); with neither, z_i ~ p(z_i | z_{>i}) (ancestral sampling). ``temperature``
        scales the sampling noise. Lists are bottom first; priors/posteriors are empty when not computed.
        """
        num_layers = len(self.config.latent_dims)
        state = self.initial_state.expand(batch, -1)  # (B, H)
        samples, priors, posteriors = [], [], []  # filled top first, reversed at the end
        for i in reversed(range(num_layers)):
            if latents is not None:
                z = latents[i]
            else:
                if i == num_layers - 1:
                    zeros = state.new_zeros(batch, self.config.latent_dims[i])
                    prior = DiagonalGaussian(zeros, zeros)  # p(z_L) = N(0, I)
                else:
                    prior = DiagonalGaussian(*self.prior_heads[i](state))
                priors.append(prior)
                if features is None:
                    z = prior.rsample(temperature)
                else:
                    # Residual normal (NVAE section 3.2): shift the prior's mean, scale its variance.
                    delta_mean, delta_logvar = self.posterior_heads[i](torch.cat([state, features[i]], dim=1))
                    posteriors.append(DiagonalGaussian(prior.mean + delta_mean, prior.logvar + delta_logvar))
                    z = posteriors[-1].rsample(temperature)
            samples.append(z)
            state = self.cells[i](state, z)
        return state, samples[::-1], priors[::-1], posteriors[::-1]

    def _infer(self, x: Tensor, temperature: float = 1.0) -> tuple[Tensor, HierarchicalPosterior]:
        state, samples, priors, posteriors = self._top_down(x.shape[0], self._bottom_up(x), temperature=temperature)
        return state, HierarchicalPosterior(posteriors, priors, samples)

    # --- the contract ----------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None, temperature: float = 1.0) -> HierarchicalPosterior:
        """q(z | x) from one top-down pass; ``temperature=0`` follows the posterior means all the way down."""
        return self._infer(x, temperature)[1]

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """Each layer's posterior mean given the means above it (a deterministic code), bottom first."""
        return self.encode(x, y, temperature=0.0).mean

    def decode(self, z: Sequence[Tensor], y: Tensor | None = None) -> Tensor:
        """Likelihood parameters (B, *input_shape) from latents [z_1, ..., z_L], bottom first."""
        dims = self.config.latent_dims
        if len(z) != len(dims) or any(tuple(zi.shape[1:]) != (d,) for zi, d in zip(z, dims)):
            raise InputError(
                f"decode takes a list of {len(dims)} latents of shapes (B, d) for d in latent_dims={dims}, bottom first; "
                f"got shapes {[tuple(zi.shape) for zi in z]}"
            )
        z = [in_weights_dtype(zi, self.decoder) for zi in z]  # e.g. float32 latents for a bfloat16 model
        return self.decoder(self._top_down(z[0].shape[0], latents=z)[0])

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        state, posterior = self._infer(x)
        params = self.decoder(state)  # (B, *input_shape)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl_per_dim = posterior.kl_per_dim()  # L x (B, d_i)
        kl_per_layer = [kl.sum(1) for kl in kl_per_dim]  # L x (B,)
        kl = torch.stack(kl_per_layer).sum(0)  # (B,)
        if self.training and self.config.free_bits > 0:
            # Free bits (Kingma et al. 2016, appendix C.8): no pressure on a dim whose batch-mean KL < lambda.
            kl_objective = sum(k.mean(0).clamp(min=self.config.free_bits).sum() for k in kl_per_dim)
        else:
            kl_objective = kl.mean()
        loss = recon.mean() + self.kl_weight(self.config.beta) * kl_objective
        terms = {f"kl_{i}": k.mean() for i, k in enumerate(kl_per_layer)}
        return VAEOutput(loss=loss, terms=terms, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params,
                         metrics={"kl_per_layer": terms})

    def importance_sample(self, x: Tensor, y: Tensor | None = None) -> ImportanceSample:
        """p(x | z)'s parameters and sum_i log p(z_i | z_{>i}) - sum_i log q(z_i | x, z_{>i}) at one z ~ q."""
        state, posterior = self._infer(x)
        return ImportanceSample(self.decoder(state), posterior.log_prior_ratio())

    def prior_sample(self, n: int, temperature: float = 1.0) -> list[Tensor]:
        """Ancestral samples [z_1, ..., z_L] (bottom first) from p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_{>1})."""
        return self._top_down(n, temperature=temperature)[1]

