"""A deep convolutional hierarchical VAE with spatial latent groups at several resolutions: VDVAE's
top-down design (Child 2021, "Very Deep VAEs Generalize Autoregressive Models and Can Outperform Them
on Images", arXiv:2011.10650) with NVAE's residual normal posterior and squeeze-and-excitation cells
(Vahdat and Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder", arXiv:2007.03898).

Named ``vdvae`` because its skeleton is VDVAE's: a bottom-up ResNet whose activations at each
resolution feed a top-down stack of DecBlocks that share their state between the prior and the
posterior (reference: openai/vdvae, ``vae.py``: Block, Encoder, DecBlock; ``vae_helpers.py``: get_1x1,
get_3x3, draw_gaussian_diag_samples, gaussian_analytical_kl). From NVAE (reference: NVlabs/NVAE,
``distributions.py``: Normal, soft_clamp5; ``neural_operations.py``: SE) it takes the residual normal
posterior (section 3.2), the soft clamp and the SE cells. Unlike ``hvae`` (an MLP ladder with vector
latents) every latent group here is a feature map z_g of shape (B, latent_channels, h_g, w_g).

Resolutions r = 0 (the input's, finest) .. R-1 (coarsest), each half the one before, rounded up, so
any image size works; a vector input (D,) is treated as a 1x1 image with D channels (the cells then
act as residual MLPs, as VDVAE's 1x1-resolution blocks do). Groups g = 1 (bottom) .. G (top); the
top-down pass runs from the coarsest resolution's groups to the finest's, with state s (B, W, h, w):

    s = learned constant at the coarsest resolution;  upsampled by nearest + 3x3 conv between resolutions
    (mu_p, logvar_p, ds) = prior_g(s);  s <- s + ds                      (VDVAE DecBlock.sample)
    p(z_g | z_{>g}) = N(mu_p, exp(logvar_p))       (N(0, I) at init: prior_g's last conv starts at zero)
    (dmu, dlogvar) = posterior_g([s, a_r])         a_r = bottom-up activations at z_g's resolution
    q(z_g | x, z_{>g}) = N(mu_p + dmu, exp(logvar_p + dlogvar))        (NVAE eq. 2, residual normal)
    KL(q || p) = 0.5 * sum(dmu^2 / exp(logvar_p) + exp(dlogvar) - dlogvar - 1)
    s <- cell_g(s + proj(z_g))                                          (residual cell with SE)

and p(x | z) takes its parameters from the finest state. Log-variances are soft-clamped,
bound * tanh(v / bound) (NVAE's soft_clamp5 on log sigma). The objective is the ELBO

    -ELBO = E_q[-log p(x | z)] + sum_g KL(q(z_g | x, z_{>g}) || p(z_g | z_{>g})),

trained with a linear KL warm-up and free bits per group (Kingma et al. 2016, arXiv:1606.04934,
appendix C.8): sum_g max(lambda, batch mean of KL_g), so that no group collapses early. The reported
``kl`` and ``neg_elbo`` always use the true KL with weight 1. Latents passed to ``decode`` and returned
by ``prior_sample`` are lists bottom first (hvae's convention): [z_1 (finest), ..., z_G (coarsest)].

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vdvae", preset="tiny", input_shape=(1, 8, 8))
    >>> out = model(torch.rand(4, 1, 8, 8))
    >>> sorted(out.metrics["kl_per_group"])
    ['kl_0', 'kl_1', 'kl_2']
    >>> [tuple(z.shape) for z in model.prior_sample(2, temperature=[1.0, 0.8, 0.5])]
    [(2, 4, 8, 8), (2, 4, 4, 4), (2, 4, 4, 4)]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.backbones import in_weights_dtype
from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import Capabilities, ImportanceSample, VAEOutput
from vaezoo.core.distributions import DiagonalGaussian, TopDownPosterior, soft_clamp
from vaezoo.core.likelihoods import param_shape
from vaezoo.core.model import VAE
from vaezoo.errors import ConfigError, InputError
from vaezoo.zoo.tags import PretrainedTag


@dataclass(frozen=True)
class VDVAEConfig(VAEConfig):
    width: int = 64  # channels W of the residual stream at every resolution (bottom-up and top-down)
    bottleneck: int = 32  # channels inside each cell's 1x1 -> 3x3 -> 1x1 bottleneck (VDVAE's middle_width)
    # Latent groups at each resolution, the input's (finest) first; its length is the number of resolutions,
    # each half the one before (rounded up). 0 = no latents at that resolution, only the top-down cells.
    groups_per_resolution: tuple[int, ...] = (0, 2, 3)
    latent_channels: int = 8  # channels of each latent group z_g (B, latent_channels, h, w)
    encoder_blocks: int = 1  # bottom-up residual cells per resolution
    # Nats per latent group below which its KL is not penalised in training; 0 = off (Kingma et al. 2016).
    free_bits: float = 0.1
    # NVAE's KL balancing during the warm-up: each group's KL weighted by its share of the KL over its size,
    # so that a group the model neglects is penalised less and gets used (NVAE appendix A, kl_balancer).
    kl_balance: bool = False
    beta: float = 1.0  # weight of the KL term after warm-up; 1 gives the ELBO
    logvar_bound: float = 10.0  # soft clamp of every log-variance to (-bound, bound) (NVAE: 5 on log sigma)
    kl_warmup_steps: int = 5000  # KL weight ramps 0 -> beta over these steps
    latent_dim: int = 8  # derived: always latent_channels, the size of each group's channel dim
    derived_fields: ClassVar[dict[str, str]] = {"latent_dim": "latent_channels"}
    unused_fields: ClassVar[dict[str, str]] = {
        "encoder": "its residual cells (width, bottleneck, encoder_blocks)", "decoder": "its top-down cells (width, bottleneck)",
        "hidden_dims": "width and bottleneck", "conv_channels": "width and bottleneck",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        groups = self.groups_per_resolution
        if not isinstance(groups, tuple) or not groups or any(
            isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in groups
        ):
            raise ConfigError(f"groups_per_resolution={groups!r} must be a non-empty tuple of counts >= 0, finest first")
        if sum(groups) == 0:
            raise ConfigError(f"groups_per_resolution={groups!r} places no latent group; give some resolution >= 1")
        for name in ("width", "bottleneck", "latent_channels", "encoder_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not self.free_bits >= 0:
            raise ConfigError(f"free_bits={self.free_bits} must be >= 0 nats per latent group (0 turns it off)")
        if not self.beta >= 0:
            raise ConfigError(f"beta={self.beta} must be >= 0")
        if not isinstance(self.kl_balance, bool):
            raise ConfigError(f"kl_balance={self.kl_balance!r} must be true or false")
        if not self.logvar_bound > 0:
            raise ConfigError(f"logvar_bound={self.logvar_bound} must be > 0 (10 is NVAE's bound of 5 on log sigma)")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the cells see: the input itself, or a vector (D,) as a 1x1 image with D channels."""
        return tuple(self.input_shape) if self.is_image else (self.input_shape[0], 1, 1)  # type: ignore[return-value]

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        """(h, w) of each resolution, finest first: each half the one before, rounded up."""
        sizes = [self.image_shape[1:]]
        for _ in self.groups_per_resolution[1:]:
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        return sizes

    @property
    def group_resolutions(self) -> list[int]:
        """The resolution index of each latent group, bottom (finest) first."""
        return [r for r, count in enumerate(self.groups_per_resolution) for _ in range(count)]


