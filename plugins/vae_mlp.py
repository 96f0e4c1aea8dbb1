"""The seed's VAE (Kingma and Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114).

    q(z | x) = N(mu(x), diag sigma^2(x)),   p(z) = N(0, I),   p(x | z) from the decoder
    loss = E_q[-log p(x | z)] + beta * KL(q(z | x) || p(z))          (seed, section 2)

with one reparameterized sample for the expectation and the analytic Gaussian KL. The defaults
(a 512-wide hidden layer, 32 latents, lr 2e-3) make it a stronger baseline than the seed's
784-256-10, and one that gets there sooner.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vae-mlp")
    >>> model(torch.rand(4, 1, 28, 28)).loss.shape
    torch.Size([])
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import VAEOutput
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.errors import ConfigError
from vaezoo.zoo.tags import PretrainedTag


@dataclass(frozen=True)
class VanillaVAEConfig(VAEConfig):
    encoder: str = "mlp"  # the seed's MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # one wide layer: on Fashion-MNIST it beats (512, 256) per second of training
    latent_dim: int = 32
    beta: float = 1.0  # weight of the KL term; 1 gives the ELBO

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta >= 0:
            raise ConfigError(f"beta={self.beta} must be >= 0")


class VanillaVAE(GaussianLatentVAE):
    """The seed's VAE: MLP encoder and decoder, one Gaussian latent, loss = recon + beta * KL."""

    registry_name = "vae-mlp"
    train_defaults = {"lr": 2e-3}  # measured by benchmarks/throughput.py: reaches the seed's quality soonest
    pretrained_tags = {
        "fmnist": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist", hf_hub_id="vaezoo/vae-mlp.fmnist",
            recipe={"epochs": 50},
        ),
        # Statically binarized Fashion-MNIST (each pixel drawn once, seed 0): the likelihood literature's protocol.
        "fmnist-binarized": PretrainedTag(
            {"input_shape": (1, 28, 28)}, dataset="fashion-mnist-binarized", hf_hub_id="vaezoo/vae-mlp.fmnist-binarized",
            recipe={"epochs": 50},
        ),
        # shapes2d (dSprites-like, 56k training images, 64x64): the baseline of the disentanglement comparison:
        # beta = 1, the same networks and budget as the others. A 64-wide hidden layer keeps the weights near 1
        # MB (the zoo stays under 30 MB); an MLP, as Chen et al. use on dSprites, because conv nets train 20x
        # slower per step on this CPU (measured: 495 vs 21 ms at batch 64).
        "shapes2d": PretrainedTag(
            {"input_shape": (1, 64, 64), "encoder": "mlp", "decoder": "mlp", "hidden_dims": (64,), "latent_dim": 10},
            dataset="shapes2d", hf_hub_id="vaezoo/vae-mlp.shapes2d", recipe={"epochs": 100, "batch_size": 64},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/vae-mlp.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }
    config_class = VanillaVAEConfig
    presets = {
        "tiny": {"hidden_dims": (32,), "latent_dim": 4},
        "seed": {"hidden_dims": (256,), "latent_dim": 10},  # the tutorial's 784-256-10
    }

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        return self.single_latent_elbo(self.prepare_target(x), y, self.kl_weight(self.config.beta))
