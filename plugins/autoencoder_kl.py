"""The KL-regularised autoencoder of latent diffusion: Rombach, Blattmann, Lorenz, Esser and Ommer 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752 (section 3, appendix G),
the "KL-f8" first stage that Stable Diffusion 1/2, SDXL, SD3 and FLUX.1 encode images with, equal to
diffusers' AutoencoderKL output for output (tests/test_autoencoder_kl.py).

References read (diffusers 0.42.1): ``models/autoencoders/autoencoder_kl.py`` (AutoencoderKL: quant convs,
slicing, ``_tiled_encode``, ``tiled_decode``, ``blend_v``/``blend_h``), ``models/autoencoders/vae.py`` (Encoder,
Decoder, DiagonalGaussianDistribution), ``models/unets/unet_2d_blocks.py`` (DownEncoderBlock2D,
UpDecoderBlock2D, UNetMidBlock2D), ``models/resnet.py`` (ResnetBlock2D), ``models/attention_processor.py``
(Attention with ``_from_deprecated_attn_block``, AttnProcessor2_0), ``models/downsampling.py`` (Downsample2D:
padding 0 means F.pad (0, 1, 0, 1) then a stride-2 3x3 conv), ``models/upsampling.py`` (Upsample2D); the
formats are read by ``plugins/autoencoder_kl_convert.py``. With N = len(block_out_channels), f = 2^(N-1),
images x (B, C, H, W) seen as 2x - 1 in LDM's [-1, 1]:

    encoder: conv3x3 -> N levels of layers_per_block ResNet blocks, each level but the last ending in
             pad (0, 1, 0, 1) + stride-2 conv3x3 -> mid (ResNet, attention, ResNet) -> GN -> SiLU -> conv3x3
    quant_conv (1x1) -> (mu, log sigma^2), log sigma^2 clamped to [-30, 20]    each (B, latent_channels, H/f, W/f)
    decoder: post_quant_conv (1x1) -> conv3x3 -> mid -> N levels of layers_per_block + 1 ResNet blocks, each
             but the last ending in nearest x2 + conv3x3 -> GN -> SiLU -> conv3x3
    ResNet:  h = conv(SiLU(GN(x))); h = conv(SiLU(GN(h))); out = shortcut(x) + h   (1x1 shortcut if C changes)
    attention (one head over the H W positions): out = x + W_o softmax(Q K^T / sqrt(C)) V,  Q, K, V from GN(x)
    GN = GroupNorm(norm_num_groups, eps 1e-6)

The objective is LDM's (appendix G; its ``LPIPSWithDiscriminator`` without the LPIPS and adversarial terms,
which are out of scope here, and with its learned log-variance at 0):

    q(z | x) = N(mu(x), diag sigma^2(x)),  p(z) = N(0, I) over the latent grid;  z ~ q(z | x) once
    loss = rec(x, x_hat(z)) + beta * KL(q(z | x) || p(z)),  beta = 1e-6 (LDM's kl_weight)
    rec = "l1": sum |x - x_hat| (LDM's) | "l2": sum (x - x_hat)^2, both over pixels in [-1, 1] | "nll": -log p(x | z)

What forward reports as ``neg_elbo`` is -log p(x | z) + KL, a true ELBO of the config's likelihood: by default
(and for every released weight) a Gaussian over [0, 1] pixels, p(x | z) = N(x_hat, diag s_c^2), x_hat = (y + 1) / 2
of the decoder's output y, one learned scale per channel (a density, so its nats are not bits of 8-bit images).
With "l1"/"l2" the scale is fitted beside the autoencoder by -log p(x | z) at the detached x_hat, which moves no
other weight. The weights of diffusers and LDM hold no scale: it starts at s = 1, so a freshly loaded tag's -ELBO
is loose until the scale is fitted on data. Trained from scratch, the decoder may instead emit Bernoulli logits
or a logistic mixture's parameters (likelihood="bernoulli" / "logistic_mixture"; LDM has neither).

``latents(x)`` gives a diffusion model's latents (z - shift_factor) * scaling_factor and ``from_latents`` undoes
them before decoding. Any image size is taken: sides that f does not divide are padded by repeating the last
row and column, and decoding the config's latent grid crops back to its size. ``enable_tiling()`` bounds memory
by coding overlapping tiles blended linearly (diffusers' tiling), and ``enable_slicing()`` by running the batch
in chunks. A vector input (D,) is a 1x1 image with D channels, without the down- and upsamplers a 1x1 map has
no use for. Pretrained tags read diffusers folders from the Hub (``from_foreign_folder``); ``from_diffusers``
and ``from_single_file`` (LDM's keys) read local files.

    >>> import vaezoo, torch
    >>> model = vaezoo.create_model("autoencoder-kl", preset="tiny")
    >>> model.encode(torch.rand(2, 3, 32, 32)).mean.shape
    torch.Size([2, 4, 16, 16])
    >>> model = vaezoo.create_model("autoencoder-kl.sd-ft-mse", pretrained=True)  # doctest: +SKIP
    >>> images = model.from_latents(model.latents(torch.rand(1, 3, 256, 256)))  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.core.backbones import in_weights_dtype
from vaezoo.core.config import VAEConfig, replace_config
from vaezoo.core.contract import Capabilities, VAEOutput
from vaezoo.core.distributions import DiagonalGaussian
from vaezoo.core.likelihoods import param_shape
from vaezoo.core.model import VAE
from vaezoo.errors import CheckpointError, ConfigError, InputError
from vaezoo.io.model_dir import check_no_pickles
from vaezoo.io.tensors import load_state_dict_strict, load_tensors
from vaezoo.zoo.builder import build_model
from vaezoo.zoo.tags import PretrainedTag
from vaezoo_plugins.autoencoder_kl_convert import (
    DIFFUSERS_FILES,
    config_from_tensors,
    ldm_to_diffusers,
    read_diffusers_config,
    read_diffusers_weights,
)

GROUP_NORM_EPS = 1e-6
RECONSTRUCTION_LOSSES = ("l1", "l2", "nll")


@dataclass(frozen=True)
class AutoencoderKLConfig(VAEConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W); C is diffusers' in_channels (and out_channels)
    likelihood: str = "gaussian"  # p(x | z) of the reported -ELBO; "gaussian" (over [0, 1] pixels) for foreign weights
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # channels per level, finest first; f = 2^(levels - 1)
    layers_per_block: int = 1  # ResNet blocks per encoder level (the decoder has one more per level)
    latent_channels: int = 4  # channels of z (B, latent_channels, H/f, W/f)
    norm_num_groups: int = 32  # GroupNorm groups (eps 1e-6); must divide every level's channels
    mid_block_add_attention: bool = True  # the single-head self-attention between the mid-block's ResNets
    use_quant_conv: bool = True  # the 1x1 conv on the moments (Stable Diffusion 1/2, SDXL); SD3 and FLUX have none
    use_post_quant_conv: bool = True  # the 1x1 conv on z before the decoder
    scaling_factor: float = 0.18215  # latents(x) = (z - shift_factor) * scaling_factor (LDM section 4.3.2)
    shift_factor: float = 0.0  # diffusers' None; SD3 and FLUX shift before scaling
    sample_size: int = 256  # the training resolution in pixels: the tile size once tiling is on
    tile_overlap_factor: float = 0.25  # share of a tile that overlaps the next and is blended (diffusers' 0.25)
    reconstruction_loss: str = "l1"  # the training loss's reconstruction term: "l1" (LDM's) | "l2" | "nll"
    beta: float = 1e-6  # weight of the KL in the training loss (LDM's kl_weight); 1 with "nll" gives the ELBO
    latent_dim: int = 4  # derived: latent_channels, the channel size of the latent grid
    derived_fields: ClassVar[dict[str, str]] = {"latent_dim": "latent_channels"}
    unused_fields: ClassVar[dict[str, str]] = {
        "encoder": "diffusers' Encoder", "decoder": "diffusers' Decoder",
        "hidden_dims": "block_out_channels and layers_per_block", "conv_channels": "block_out_channels",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("layers_per_block", "latent_channels", "norm_num_groups", "sample_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        channels = self.block_out_channels
        if not (isinstance(channels, tuple) and channels and all(isinstance(c, int) and c > 0 for c in channels)):
            raise ConfigError(f"block_out_channels={channels!r} must be a non-empty tuple of positive integers")
        if any(c % self.norm_num_groups for c in channels):
            raise ConfigError(f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels {channels}")
        if self.reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigError(f"reconstruction_loss={self.reconstruction_loss!r} is unknown; use one of "
                              f"{', '.join(RECONSTRUCTION_LOSSES)}")
        if not self.beta >= 0 or not self.scaling_factor > 0:
            raise ConfigError(f"beta={self.beta} must be >= 0 and scaling_factor={self.scaling_factor} > 0")
        if not 0 <= self.tile_overlap_factor < 1:
            raise ConfigError(f"tile_overlap_factor={self.tile_overlap_factor} must be in [0, 1) (diffusers uses 0.25)")

    @property
    def downsampling(self) -> int:
        """f: how many pixels of a side one latent position covers."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the networks see: the input itself, or a vector (D,) as a 1x1 image with D channels."""
        return tuple(self.input_shape) if self.is_image else (self.input_shape[0], 1, 1)  # type: ignore[return-value]


