"""The networks of a VAE with one Gaussian latent: a backbone encoder, a Gaussian head and a decoder."""
from __future__ import annotations

from torch import Tensor

from vaezoo.core.backbones import GaussianHead, build_decoder, build_encoder
from vaezoo.core.config import VAEConfig
from vaezoo.core.distributions import DiagonalGaussian
from vaezoo.core.model import VAE


class GaussianLatentVAE(VAE):
    """A VAE base with one Gaussian latent q(z | x) = N(mu(x), diag sigma^2(x)) and the config's backbones.

    ``encoder`` (``config.encoder``: mlp, conv or timm), ``posterior_head`` (mu and log sigma^2) and
    ``decoder`` (``config.decoder``), with ``encode`` and ``decode`` over them: what vae-mlp, beta-vae,
    iwae and vamp-vae share. A variant subclasses it and writes its ``forward`` (its objective).

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,))
    >>> isinstance(model, GaussianLatentVAE), model.encode(torch.rand(2, 64)).mean.shape
    (True, torch.Size([2, 4]))
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.posterior_head = GaussianHead(self.encoder.out_features, config.latent_dim)
        self.decoder = build_decoder(config, config.latent_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        return DiagonalGaussian(*self.posterior_head(self.encoder(x)))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)