def residual_normal_kl(delta_mean: Tensor, delta_logvar: Tensor, prior_logvar: Tensor) -> Tensor:
    """KL(N(mu_p + dmu, var_p * exp(dlogvar)) || N(mu_p, var_p)) elementwise (NVAE eq. 2).

    0.5 * (dmu^2 / var_p + exp(dlogvar) - dlogvar - 1): the prior's mean drops out, so the KL only
    asks the posterior to stay close to its prior in relative terms.
    """
    return 0.5 * (delta_mean**2 * torch.exp(-prior_logvar) + torch.exp(delta_logvar) - delta_logvar - 1)


@dataclass
class LadderPosterior(TopDownPosterior):
    """One top-down pass of q(z | x) (see TopDownPosterior), bottom first, each group (B, latent_channels, h, w),
    with each group's KL map in the residual-normal form the pass computed (NVAE eq. 2)."""

    kl_maps: list[Tensor] = field(default_factory=list)  # elementwise KL of each group, (B, latent_channels, h, w)

    def kl_per_dim(self) -> list[Tensor]:
        return self.kl_maps


class SqueezeExcite(nn.Module):
    """Channel gating by a sigmoid of pooled features (Hu et al. 2018), as in NVAE's cells."""

    def __init__(self, width: int) -> None:
        super().__init__()
        hidden = max(width // 8, 4)
        self.net = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, width, 1), nn.Sigmoid())

    def forward(self, h: Tensor) -> Tensor:  # (B, W, h, w) -> (B, W, h, w)
        return h * self.net(h.mean((2, 3), keepdim=True))