# --------------------------------------------------------------------------- building blocks (diffusers' names)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)


class ResnetBlock(nn.Module):
    """diffusers' ResnetBlock2D without a time embedding (LDM's ResnetBlock); dropout 0 as in every release."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, h, w) -> (B, C_out, h, w)
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SelfAttention(nn.Module):
    """One head over the h w positions, from a group-normalised input, added back to it (LDM's AttnBlock)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = group_norm(channels, groups)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:  # (B, C, h, w) -> (B, C, h, w)
        batch, channels, height, width = x.shape
        tokens = self.group_norm(x).view(batch, channels, height * width).transpose(1, 2)  # (B, hw, C)
        q, k, v = (project(tokens).unsqueeze(1) for project in (self.to_q, self.to_k, self.to_v))  # (B, 1, hw, C)
        attended = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # softmax(Q K^T / sqrt(C)) V
        return self.to_out[0](attended).transpose(1, 2).reshape(batch, channels, height, width) + x


class Downsample(nn.Module):
    """Zero padding on the right and bottom only, then a stride-2 3x3 conv: h -> floor(h / 2) (LDM's Downsample)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def resnet_stack(in_channels: int, out_channels: int, blocks: int, groups: int) -> nn.ModuleList:
    return nn.ModuleList(ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(blocks))


class DownEncoderBlock(nn.Module):
    """diffusers' DownEncoderBlock2D: ResNet blocks, then (but at the coarsest level) a Downsample."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, groups: int, downsample: bool) -> None:
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, blocks, groups)
        self.downsamplers = nn.ModuleList([Downsample(out_channels)] if downsample else [])

    def forward(self, x: Tensor) -> Tensor:
        for layer in (*self.resnets, *self.downsamplers):
            x = layer(x)
        return x


