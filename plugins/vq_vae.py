"""VQ-VAE (van den Oord, Vinyals and Kavukcuoglu 2017, "Neural Discrete Representation Learning",
arXiv:1711.00937), with the EMA codebook of its appendix A.1 and a learned autoregressive prior.

The encoder maps x to a grid of vectors z_e(x) (B, D, *grid); each is replaced by its nearest code
in a codebook e_1..e_K (eq. 1-2), and the decoder sees z_q(x):

    k_i = argmin_j ||z_e(x)_i - e_j||^2,   z_q(x)_i = e_{k_i}                        (eq. 1-2)
    loss = -log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2              (eq. 3)

The gradient of -log p(x | z_q) is copied from z_q to z_e (straight-through, z_q = z_e + sg[z_q - z_e]).
With ``codebook_update="ema"`` the codebook term is replaced by moving averages (eq. A.1):
N_j <- g N_j + (1 - g) n_j,  m_j <- g m_j + (1 - g) sum_{i: k_i = j} z_e,i,  e_j = m_j / N_j.

q(k | x) is one-hot, so KL(q || p) = -log p(k) and -log p(x) <= -log p(x | z_q(k)) - log p(k):
``neg_elbo = recon + kl`` is a valid bound under the prior p(k). The prior is a small causal
transformer over the flattened grid, trained in a second stage on frozen codes (section 3.1).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vq-vae", preset="tiny", input_shape=(1, 8, 8))
    >>> [stage.name for stage in model.stages()]
    ['autoencoder', 'prior']
    >>> model.sample(2).shape
    torch.Size([2, 1, 8, 8])
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.backbones import (
    ConvTransposeTrunk,
    ConvTrunk,
    MLPDecoder,
    MLPEncoder,
    conv_grid,
    in_weights_dtype,
    resolve_backbone,
)
from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import Capabilities, StepOutput, TrainingStage, VAEOutput
from vaezoo.core.distributed import all_reduce_sum_, broadcast_from_main_
from vaezoo.core.likelihoods import param_shape
from vaezoo.core.model import VAE
from vaezoo.errors import CapabilityError, ConfigError, InputError, did_you_mean
from vaezoo.zoo.tags import PretrainedTag

CODEBOOK_UPDATES = ("ema", "loss")


@dataclass(frozen=True)
class VQVAEConfig(VAEConfig):
    """VQ-VAE settings. The inherited ``latent_dim`` is unused (and refused): the latent is a grid of codes."""

    unused_fields: ClassVar[dict[str, str]] = {"latent_dim": "code_dim and num_latent_codes (the latent is a grid of codes)"}

    codebook_size: int = 128  # K, number of code vectors
    code_dim: int = 32  # D, size of each code vector
    num_latent_codes: int = 16  # grid length L for the MLP encoder (vectors); conv grids follow conv_channels
    beta_commit: float = 0.25  # weight of the commitment term ||z_e - sg[e]||^2 (paper: 0.25)
    codebook_update: str = "ema"  # "ema" (appendix A.1) | "loss" (the ||sg[z_e] - e||^2 term of eq. 3)
    ema_decay: float = 0.99  # gamma of the moving averages
    ema_epsilon: float = 1e-5  # Laplace smoothing of the EMA counts, so no code divides by zero
    dead_code_threshold: float = 1.0  # EMA assignments per batch below which a code is re-initialised; 0 = never
    prior_dim: int = 64  # width of the prior's transformer
    prior_layers: int = 2  # transformer layers of the prior
    prior_heads: int = 4  # attention heads of the prior (must divide prior_dim)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("codebook_size", "code_dim", "num_latent_codes", "prior_dim", "prior_layers", "prior_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.codebook_size < 2:
            raise ConfigError(f"codebook_size={self.codebook_size} must be >= 2")
        if self.prior_dim % self.prior_heads:
            raise ConfigError(f"prior_heads={self.prior_heads} must divide prior_dim={self.prior_dim}")
        if not self.beta_commit >= 0:
            raise ConfigError(f"beta_commit={self.beta_commit} must be >= 0")
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ConfigError(
                f"codebook_update={self.codebook_update!r} is unknown; use one of {', '.join(CODEBOOK_UPDATES)}"
                + did_you_mean(str(self.codebook_update), CODEBOOK_UPDATES)
            )
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay={self.ema_decay} must be in (0, 1), e.g. 0.99")
        if not self.ema_epsilon > 0:
            raise ConfigError(f"ema_epsilon={self.ema_epsilon} must be > 0, e.g. 1e-5")
        if not self.dead_code_threshold >= 0:
            raise ConfigError(f"dead_code_threshold={self.dead_code_threshold} must be >= 0 (0 turns resets off)")
        if self.encoder.startswith("timm:"):
            raise ConfigError(f"encoder={self.encoder!r}: vq-vae needs a spatial feature map; use 'conv' or 'mlp'")
        encoder, decoder = resolve_backbone(self, "encoder"), resolve_backbone(self, "decoder")
        if encoder != decoder:
            raise ConfigError(
                f"encoder={self.encoder!r} and decoder={self.decoder!r}: vq-vae needs both 'conv' or both 'mlp'"
            )


@dataclass
class QuantizedPosterior:
    """q(k | x): a point mass on the nearest code at every grid position (a vaezoo Posterior, not Gaussian)."""

    z_e: Tensor  # (B, D, *grid) encoder output
    z_q: Tensor  # (B, D, *grid) nearest codes; carries the codebook's gradient when codebook_update="loss"
    indices: Tensor  # (B, *grid) long, the code index at each position
    prior_log_prob: Callable[[Tensor], Tensor] | None = None  # log p(k) of (B, n) codes under the learned prior
    is_gaussian = False

    @property
    def mean(self) -> Tensor:
        """z_q with the straight-through gradient: its value is z_q, its gradient goes to z_e (section 2.2)."""
        return self.z_e + (self.z_q - self.z_e).detach()

    @property
    def layers(self) -> list[QuantizedPosterior]:
        return [self]

    def mode(self) -> Tensor:
        return self.mean

    def rsample(self, temperature: float = 1.0) -> Tensor:
        """A point mass: every sample is the nearest codes."""
        return self.mean

    def log_prob(self, z: Tensor) -> Tensor:  # (B,)
        """log q(z | x): 0 at the nearest codes, -inf anywhere else (a point mass)."""
        at_codes = (z == self.z_q).flatten(1).all(1)
        return torch.where(at_codes, 0.0, -math.inf).to(self.z_q.dtype)

    def kl(self) -> Tensor:  # (B,)
        """KL(q || p) of a one-hot q is -log p(k) under the prior over codes (section 3.1)."""
        if self.prior_log_prob is None:
            raise CapabilityError("this QuantizedPosterior was built without the prior; use VQVAE.encode, which attaches it")
        return -self.prior_log_prob(self.indices.flatten(1))


def _flatten_codes(z: Tensor) -> Tensor:  # (B, D, *grid) -> (B * n, D), rows in indices.flatten() order
    return z.movedim(1, -1).reshape(-1, z.shape[1])


class _VectorQuantizer(nn.Module):
    """The codebook: nearest-neighbour lookup, EMA update (appendix A.1) and dead-code resets."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.use_ema = config.codebook_update == "ema"
        self.decay, self.epsilon, self.threshold = config.ema_decay, config.ema_epsilon, config.dead_code_threshold
        codebook = torch.empty(config.codebook_size, config.code_dim).normal_()  # (K, D); as randn, cheap on meta
        if self.use_ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_sum", torch.zeros(codebook.shape))  # m_j
        else:
            self.codebook = nn.Parameter(codebook)
        # N_j, also the usage that resets read. Starting at zero makes the first training step reset
        # nearly every code onto an encoder output: a data-dependent initialisation of the codebook.
        self.register_buffer("ema_count", torch.zeros(config.codebook_size))

    @torch.no_grad()
    def nearest(self, z_flat: Tensor) -> Tensor:  # (N, D) -> (N,) long, eq. 2
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 does not change the argmin.
        return (self.codebook.pow(2).sum(1) - 2 * z_flat @ self.codebook.t()).argmin(1)

    def batch_statistics(self, z_flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """n_j and sum_{i: k_i = j} z_e,i for this batch, (K,) and (K, D): all-reduce these under DDP."""
        one_hot = F.one_hot(indices, self.codebook.shape[0]).type_as(z_flat)  # (N, K)
        # Summed over data-parallel ranks, so every rank makes the same update from the global batch.
        return all_reduce_sum_(one_hot.sum(0)), all_reduce_sum_(one_hot.t() @ z_flat)

    @torch.no_grad()
    def update(self, z_flat: Tensor, indices: Tensor) -> None:
        """One training step of the moving averages (eq. A.1), then the dead-code resets."""
        z_flat = z_flat.to(self.codebook.dtype)  # keep the averages in full precision under autocast
        counts, sums = self.batch_statistics(z_flat, indices)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.use_ema:
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.epsilon) / (total + len(counts) * self.epsilon) * total  # Laplace
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        if self.reset_dead_codes(z_flat).any():
            # Resets draw rows of each rank's own batch: rank 0's choice wins, so ranks stay identical.
            for buffer in (self.codebook, self.ema_count, *((self.ema_sum,) if self.use_ema else ())):
                broadcast_from_main_(buffer)

    @torch.no_grad()
    def reset_dead_codes(self, z_flat: Tensor) -> Tensor:
        """Move codes used less than ``threshold`` times per batch (EMA) onto random encoder outputs.

        The reset code restarts with usage ``threshold``: it survives if it wins at least that many
        vectors per batch from now on. Rows are drawn with torch's RNG, so seeding makes it repeatable.
        """
        dead = self.ema_count < self.threshold  # (K,)
        num_dead, num_rows = int(dead.sum()), z_flat.shape[0]
        if num_dead == 0 or num_rows == 0:
            return dead
        if num_rows >= num_dead:
            rows = torch.randperm(num_rows, device=z_flat.device)[:num_dead]
        else:
            rows = torch.randint(num_rows, (num_dead,), device=z_flat.device)
        self.codebook[dead] = z_flat[rows].to(self.codebook.dtype)
        self.ema_count[dead] = self.threshold
        if self.use_ema:
            self.ema_sum[dead] = self.codebook[dead] * self.threshold
        return dead