class Block(nn.Module):
    """VDVAE's Block: GELU-conv 1x1 -> 3x3 -> 1x1 bottleneck, with SE and a skip when ``residual``.

    3x3 convs become 1x1 at resolutions of 2 or less (VDVAE: "don't use 3x3s for 1x1, 2x2 patches").
    ``zero_last`` starts the last conv at zero (VDVAE's prior: N(0, I) and no state change at init);
    ``last_scale`` shrinks it by sqrt(1 / depth) so that the residual stream stays stable with depth.
    """

    def __init__(self, in_width: int, middle: int, out_width: int, size: tuple[int, int], residual: bool,
                 zero_last: bool = False, last_scale: float = 1.0) -> None:
        super().__init__()
        kernel = 3 if min(size) > 2 else 1
        self.residual = residual
        self.convs = nn.ModuleList([
            nn.Conv2d(in_width, middle, 1), nn.Conv2d(middle, middle, kernel, padding=kernel // 2),
            nn.Conv2d(middle, out_width, 1),
        ])
        self.excite = SqueezeExcite(out_width) if residual else nn.Identity()
        with torch.no_grad():
            self.convs[-1].weight.mul_(0.0 if zero_last else last_scale)
            self.convs[-1].bias.zero_()

    def forward(self, h: Tensor) -> Tensor:  # (B, in_width, h, w) -> (B, out_width, h, w)
        branch = h
        for conv in self.convs:
            branch = conv(F.gelu(branch))
        return h + self.excite(branch) if self.residual else branch


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to a given size, then a 3x3 conv (transposed convs are slow on CPU)."""

    def __init__(self, width: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:  # (B, W, h, w) -> (B, W, *size)
        return self.conv(F.interpolate(h, size=self.size, mode="nearest"))


class DecBlock(nn.Module):
    """One latent group of the top-down path: VDVAE's DecBlock with NVAE's residual normal posterior."""

    def __init__(self, config: VDVAEConfig, size: tuple[int, int], num_groups: int) -> None:
        super().__init__()
        width, middle, zdim = config.width, config.bottleneck, config.latent_channels
        self.zdim, self.bound = zdim, config.logvar_bound
        self.prior = Block(width, middle, 2 * zdim + width, size, residual=False, zero_last=True)
        self.posterior = Block(2 * width, middle, 2 * zdim, size, residual=False)
        self.z_proj = nn.Conv2d(zdim, width, 1)
        with torch.no_grad():
            self.z_proj.weight.mul_(math.sqrt(1 / num_groups))
        self.cell = Block(width, middle, width, size, residual=True, last_scale=math.sqrt(1 / num_groups))

    def prior_step(self, state: Tensor) -> tuple[DiagonalGaussian, Tensor]:
        """p(z_g | z_{>g}) and the state updated by the prior's third output (VDVAE's xpp)."""
        prior_mean, prior_logvar, state_update = self.prior(state).split([self.zdim, self.zdim, state.shape[1]], dim=1)
        return DiagonalGaussian(prior_mean, soft_clamp(prior_logvar, self.bound)), state + state_update

    def posterior_step(self, state: Tensor, features: Tensor, prior: DiagonalGaussian) -> tuple[DiagonalGaussian, Tensor]:
        """q(z_g | x, z_{>g}) as the prior shifted and scaled, and its elementwise KL (NVAE section 3.2)."""
        delta_mean, delta_logvar = self.posterior(torch.cat([state, features], dim=1)).chunk(2, dim=1)
        delta_logvar = soft_clamp(delta_logvar, self.bound)
        posterior = DiagonalGaussian(prior.mean + delta_mean, prior.logvar + delta_logvar)
        return posterior, residual_normal_kl(delta_mean, delta_logvar, prior.logvar)

    def merge(self, state: Tensor, z: Tensor) -> Tensor:  # (B, W, h, w), (B, zdim, h, w) -> (B, W, h, w)
        return self.cell(state + self.z_proj(z))


class VDVAE(VAE):
    """Convolutional top-down hierarchy with spatial latent groups; loss = recon + beta * free-bits KL.

    Latents passed to ``decode`` and returned by ``prior_sample`` are lists bottom (finest) first:
    ``[z_1 (B, latent_channels, h_1, w_1), ..., z_G]``.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vdvae", preset="tiny", input_shape=(3, 10, 6))
    >>> model.log_likelihood(torch.rand(2, 3, 10, 6), iw_samples=5).shape
    torch.Size([2])
    """

    config_class = VDVAEConfig
    registry_name = "vdvae"
    # Metropolis-within-Gibbs as vaezoo implements it needs one Gaussian latent under N(0, I); a hierarchy
    # of spatial groups has neither, nor the one latent vector a latent sampler (a GMM on the posterior means)
    # models. Importance-weighted imputation works (log_likelihood=True).
    capabilities = Capabilities(mwg_imputation=False, latent_sampler=False)
    reported_metrics = {"kl_per_group": "KL(q || p) of each latent group z_1 .. z_G, bottom (finest) first (nats)"}
    # benchmarks/compile_default.py on Fashion-MNIST, 1 CPU thread, cold cache (one run): torch.compile speeds the
    # default model's step 1.23x (2.26 -> 1.83 s), compiles in 232 s and pays for itself after 543 steps; rounded up.
    compile_pays_after_steps = 1000
    presets = {
        # Fast tests: two resolutions of 8x8 digits (8x8, 4x4), three small groups.
        "tiny": {"width": 16, "bottleneck": 8, "groups_per_resolution": (1, 2), "latent_channels": 4,
                 "kl_warmup_steps": 100},
        # 28x28 -> 28, 14, 7, 4: latents at 14x14 and coarser, as NVAE leaves the finest scale to the cells.
        "deep": {"groups_per_resolution": (0, 4, 4, 2), "width": 96, "bottleneck": 48},
    }
    pretrained_tags = {
        # Sized to train on a 2-core CPU inside one working session (see the card for the time it took).
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28), "width": 32, "bottleneck": 16, "groups_per_resolution": (0, 2, 2, 1),
             "latent_channels": 4, "kl_warmup_steps": 3000, "kl_balance": True},
            dataset="fashion-mnist", hf_hub_id="vaezoo/vdvae.fmnist",
            recipe={"epochs": 24, "batch_size": 128, "lr": 2e-3, "grad_clip": 100.0, "ema_decay": 0.999},
        ),
        # The same model on statically binarized Fashion-MNIST, trained 10 epochs (56 min on one CPU thread) to fit a
        # session: test -ELBO 249.40, NLL 235.95 on the first 200 test images, where vae-mlp.fmnist-binarized's is 230.00.
        "fmnist-binarized": PretrainedTag(
            {"input_shape": (1, 28, 28), "width": 32, "bottleneck": 16, "groups_per_resolution": (0, 2, 2, 1),
             "latent_channels": 4, "kl_warmup_steps": 3000, "kl_balance": True},
            dataset="fashion-mnist-binarized", hf_hub_id="vaezoo/vdvae.fmnist-binarized",
            recipe={"epochs": 10, "batch_size": 128, "lr": 2e-3, "grad_clip": 100.0, "ema_decay": 0.999},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "width": 32, "bottleneck": 16, "groups_per_resolution": (1, 2, 2),
             "latent_channels": 4, "kl_warmup_steps": 2000, "kl_balance": True, "free_bits": 0.5},
            dataset="digits", hf_hub_id="vaezoo/vdvae.digits",
            recipe={"epochs": 150, "batch_size": 64, "lr": 2e-3, "grad_clip": 100.0, "ema_decay": 0.998},
        ),
    }

    def __init__(self, config: VDVAEConfig) -> None:
        super().__init__(config)
        width, sizes, groups = config.width, config.resolutions, config.groups_per_resolution
        channels = config.image_shape[0]
        num_groups = sum(groups)
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        # Bottom-up: encoder_blocks residual cells per resolution, average pooling between resolutions.
        self.bottom_up = nn.ModuleList(
            nn.Sequential(*(Block(width, config.bottleneck, width, size, residual=True,
                                  last_scale=math.sqrt(1 / (len(sizes) * config.encoder_blocks)))
                            for _ in range(config.encoder_blocks)))
            for size in sizes
        )
        self.initial_state = nn.Parameter(torch.zeros(1, width, *sizes[-1]))  # the top-down input, coarsest
        # Top-down, in the order they run: the coarsest resolution's groups first.
        self.dec_blocks = nn.ModuleList(DecBlock(config, sizes[r], num_groups) for r in reversed(config.group_resolutions))
        self.upsample = nn.ModuleList(Upsample(width, sizes[r]) for r in range(len(sizes) - 1))  # [r]: r+1 -> r
        self.output_cell = Block(width, config.bottleneck, width, sizes[0], residual=True)
        self.output = nn.Conv2d(width, param_shape(config)[0] if config.is_image else channels, 1)  # p(x | z)'s params

    # --- the two passes --------------------------------------------------------------------------
    def _as_image(self, x: Tensor) -> Tensor:  # (B, *input_shape) -> (B, C, H, W)
        return x.reshape(x.shape[0], *self.config.image_shape)

    def _bottom_up(self, x: Tensor) -> list[Tensor]:  # -> R x (B, W, h_r, w_r), finest first
        h = self.stem(in_weights_dtype(self._as_image(x), self.stem))
        activations = []
        for r, blocks in enumerate(self.bottom_up):
            if r > 0:
                h = F.adaptive_avg_pool2d(h, self.config.resolutions[r])  # 2x2 average pooling, any size
            h = blocks(h)
            activations.append(h)
        return activations

    def _top_down(
        self, batch: int, activations: list[Tensor] | None = None, latents: Sequence[Tensor] | None = None,
        temperature: float | Sequence[float] = 1.0,
    ) -> tuple[Tensor, LadderPosterior]:
        """Run from z_G down to z_1; return p(x | z)'s parameters and the pass's groups, bottom first.

        With ``activations`` each z_g ~ q(z_g | x, z_{>g}); with ``latents`` the given z_g are used; with
        neither, z_g ~ p(z_g | z_{>g}). ``temperature`` scales the noise: one number, or one per group
        (bottom first).
        """
        num_groups = len(self.dec_blocks)
        temperatures = [temperature] * num_groups if isinstance(temperature, (int, float)) else list(temperature)
        resolution_of = self.config.group_resolutions
        state = self.initial_state.expand(batch, -1, -1, -1)  # (B, W, h_top, w_top)
        resolution = len(self.config.resolutions) - 1
        samples, priors, posteriors, kl_maps = [], [], [], []  # filled top first, reversed at the end
        for step, block in enumerate(self.dec_blocks):
            g = num_groups - 1 - step  # this group's index, bottom first
            while resolution > resolution_of[g]:
                resolution -= 1
                state = self.upsample[resolution](state)
            prior, state = block.prior_step(state)
            if latents is not None:
                z = latents[g]
            elif activations is None:
                z = prior.rsample(temperatures[g])
            else:
                posterior, kl_map = block.posterior_step(state, activations[resolution], prior)
                posteriors.append(posterior)
                kl_maps.append(kl_map)
                z = posterior.rsample(temperatures[g])
            priors.append(prior)
            samples.append(z)
            state = block.merge(state, z)
        while resolution > 0:
            resolution -= 1
            state = self.upsample[resolution](state)
        params = self.output(self.output_cell(state)).reshape(batch, *param_shape(self.config))
        return params, LadderPosterior(posteriors[::-1], priors[::-1], samples[::-1], kl_maps[::-1])

    def _infer(self, x: Tensor, temperature: float = 1.0) -> tuple[Tensor, LadderPosterior]:
        return self._top_down(x.shape[0], self._bottom_up(x), temperature=temperature)

    # --- the contract ----------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None, temperature: float = 1.0) -> LadderPosterior:
        """q(z | x) from one top-down pass; ``temperature=0`` follows the posterior means all the way down."""
        return self._infer(x, temperature)[1]

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """Each group's posterior mean given the means above it (a deterministic code), bottom first."""
        return self.encode(x, y, temperature=0.0).mean

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(latent_channels, h, w) of each group, bottom first: what ``decode`` takes, per example."""
        sizes = self.config.resolutions
        return [(self.config.latent_channels, *sizes[r]) for r in self.config.group_resolutions]

    def decode(self, z: Sequence[Tensor], y: Tensor | None = None) -> Tensor:
        """Likelihood parameters (B, *input_shape) from latents [z_1, ..., z_G], bottom first."""
        shapes = self.latent_shapes()
        if (not isinstance(z, (list, tuple)) or len(z) != len(shapes)
                or any(not isinstance(zg, Tensor) or tuple(zg.shape[1:]) != s for zg, s in zip(z, shapes))):
            got = [tuple(zg.shape) for zg in z] if isinstance(z, (list, tuple)) else type(z).__name__
            raise InputError(f"decode takes a list of {len(shapes)} latents of shapes (B, *s) for s in {shapes}, "
                             f"bottom first; got {got}")
        z = [in_weights_dtype(zg, self.output) for zg in z]
        return self._top_down(z[0].shape[0], latents=z)[0]

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        params, posterior = self._infer(x)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl_per_group = posterior.kl_per_layer()  # G x (B,)
        kl = torch.stack(kl_per_group).sum(0)  # (B,)
        kl_weight = self.kl_weight(self.config.beta)
        kl_objective = self._kl_objective(kl_per_group, warming_up=kl_weight < self.config.beta) if self.training else kl.mean()
        loss = recon.mean() + kl_weight * kl_objective
        terms = {f"kl_{g}": k.mean() for g, k in enumerate(kl_per_group)}
        return VAEOutput(loss=loss, terms=terms, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params,
                         metrics={"kl_per_group": terms})

    def _kl_objective(self, kl_per_group: list[Tensor], warming_up: bool) -> Tensor:
        """The training KL: free bits per group (Kingma et al. 2016, C.8: no pressure on a group whose batch-mean
        KL is under lambda), balanced across groups during the warm-up when ``kl_balance`` is set."""
        kl_means = torch.stack([k.mean() for k in kl_per_group])  # (G,)
        penalised = kl_means.clamp(min=self.config.free_bits) if self.config.free_bits > 0 else kl_means
        if not (self.config.kl_balance and warming_up):
            return penalised.sum()
        # NVAE's kl_balancer (NVlabs/NVAE utils.py, with kl_balancer_coeff's "square" alpha): coefficients
        # proportional to (KL_g + 0.01) / alpha_g, alpha_g = h_g * w_g / (groups at that resolution), mean 1.
        coeffs = (kl_means.detach().abs() + 0.01) / self._kl_alpha.to(kl_means)
        return (penalised * coeffs / coeffs.mean()).sum()

    @property
    def _kl_alpha(self) -> Tensor:  # (G,) bottom first, the smallest 1
        sizes, counts = self.config.resolutions, self.config.groups_per_resolution
        alpha = torch.tensor([sizes[r][0] * sizes[r][1] / counts[r] for r in self.config.group_resolutions])
        return alpha / alpha.min()

    def importance_sample(self, x: Tensor, y: Tensor | None = None) -> ImportanceSample:
        """p(x | z)'s parameters and sum_g log p(z_g | z_{>g}) - log q(z_g | x, z_{>g}) at one z ~ q."""
        params, posterior = self._infer(x)
        return ImportanceSample(params, posterior.log_prior_ratio())

    def repeated_log_weights(self, x: Tensor, y: Tensor | None, reps: int) -> Tensor:
        """As the base class's, but the deterministic bottom-up pass runs once per row, not ``reps`` times
        (about a third of the cost of ``log_likelihood``); the draws, hence the weights, are the same."""
        activations = [a.repeat(reps, 1, 1, 1) for a in self._bottom_up(x)]
        params, posterior = self._top_down(x.shape[0] * reps, activations)
        x_rep = x.repeat(reps, *([1] * (x.dim() - 1)))
        return (self.likelihood.log_prob(params, x_rep) + posterior.log_prior_ratio()).view(reps, x.shape[0])

    def prior_sample(self, n: int, temperature: float | Sequence[float] = 1.0) -> list[Tensor]:
        """Ancestral samples [z_1, ..., z_G] (bottom first); ``temperature`` is one number or one per group.

        ``model.decode(model.prior_sample(n, [1.0, 0.8, 0.6]))`` samples with per-group temperatures
        (VDVAE's forward_uncond ``t`` list); ``model.sample(n, temperature=T)`` uses one.
        """
        if not isinstance(temperature, (int, float)):
            temps = list(temperature)
            if len(temps) != len(self.dec_blocks) or not all(isinstance(t, (int, float)) and t >= 0 for t in temps):
                raise InputError(f"temperature={temps!r} must be one number >= 0 or {len(self.dec_blocks)} of them, "
                                 "one per latent group, bottom first")
        return self._top_down(n, temperature=temperature)[1].samples