class UpDecoderBlock(nn.Module):
    """diffusers' UpDecoderBlock2D: ResNet blocks, then (but at the finest level) an Upsample."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, blocks, groups)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(self, x: Tensor) -> Tensor:
        for layer in (*self.resnets, *self.upsamplers):
            x = layer(x)
        return x


class MidBlock(nn.Module):
    """diffusers' UNetMidBlock2D: ResNet, optional self-attention, ResNet."""

    def __init__(self, channels: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])
        self.attentions = nn.ModuleList([SelfAttention(channels, groups)] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """x (B, C, H, W) in [-1, 1] -> (B, 2 latent_channels, H/f, W/f), diffusers' Encoder with double_z."""

    def __init__(self, config: AutoencoderKLConfig, channels: int, resample: bool) -> None:
        super().__init__()
        widths, groups, last = config.block_out_channels, config.norm_num_groups, len(config.block_out_channels) - 1
        self.conv_in = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock(widths[max(i - 1, 0)], widths[i], config.layers_per_block, groups, resample and i < last)
            for i in range(len(widths)))
        self.mid_block = MidBlock(widths[-1], groups, config.mid_block_add_attention)
        self.conv_norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(nn.Module):
    """z (B, latent_channels, h, w) -> (B, C', f h, f w), diffusers' Decoder (coarsest level first): C' = C pixels in
    about [-1, 1] (or the likelihood's parameters: Bernoulli logits, a logistic mixture's K (1 + 2C + C(C-1)/2))."""

    def __init__(self, config: AutoencoderKLConfig, channels: int, resample: bool) -> None:
        super().__init__()
        widths, groups = tuple(reversed(config.block_out_channels)), config.norm_num_groups
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], groups, config.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock(widths[max(i - 1, 0)], widths[i], config.layers_per_block + 1, groups,
                           resample and i < len(widths) - 1) for i in range(len(widths)))
        self.conv_norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