class _CodePrior(nn.Module):
    """p(k) = prod_t p(k_t | k_<t): a causal transformer over the flattened grid, BOS token first."""

    def __init__(self, codebook_size: int, num_positions: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.bos = codebook_size  # the extra token that starts every sequence
        self.token_embedding = nn.Embedding(codebook_size + 1, dim)
        self.position_embedding = nn.Parameter(torch.empty(num_positions, dim))
        nn.init.normal_(self.position_embedding, std=0.02)  # in place: cheap on the meta device (vaezoo.core.sizes)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, codebook_size)
        # Zero logits: an untrained prior is exactly uniform, so kl starts at n * log K.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def next_logits(self, tokens: Tensor) -> Tensor:  # (B, t) starting with BOS -> (B, t, K)
        length = tokens.shape[1]
        h = self.token_embedding(tokens) + self.position_embedding[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=h.device, dtype=h.dtype)
        return self.head(self.norm(self.transformer(h, mask=mask, is_causal=True)))

    def log_prob(self, indices: Tensor) -> Tensor:  # (B, n) -> (B,), sum_t log p(k_t | k_<t)
        tokens = torch.cat([indices.new_full((indices.shape[0], 1), self.bos), indices[:, :-1]], dim=1)
        logits = self.next_logits(tokens).float()  # (B, n, K); float32 so that a half-precision model's nats hold up
        return -F.cross_entropy(logits.transpose(1, 2), indices, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, n: int, num_positions: int, temperature: float) -> Tensor:  # -> (n, num_positions)
        tokens = torch.full((n, 1), self.bos, dtype=torch.long, device=self.head.weight.device)
        for _ in range(num_positions):
            probs = torch.softmax(self.next_logits(tokens)[:, -1].float() / temperature, dim=-1)  # (n, K)
            tokens = torch.cat([tokens, torch.multinomial(probs, 1)], dim=1)
        return tokens[:, 1:]


class VQVAE(VAE):
    """VQ-VAE: discrete latent grid, EMA codebook, and a transformer prior trained as a second stage.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vq-vae", preset="tiny", input_shape=(64,))
    >>> out = model(torch.rand(4, 64))
    >>> sorted(out.terms)
    ['code_usage', 'commit', 'perplexity', 'vq']
    >>> model.encode(torch.rand(4, 64)).indices.shape  # (B, num_latent_codes)
    torch.Size([4, 4])
    """

    config_class = VQVAEConfig
    registry_name = "vq-vae"
    # The posterior is one-hot, so neg_elbo is already the bound to report, and no Gaussian latent exists for MWG;
    # its codes are discrete, so no continuous density (a latent sampler's GMM) is fitted on them: its prior is learned.
    capabilities = Capabilities(log_likelihood=False, mwg_imputation=False, latent_sampler=False)
    reported_metrics = {
        "perplexity": "exp of the entropy of the codes used on the data (van den Oord et al. 2017): how many codes are in use",
        "code_usage": "fraction of the codebook that the data's codes use",
    }
    presets = {
        "tiny": {"conv_channels": (16, 32), "hidden_dims": (32,), "code_dim": 8, "codebook_size": 32,
                 "num_latent_codes": 4, "prior_dim": 32, "prior_layers": 1, "prior_heads": 2},
        # The paper's K = 512, D = 64 (without its residual blocks).
        "large": {"conv_channels": (128, 256), "code_dim": 64, "codebook_size": 512, "prior_dim": 128, "prior_layers": 4},
    }
    pretrained_tags = {
        "fmnist": PretrainedTag(
            # Narrow convolutions: transposed-conv backward dominates on a CPU, and this tag is trained on one.
            {"input_shape": (1, 28, 28), "conv_channels": (16, 32), "code_dim": 16}, dataset="fashion-mnist",
            hf_hub_id="vaezoo/vq-vae.fmnist", recipe={"stage_epochs": (5, 5), "batch_size": 256, "lr": 2e-3},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "conv_channels": (64,), "codebook_size": 64, "code_dim": 16},
            dataset="digits", hf_hub_id="vaezoo/vq-vae.digits", recipe={"stage_epochs": (60, 60), "batch_size": 64},
        ),
    }

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__(config)
        code_dim, image = config.code_dim, resolve_backbone(config, "encoder") == "conv"
        if image:  # (B, C, H, W) -> (B, D, h, w) and back, one stride-2 stage per conv width
            self.grid_shape: tuple[int, ...] = conv_grid(config.input_shape, len(config.conv_channels))
            widths = list(reversed(config.conv_channels))
            channels, output_hw = config.input_shape[0], tuple(config.input_shape[1:])
            self.encoder = nn.Sequential(ConvTrunk(channels, config.conv_channels), nn.Conv2d(widths[0], code_dim, 1))
            self.decoder = nn.Sequential(
                nn.Conv2d(code_dim, widths[0], 3, padding=1), nn.SiLU(),  # to the likelihood's parameters
                ConvTransposeTrunk(widths[0], widths[1:] + [widths[-1]], param_shape(config)[0], output_hw),
            )
        else:  # (B, *input_shape) -> (B, D, L) and back
            self.grid_shape = (config.num_latent_codes,)
            length = config.num_latent_codes
            trunk = MLPEncoder(config.input_shape, config.hidden_dims)
            self.encoder = nn.Sequential(
                trunk, nn.Linear(trunk.out_features, length * code_dim), nn.Unflatten(1, (code_dim, length))
            )
            self.decoder = nn.Sequential(nn.Flatten(1), MLPDecoder(length * code_dim, param_shape(config), config.hidden_dims))
        self.num_codes = math.prod(self.grid_shape)  # n, positions per example
        self.quantizer = _VectorQuantizer(config)
        self.prior = _CodePrior(
            config.codebook_size, self.num_codes, config.prior_dim, config.prior_layers, config.prior_heads
        )

    def encode(self, x: Tensor, y: Tensor | None = None) -> QuantizedPosterior:
        """Encode and quantize; never touches the codebook (``forward`` updates it in training)."""
        z_e = self.encoder(x)  # (B, D, *grid)
        indices = self.quantizer.nearest(_flatten_codes(z_e.detach())).view(z_e.shape[0], *self.grid_shape)
        return QuantizedPosterior(z_e=z_e, z_q=self.codes_to_latents(indices), indices=indices,
                                  prior_log_prob=self.prior.log_prob)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:  # (B, D, *grid) -> (B, *input_shape)
        return self.decoder(in_weights_dtype(z, self.decoder))

    def codes_to_latents(self, indices: Tensor) -> Tensor:  # (B, *grid) long -> (B, D, *grid)
        size = self.config.codebook_size
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
            raise InputError(f"code indices hold {int(indices.min())}..{int(indices.max())}; this codebook has 0..{size - 1}")
        return self.quantizer.codebook[indices].movedim(-1, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        posterior = self.encode(x)
        params = self.decode(posterior.mean)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        commit = (posterior.z_e - posterior.z_q.detach()).pow(2).flatten(1).sum(1).mean()  # eq. 3, third term
        vq = recon.new_zeros(())
        if self.config.codebook_update == "loss":
            vq = (posterior.z_e.detach() - posterior.z_q).pow(2).flatten(1).sum(1).mean()  # eq. 3, second term
        with torch.no_grad():  # the prior learns in its own stage; here it only scores the codes
            if self.training:  # stage 1 does not use the prior: report KL under a uniform one, n * log K, for free
                kl = recon.new_full(recon.shape, self.num_codes * math.log(self.config.codebook_size))
            else:
                kl = -self.prior.log_prob(posterior.indices.flatten(1))  # (B,)
            perplexity, code_usage = self._usage(posterior.indices)
        if self.training:
            self.quantizer.update(_flatten_codes(posterior.z_e.detach()), posterior.indices.flatten())
        loss = recon.mean() + self.config.beta_commit * commit + vq
        terms = {"commit": commit, "vq": vq, "perplexity": perplexity, "code_usage": code_usage}
        return VAEOutput(loss=loss, terms=terms, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params,
                         metrics={"perplexity": perplexity, "code_usage": code_usage})

    def prior_loss(self, x: Tensor, y: Tensor | None = None) -> StepOutput:
        """Stage 2: -log p(k) of the codes of x in nats per example; the codebook stays frozen."""
        self.check_input(x, y)
        with torch.no_grad():
            indices = self.encode(self.prepare_target(x)).indices.flatten(1)  # (B, n)
        prior_nll = -self.prior.log_prob(indices).mean()
        return StepOutput(loss=prior_nll, terms={"prior_nll": prior_nll.detach()})

    def prior_sample(self, n: int, temperature: float = 1.0) -> Tensor:  # -> (n, D, *grid)
        if not temperature > 0:
            raise InputError(f"temperature={temperature} must be > 0")
        indices = self.prior.sample(n, self.num_codes, temperature)
        return self.codes_to_latents(indices.view(n, *self.grid_shape))

    def autoencoder_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the prior: encoder, decoder, likelihood, and the codebook under "loss"."""
        prior = {id(p) for p in self.prior.parameters()}
        return (p for p in self.parameters() if id(p) not in prior)

    def stages(self) -> list[TrainingStage]:
        return [
            TrainingStage("autoencoder", self.autoencoder_parameters, self.forward, validation="elbo"),
            TrainingStage("prior", self.prior.parameters, self.prior_loss, validation="loss"),
        ]

    def _usage(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """exp(entropy) of the batch's code histogram, and the fraction of codes it uses."""
        # one_hot + sum rather than bincount, which has no deterministic CUDA kernel.
        probs = F.one_hot(indices.flatten(), self.config.codebook_size).float().mean(0)  # (K,)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
        return entropy.exp(), (probs > 0).float().mean()
