"""FactorVAE (Kim and Mnih 2018, "Disentangling by Factorising", arXiv:1802.05983), with vae-mlp's networks.

The total correlation of the aggregate posterior q(z) = E_data[q(z | x)], TC(z) = KL(q(z) || q_bar(z)) with
q_bar(z) = prod_d q(z_d), has no closed form; FactorVAE estimates it by the density-ratio trick (eq. 3) with a
discriminator D(z), the probability that z came from q(z) rather than from q_bar(z):

    TC(z) ~= E_q(z)[log D(z) / (1 - D(z))] = E_q(z)[logit D(z)]
    VAE loss           = E[-log p(x | z)] + KL(q(z | x) || p(z)) + gamma * E_q(z)[logit D(z)]          (eq. 2)
    discriminator loss = -1/2 E_q(z)[log D(z)] - 1/2 E_q_bar(z)[log(1 - D(z))]                     (Algorithm 2)

Samples of q_bar(z) come from ``permute_dims`` (Algorithm 1): each latent dimension of a batch of codes permuted
across the batch on its own, which keeps every column's values and breaks their joint. D has one logit output
(logit D(z) itself); the references' two logits under a softmax are the same family (their difference is the logit).

Training, through the shared trainer (no loop of its own): one stage, one loss, one optimiser.
- Gradients are routed inside ``forward``: the TC term evaluates D with its weights detached
  (torch.func.functional_call), so the VAE loss reaches only the encoder and decoder; D's loss sees z.detach(),
  so it reaches only D. ``loss = vae_loss + (d_loss - d_loss.detach())`` then has the VAE loss's value and, on
  each network, exactly the gradient of its own objective, as disentanglement_lib gets from two optimisers with
  disjoint var_lists on one graph (tf.group of both train ops: both step from the same weights, as here).
- D's optimiser settings (Adam betas (0.5, 0.9) against the VAE's (0.9, 0.999), the same learning rate: the
  paper's appendix and disentanglement_lib's shared.gin) are a ``ParamGroup`` of the stage: the trainer's one Adam
  has a group per network, which steps exactly as two Adams would (Adam is per parameter), clips each group on its
  own, and saves and resumes both groups' state and settings in the run's checkpoint. This (option A) needs no new
  kind of training step; option B, several optimisers and losses per stage, would have grown every trainer path
  (steps, clipping, skipping, EMA, checkpoints) for an update that is the same.

The second batch: Algorithm 2 draws two independent batches per step, one for the VAE and D's "true" codes, one
for the permuted codes. The trainer hands one batch, in a fresh random order each epoch; like pythae, this splits
it: D's true codes are the first half's z, its permuted codes ``permute_dims`` of the second half's (so the two
classes come from different examples, as in Algorithm 2). The ELBO and the TC term use the whole batch, so that
every example trains the VAE as in vae-mlp at the same batch size. (disentanglement_lib permutes the same batch
the true codes come from; 1Konny/FactorVAE's data loader gives a second random batch.)

``neg_elbo`` is recon + the analytic KL with weight 1 per example, as every variant reports it; ``metrics`` holds
``tc`` (D's estimate of TC on the batch, nats) and ``discriminator_accuracy`` (on the true and permuted halves,
each weighted 1/2; 0.5 is chance). With gamma = 0 the loss and the VAE's gradients are vae-mlp's. The latent is
one N(0, I) Gaussian, so log_likelihood's importance-weighted bound is the base class's.

Defaults: gamma = 10. disentanglement_lib's FactorVAE has no default (gamma=gin.REQUIRED); 10 is the smallest of
its unsupervised_study_v1 sweep {10, 20, 30, 40, 50, 100} and the value of its own training test. D is its
fc_discriminator (Kim and Mnih's appendix): six hidden layers of 1000 units, leaky ReLU (slope 0.2).

References read: google-research/disentanglement_lib disentanglement_lib/methods/unsupervised/vae.py (FactorVAE,
shuffle_codes), disentanglement_lib/methods/shared/architectures.py (fc_discriminator),
disentanglement_lib/config/unsupervised_study_v1/model_configs/shared.gin (the two Adams),
disentanglement_lib/config/unsupervised_study_v1/sweep.py (the gamma sweep) and
disentanglement_lib/methods/unsupervised/train_test.py (gamma = 10); pythae
(clementchadebec/benchmark_VAE) src/pythae/models/factor_vae/factor_vae_model.py (the batch split in halves,
_permute_dims) and factor_vae_utils.py; 1Konny/FactorVAE solver.py and ops.py (permute_dims, two batches).
Differences: pythae computes D's loss on the true codes without detaching them (here D's loss never reaches the
encoder); 1Konny steps the VAE before encoding D's second batch (here both step from the same weights).

    >>> import vaezoo, torch
    >>> model = FactorVAE(FactorVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4,
    ...                                   discriminator_hidden_dims=(16,)))
    >>> sorted(model(torch.rand(8, 64)).metrics)
    ['discriminator_accuracy', 'tc']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import ParamGroup, TrainingStage, VAEOutput
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.core.validation import check_count
from vaezoo.errors import ConfigError
from vaezoo.zoo.tags import PretrainedTag

LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default, as disentanglement_lib's fc_discriminator uses it


@dataclass(frozen=True)
class FactorVAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp
    latent_dim: int = 10  # few latents, so that each can take one factor (10 in the paper and disentanglement_lib)
    gamma: float = 10.0  # weight of the TC estimate (eq. 2); 0 gives the ELBO. See the module docstring
    discriminator_hidden_dims: tuple[int, ...] = (1000,) * 6  # D's MLP widths (fc_discriminator: 6 x 1000)
    discriminator_lr_scale: float = 1.0  # D's learning rate / the VAE's (Kim and Mnih: 1e-4 for both)
    discriminator_betas: tuple[float, float] = (0.5, 0.9)  # D's Adam (beta1, beta2) (the VAE's: (0.9, 0.999))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.gamma >= 0:
            raise ConfigError(f"gamma={self.gamma} must be >= 0 (0 trains the plain ELBO), e.g. 10")
        if not isinstance(self.discriminator_hidden_dims, tuple):
            raise ConfigError(f"discriminator_hidden_dims={self.discriminator_hidden_dims!r} must be a tuple of "
                              "positive integers, e.g. (1000, 1000)")
        for width in self.discriminator_hidden_dims:
            check_count(width, "discriminator_hidden_dims", error=ConfigError, hint=" (each width), e.g. 1000")
        if not self.discriminator_lr_scale > 0:
            raise ConfigError(f"discriminator_lr_scale={self.discriminator_lr_scale} must be > 0 (1: the VAE's rate)")
        betas = self.discriminator_betas
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ConfigError(f"discriminator_betas={betas!r} must be two numbers in [0, 1), e.g. (0.5, 0.9)")


def permute_dims(z: Tensor) -> Tensor:
    """Each column of z (B, D) permuted across the batch on its own: samples of prod_d q(z_d) (Algorithm 1).

    Every column keeps its values; the rows' joint is broken. A column's argsort of iid uniforms is a
    uniformly random permutation.

    >>> z = torch.arange(12.0).view(4, 3)
    >>> bool((permute_dims(z).sort(0).values == z).all())
    True
    """
    order = torch.rand(z.shape, device=z.device).argsort(dim=0)  # (B, D): one permutation per column
    return z.gather(0, order)


class Discriminator(nn.Module):
    """An MLP from z (B, D) to logit D(z) (B,): how likely z came from q(z) rather than prod_d q(z_d)."""

    def __init__(self, latent_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(LEAKY_SLOPE)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z).squeeze(-1)


class FactorLosses(NamedTuple):
    """The two objectives of one step and what they report; ``vae_loss`` and ``discriminator_loss`` carry gradients."""

    vae_loss: Tensor  # scalar: mean(recon + kl_weight * KL) + gamma * tc; reaches the encoder and decoder only
    discriminator_loss: Tensor  # scalar: D's cross-entropy on true and permuted codes; reaches D only
    tc: Tensor  # scalar: the batch mean of logit D(z), z ~ q(z | x), D's weights held fixed
    discriminator_accuracy: Tensor  # scalar in [0, 1]: (true codes called true + permuted called permuted) / 2
    recon: Tensor  # (B,): -log p(x | z)
    kl: Tensor  # (B,): analytic KL(q(z | x) || p(z))
    params: Tensor  # p(x | z)'s parameters, (B, *param_shape)


class FactorVAE(GaussianLatentVAE):
    """vae-mlp's networks trained on the ELBO plus gamma times a discriminator's TC estimate; reports the -ELBO.

    >>> import torch
    >>> model = FactorVAE(FactorVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4, gamma=0.0))
    >>> out = model(torch.rand(8, 64))
    >>> bool(torch.isclose(out.loss, out.neg_elbo.mean()))  # gamma = 0: the ELBO loss
    True
    """

    config_class = FactorVAEConfig
    registry_name = "factor-vae"
    reported_metrics = {
        "tc": "total correlation KL(q(z) || prod_d q(z_d)) as the discriminator estimates it, E[logit D(z)] (nats)",
        "discriminator_accuracy": "the discriminator's accuracy on true and dimension-wise permuted codes (0.5: chance)",
    }
    train_defaults = {"lr": 2e-3}  # vae-mlp's, for the same networks (D's is the same: discriminator_lr_scale=1)
    presets = {"tiny": {"hidden_dims": (32,), "latent_dim": 4, "discriminator_hidden_dims": (32, 32)}}
    pretrained_tags = {
        # vae-mlp.digits' networks; a 2 x 256 discriminator for 8 latents rather than the paper's 6 x 1000.
        # shapes2d (dSprites-like, 56k training images): gamma = 10; networks and budget of vae-mlp.shapes2d,
        # and a 2 x 256 discriminator rather than the paper's 6 x 1000 (whose 5M parameters would outweigh the
        # zoo's size limit).
        "shapes2d": PretrainedTag(
            {"input_shape": (1, 64, 64), "encoder": "mlp", "decoder": "mlp", "hidden_dims": (64,), "latent_dim": 10,
             "discriminator_hidden_dims": (256, 256)},
            dataset="shapes2d", hf_hub_id="vaezoo/factor-vae.shapes2d", recipe={"epochs": 100, "batch_size": 64},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8, "discriminator_hidden_dims": (256, 256)},
            dataset="digits", hf_hub_id="vaezoo/factor-vae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def __init__(self, config: FactorVAEConfig) -> None:
        super().__init__(config)  # the VAE's networks first, so that they draw vae-mlp's initial weights
        self.discriminator = Discriminator(config.latent_dim, config.discriminator_hidden_dims)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        parts = self.factor_losses(self.prepare_target(x), y)
        # The VAE loss's value; each network's gradient is that of its own objective (see the module docstring).
        loss = parts.vae_loss + (parts.discriminator_loss - parts.discriminator_loss.detach())
        tc, accuracy = parts.tc.detach(), parts.discriminator_accuracy.detach()
        terms = {"tc": tc, "discriminator_loss": parts.discriminator_loss.detach(), "discriminator_accuracy": accuracy}
        return VAEOutput(loss=loss, terms=terms, recon=parts.recon.mean(), kl=parts.kl.mean(),
                         neg_elbo=parts.recon + parts.kl, params=parts.params,
                         metrics={"tc": tc, "discriminator_accuracy": accuracy})

    def factor_losses(self, x: Tensor, y: Tensor | None = None) -> FactorLosses:
        """Both objectives on one batch x (already a target, see prepare_target), with one z ~ q(z | x) per example."""
        posterior = self.encode(x, y)
        z = posterior.rsample()  # (B, D), as vae-mlp draws it
        params = self.decode(z, y)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = posterior.kl()  # (B,) analytic
        tc = self.frozen_logits(z).float().mean()  # eq. 3: E_q(z)[log D / (1 - D)], gradient to the VAE only
        vae_loss = (recon + self.kl_weight(1.0) * kl).mean() + self.config.gamma * tc
        true_logits, permuted_logits = self._discriminate(z.detach())
        discriminator_loss = 0.5 * (F.binary_cross_entropy_with_logits(true_logits, torch.ones_like(true_logits))
                                    + F.binary_cross_entropy_with_logits(permuted_logits, torch.zeros_like(permuted_logits)))
        accuracy = 0.5 * ((true_logits > 0).float().mean() + (permuted_logits < 0).float().mean())
        return FactorLosses(vae_loss, discriminator_loss, tc, accuracy, recon, kl, params)

    def frozen_logits(self, z: Tensor) -> Tensor:
        """logit D(z), (B,), with D's weights detached: a gradient reaches z, and through it the encoder, only."""
        frozen = {name: weight.detach() for name, weight in self.discriminator.named_parameters()}
        return functional_call(self.discriminator, frozen, (z,))

    def _discriminate(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """D's logits (float32) on the first half's codes (true) and on the second half's, permute_dims'd (permuted).

        A batch of one has no second half: its code is used for both classes (accuracy then 0.5 at best).
        """
        half = (codes.shape[0] + 1) // 2
        permuted = permute_dims(codes[half:] if codes.shape[0] > 1 else codes)
        return self.discriminator(codes[:half]).float(), self.discriminator(permuted).float()

    def stages(self) -> list[TrainingStage]:
        """One stage: the whole model on ``forward``; D in a parameter group with its own lr share and Adam betas."""
        config = self.config
        discriminator = ParamGroup("discriminator", self.discriminator.parameters,
                                   lr_scale=config.discriminator_lr_scale, betas=config.discriminator_betas)
        return [TrainingStage("main", self.parameters, self.forward, validation="elbo", param_groups=(discriminator,))]