@dataclass(frozen=True)
class Tiling:
    """Tile sizes of diffusers' tiled coding: ``sample`` pixels <-> ``latent`` positions, ``overlap`` shared."""

    sample: int
    latent: int
    overlap: float


def blend_tiles(x: Tensor, code: Callable[[Tensor], Tensor], tile_in: int, tile_out: int, overlap: float) -> Tensor:
    """``code`` (the encoder or the decoder) on overlapping tiles of x, blended linearly where they meet.

    diffusers' ``_tiled_encode`` / ``tiled_decode``: tiles of ``tile_in`` start every int(tile_in (1 - overlap));
    each coded tile (``tile_out`` a side) is blended into the (blended) one above and the one to its left over
    int(tile_out overlap) rows and columns, weights y / extent for the new tile, and the first
    tile_out - extent of each are kept.
    """
    stride, extent = int(tile_in * (1 - overlap)), int(tile_out * overlap)
    keep = tile_out - extent
    rows: list[list[Tensor]] = []
    for top in range(0, x.shape[2], stride):
        row: list[Tensor] = []
        for left in range(0, x.shape[3], stride):
            tile = code(x[:, :, top:top + tile_in, left:left + tile_in])
            if rows:
                tile = _blend(rows[-1][len(row)], tile, extent, dim=2)
            if row:
                tile = _blend(row[-1], tile, extent, dim=3)
            row.append(tile)
        rows.append(row)
    return torch.cat([torch.cat([tile[:, :, :keep, :keep] for tile in row], dim=3) for row in rows], dim=2)


def _blend(before: Tensor, tile: Tensor, extent: int, dim: int) -> Tensor:
    """The first rows (dim 2) or columns (dim 3) of ``tile`` faded in from the last ones of ``before``."""
    extent = min(before.shape[dim], tile.shape[dim], extent)
    if extent == 0:
        return tile
    weight = torch.arange(extent, dtype=tile.dtype, device=tile.device) / extent  # (extent,), 0 -> 1 - 1/extent
    weight = weight.view(-1, 1) if dim == 2 else weight
    mixed = before.narrow(dim, before.shape[dim] - extent, extent) * (1 - weight) + tile.narrow(dim, 0, extent) * weight
    return torch.cat([mixed, tile.narrow(dim, extent, tile.shape[dim] - extent)], dim=dim)


# --------------------------------------------------------------------------- the model

KL_F8 = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32}
# The weights-defining fields a tag's Hub folder must agree on (norm_num_groups changes no shape, so only this sees it).
ARCHITECTURE_FIELDS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                       "mid_block_add_attention", "use_quant_conv", "use_post_quant_conv")


def diffusers_tag(repo: str, subfolder: str, dataset: str, description: str, size: int, **config: Any) -> PretrainedTag:
    return PretrainedTag({**KL_F8, "input_shape": (3, size, size), "sample_size": size, **config}, dataset=dataset,
                         hf_hub_id=repo, hub_subfolder=subfolder, hub_files=DIFFUSERS_FILES, description=description)


class AutoencoderKL(VAE):
    """LDM's KL autoencoder over a latent grid; loss = L1 (or L2, or -log p) + beta * KL, reported as a Gaussian -ELBO."""

    config_class = AutoencoderKLConfig
    registry_name = "autoencoder-kl"
    # A Gaussian posterior with an exact density and a Gaussian decoder: importance sampling, temperatures and
    # Metropolis-within-Gibbs hold. The latent is a grid (B, latent_channels, h, w), not one vector, so no GMM sampler.
    capabilities = Capabilities(latent_sampler=False, any_image_size=True)
    presets = {
        # Fast tests, 32x32 RGB (check_model sets 8x8 digits): trained on the ELBO itself so that its -ELBO falls.
        "tiny": {"input_shape": (3, 32, 32), "block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8,
                 "latent_channels": 4, "sample_size": 32, "reconstruction_loss": "nll", "beta": 1.0},
        "kl-f8": {**KL_F8, "input_shape": (3, 256, 256)},  # LDM's kl-f8 (models/first_stage_models/kl-f8), 84M parameters
    }
    pretrained_tags = {
        "sd-ft-mse": diffusers_tag(
            "stabilityai/sd-vae-ft-mse", "", "laion-aesthetics+laion-humans", size=256, scaling_factor=0.18215,
            description="Stable Diffusion 1/2's kl-f8 decoder fine-tuned on MSE + 0.1 LPIPS (Stability AI)"),
        "sdxl": diffusers_tag("stabilityai/sdxl-vae", "", "sdxl (undisclosed)", size=1024, scaling_factor=0.13025,
                              description="SDXL's kl-f8, retrained with a larger batch and EMA (Stability AI)"),
        "sd3": diffusers_tag(
            "stabilityai/stable-diffusion-3-medium-diffusers", "vae", "sd3 (undisclosed)", size=1024, latent_channels=16,
            scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
            description="SD3's 16-channel f8 autoencoder; the repo is gated: accept its licence on the Hub and log in"),
        "flux": diffusers_tag(
            "black-forest-labs/FLUX.1-dev", "vae", "flux (undisclosed)", size=1024, latent_channels=16,
            scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
            description="FLUX.1 [dev]'s 16-channel f8 autoencoder; the repo is gated: accept its non-commercial licence "
                        "on the Hub and log in (hf auth login) first"),
    }

    def __init__(self, config: AutoencoderKLConfig) -> None:
        super().__init__(config)
        channels, latent = config.image_shape[0], config.latent_channels
        self.encoder = Encoder(config, channels, resample=config.is_image)
        self.decoder = Decoder(config, param_shape(config)[0], resample=config.is_image)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if config.use_post_quant_conv else None
        self.tiling: Tiling | None = None  # set by enable_tiling
        self.slice_size: int | None = None  # set by enable_slicing

    # --- memory ----------------------------------------------------------------------------------
    def enable_tiling(self, tile_size: int | None = None, overlap: float | None = None) -> None:
        """Encode images with a side over ``tile_size`` pixels (default ``config.sample_size``), and decode latents
        with a side over tile_size / f, in overlapping tiles blended linearly: memory bounded by one tile, at the
        cost of small seams (diffusers' ``enable_tiling``; tiling changes the outputs a little).

        >>> model.enable_tiling(512)  # doctest: +SKIP
        """
        size = self.config.sample_size if tile_size is None else tile_size
        share = self.config.tile_overlap_factor if overlap is None else overlap
        latent = int(size / self.config.downsampling) if isinstance(size, int) and not isinstance(size, bool) else 0
        if latent < 1 or not (isinstance(share, (int, float)) and 0 <= share < 1) or int(latent * (1 - share)) < 1:
            raise InputError(f"tiles of {size!r} pixels overlapping by {share!r} do not fit {self.model_name}: use a "
                             f"tile_size of at least {2 * self.config.downsampling} and an overlap in [0, 1)")
        self.tiling = Tiling(size, latent, float(share))

    def disable_tiling(self) -> None:
        self.tiling = None

    def enable_slicing(self, slice_size: int = 1) -> None:
        """Encode and decode ``slice_size`` examples at a time (diffusers slices one by one)."""
        if isinstance(slice_size, bool) or not isinstance(slice_size, int) or slice_size < 1:
            raise InputError(f"slice_size={slice_size!r} must be a positive integer (1 codes one example at a time)")
        self.slice_size = slice_size

    def disable_slicing(self) -> None:
        self.slice_size = None

    def _in_slices(self, x: Tensor, code: Callable[[Tensor], Tensor], decoding: bool) -> Tensor:
        """``code`` (the encoder's or the decoder's pass) over the batch in slices, each in tiles when tiling is on
        and a side of its input exceeds a tile (diffusers' ``_encode`` / ``_decode`` conditions)."""
        tiling, outputs = self.tiling, []
        for part in x.split(self.slice_size) if self.slice_size else (x,):
            if tiling is None:
                outputs.append(code(part))
                continue
            tile_in, tile_out = (tiling.latent, tiling.sample) if decoding else (tiling.sample, tiling.latent)
            tiled = max(part.shape[-2:]) > tile_in
            outputs.append(blend_tiles(part, code, tile_in, tile_out, tiling.overlap) if tiled else code(part))
        return torch.cat(outputs)

    # --- the networks ------------------------------------------------------------------------------
    def _moments(self, pixels: Tensor) -> Tensor:  # (B, C, H, W) in [-1, 1] -> (B, 2 latent_channels, H/f, W/f)
        moments = self.encoder(pixels)
        return moments if self.quant_conv is None else self.quant_conv(moments)

    def _pixels(self, z: Tensor) -> Tensor:  # (B, latent_channels, h, w) -> (B, C, f h, f w), LDM's [-1, 1]
        return self.decoder(z if self.post_quant_conv is None else self.post_quant_conv(z))

    def _as_image(self, x: Tensor) -> Tensor:
        """x as (B, C, H', W') with H', W' the multiples of f at or above H, W: the last row and column repeated
        (nothing changes where f divides the sides, as in every released model); a vector config's (B, D) as (B, D, 1, 1)."""
        channels = self.config.image_shape[0]
        if not self.config.is_image and x.dim() == 2:
            x = x.reshape(x.shape[0], channels, 1, 1)
        if x.dim() != 4 or x.shape[1] != channels or not x.is_floating_point():
            raise InputError(f"x of shape {tuple(x.shape)} and dtype {x.dtype} is not a float batch (B, {channels}, H, W)")
        f = self.config.downsampling if self.config.is_image else 1
        pad_h, pad_w = -x.shape[2] % f, -x.shape[3] % f
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        return in_weights_dtype(x, self.encoder)

    # --- the contract ------------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z | x) for images x in [0, 1] of any size: mean and log-variance (B, latent_channels, ceil(H/f), ceil(W/f))."""
        moments = self._in_slices(self._as_image(x) * 2 - 1, self._moments, decoding=False)
        mean, logvar = moments.chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)  # log-variance clamped to [-30, 20], as diffusers' distribution does

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """p(x | z)'s parameters: the Gaussian's means (y + 1) / 2 in [0, 1], unclamped, of the decoder's output y
        (Bernoulli logits or the mixture's parameters: y itself). (B, *param_shape(config)) for the config's latent
        grid (cropped to its H, W where f does not divide them), else (B, C', f h, f w)."""
        if not (isinstance(z, Tensor) and z.dim() == 4 and z.shape[1] == self.config.latent_channels):
            shown = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise InputError(f"decode takes latents (B, {self.config.latent_channels}, h, w), got {shown}")
        output = self._in_slices(in_weights_dtype(z, self.decoder), self._pixels, decoding=True)
        params = (output + 1) / 2 if self.config.likelihood == "gaussian" else output
        if not self.config.is_image:
            return params.reshape(z.shape[0], *param_shape(self.config))
        if tuple(z.shape[2:]) == self.latent_shape()[1:]:
            params = params[:, :, : self.config.input_shape[1], : self.config.input_shape[2]]
        return params

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y, any_image_size=True)  # fully convolutional: the -ELBO of an image of any size
        x = self.prepare_target(x)
        posterior = self.encode(x)
        params = self.decode(posterior.rsample())  # (B, *param_shape(config)): x_hat for the Gaussian
        if self.config.is_image:  # padded sides (f does not divide them) are cropped, as reconstruct crops them
            params = params[..., : x.shape[-2], : x.shape[-1]]
        nll = -self.likelihood.log_prob(params, x)  # (B,) -log p(x | z)
        kl = posterior.kl()  # (B,) analytic, over the whole latent grid
        objective = self.config.reconstruction_loss
        if objective == "nll":
            rec, terms = nll, {}
        else:  # LDM's rec_loss on [-1, 1] pixels (twice the [0, 1] error), summed per example
            error = (self.likelihood.mean(params) - x) * 2
            rec = (error.abs() if objective == "l1" else error**2).flatten(1).sum(1)
            terms = {objective: rec.mean()}
        loss = (rec + self.kl_weight(self.config.beta) * kl).mean()
        if objective != "nll" and any(True for _ in self.likelihood.parameters()):
            loss = loss - self.likelihood.log_prob(params.detach(), x).mean()  # fits the scale s alone (docstring)
        return VAEOutput(loss=loss, terms=terms, recon=nll.mean(), kl=kl.mean(), neg_elbo=nll + kl, params=params)

    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, ceil(H/f), ceil(W/f)) of the config's input size: what ``decode`` takes per example."""
        _, height, width = self.config.image_shape
        f = self.config.downsampling if self.config.is_image else 1
        return (self.config.latent_channels, -(-height // f), -(-width // f))

    def prior_sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """z ~ N(0, T^2 I) over the config's latent grid, (n, *latent_shape())."""
        return temperature * torch.randn(n, *self.latent_shape(), device=self.device, dtype=self.dtype)

    # --- latent diffusion ------------------------------------------------------------------------
    def latents(self, x: Tensor, sample: bool = False) -> Tensor:
        """The latents a diffusion model works in: (z - shift_factor) * scaling_factor, with z the posterior
        mean, or a draw from q(z | x) with ``sample=True`` (as diffusers' pipelines encode images)."""
        posterior = self.encode(x)
        z = posterior.rsample() if sample else posterior.mean
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def from_latents(self, latents: Tensor) -> Tensor:
        """Images in [0, 1] (unclamped) from a diffusion model's latents: decode(latents / scaling_factor + shift_factor)."""
        return self.decode(latents / self.config.scaling_factor + self.config.shift_factor)

    # --- foreign weights ---------------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, folder: str | Path, **overrides: Any) -> AutoencoderKL:
        """A diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors, today's or the older
        attention names), its config read from config.json and ``overrides``; loaded strictly, in eval mode.

        >>> model = AutoencoderKL.from_diffusers("sd-vae-ft-mse", input_shape=(3, 512, 512))  # doctest: +SKIP
        """
        folder = _existing(folder, folder=True)
        fields = {**read_diffusers_config(folder), **overrides}
        config = replace_config(cls.config_class(), source=f"{folder} and the overrides", **fields)
        return cls._with_weights(config, read_diffusers_weights(folder), str(folder))

    @classmethod
    def from_single_file(cls, path: str | Path, **overrides: Any) -> AutoencoderKL:
        """An original LDM checkpoint in .safetensors (a bare VAE, or a whole Stable Diffusion file), converted to
        this model's names in memory. The weights fix the architecture; the scaling and shift factors, the image
        size (sample_size, 256) and norm_num_groups (32) come from the defaults and ``overrides``. Pickles (.ckpt,
        .bin, .pt) are refused.

        >>> model = AutoencoderKL.from_single_file("sdxl_vae.safetensors", scaling_factor=0.13025)  # doctest: +SKIP
        """
        path = _existing(path, folder=False)
        check_no_pickles(path)
        tensors = ldm_to_diffusers(load_tensors(path), str(path))
        found = config_from_tensors(tensors)
        channels, size = found.pop("image_channels"), overrides.get("sample_size", cls.config_class.sample_size)
        fields = {**found, "input_shape": (channels, size, size), **overrides}
        config = replace_config(cls.config_class(), source=f"{path} and the overrides", **fields)
        return cls._with_weights(config, tensors, str(path))

    @classmethod
    def from_foreign_folder(cls, folder: Path, config: VAEConfig) -> AutoencoderKL:
        """A pretrained tag's diffusers folder (the framework's hook): its config.json must agree with the tag's
        architecture, and the weights load strictly into ``config`` (the tag's, with the caller's overrides)."""
        found = read_diffusers_config(folder)
        differ = [f"{name}={found[name]!r} (the tag says {getattr(config, name)!r})"
                  for name in ARCHITECTURE_FIELDS if found[name] != getattr(config, name)]
        if found["input_shape"][0] != config.input_shape[0]:
            differ.append(f"in_channels={found['input_shape'][0]} (the tag says {config.input_shape[0]})")
        if differ:
            raise CheckpointError(f"{folder} does not hold the tag's architecture: {', '.join(differ)}; fix the tag")
        return cls._with_weights(config, read_diffusers_weights(folder), str(folder))

    @classmethod
    def _with_weights(cls, config: AutoencoderKLConfig, tensors: dict[str, Tensor], source: str) -> AutoencoderKL:
        """The model with ``tensors`` loaded strictly; p(x | z)'s scale, which no foreign format holds, keeps its start."""
        if config.likelihood != "gaussian":
            raise ConfigError(f"likelihood={config.likelihood!r}: the weights of {source} decode pixel values in [-1, 1], "
                              "which only likelihood='gaussian' reads as p(x | z)'s means; drop the override")
        model = build_model(cls, config, cls.registry_name or cls.__name__)
        own = {name: value for name, value in model.state_dict().items() if name.startswith("likelihood.")}
        load_state_dict_strict(model, {**tensors, **own}, source)
        return model.eval()


def _existing(path: str | Path, folder: bool) -> Path:
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        raise CheckpointError(f"{path} is not {'a folder' if folder else 'a file'}; give the path of an existing "
                              f"{'diffusers folder' if folder else '.safetensors checkpoint'}")
    return path

