"""The foreign formats of the KL autoencoder, read in memory: diffusers' config.json, its older attention names,
and the original latent-diffusion (LDM) single-file keys; safetensors only.

A second module beside ``plugins/autoencoder_kl.py`` so that the model there reads top to bottom without
three key-mapping tables in the middle (together they would pass 700 lines). The model's module names are
diffusers' own, so a current diffusers file loads as it is; this module turns the other two layouts into it.

References (diffusers 0.42.1): ``loaders/single_file_utils.py`` (``convert_ldm_vae_checkpoint``,
``update_vae_resnet_ldm_to_diffusers``, ``update_vae_attentions_ldm_to_diffusers``, ``conv_attn_to_linear``,
``LDM_VAE_KEYS``, ``DIFFUSERS_TO_LDM_MAPPING["vae"]``), ``models/modeling_utils.py``
(``_fix_state_dict_keys_on_load``: query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0) and
``models/autoencoders/autoencoder_kl.py`` (the config's fields and defaults). The LDM layout is
CompVis/latent-diffusion ``ldm/modules/diffusionmodules/model.py`` (Encoder.down[i].block[j],
ResnetBlock.nin_shortcut, AttnBlock's 1x1-conv q/k/v/proj_out, Decoder.up[i] numbered from the finest level).

    >>> ldm_key_to_diffusers("decoder.up.3.block.0.nin_shortcut.weight", num_up_blocks=4)
    'decoder.up_blocks.0.resnets.0.conv_shortcut.weight'
    >>> ldm_key_to_diffusers("encoder.mid.attn_1.proj_out.bias", num_up_blocks=4)
    'encoder.mid_block.attentions.0.to_out.0.bias'
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from vaezoo.errors import CheckpointError
from vaezoo.io.model_dir import PICKLE_SUFFIXES, check_no_pickles
from vaezoo.io.tensors import load_tensors

DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_FILES = (DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS)
LDM_PREFIXES = ("first_stage_model.", "vae.")  # a whole Stable Diffusion checkpoint holds the VAE under one of these
LDM_TRAINING_ONLY = "loss."  # LDM's discriminator, LPIPS net and logvar, saved beside the autoencoder in training

# diffusers' AutoencoderKL.__init__ defaults, for the keys a config.json leaves out.
DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64], "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
    "sample_size": 32, "scaling_factor": 0.18215, "shift_factor": None, "latents_mean": None, "latents_std": None,
    "force_upcast": True, "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}
# Copied to vaezoo's config under the same name; the rest are checked (act_fn, block types, latents_mean/std).
SAME_NAMED = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "scaling_factor",
              "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention")
IGNORED = ("force_upcast",)  # a dtype hint for pipelines: it changes no weight and no output in float32
OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
LDM_ATTENTION_NAMES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


# --------------------------------------------------------------------------- diffusers folders


def read_diffusers_config(folder: Path) -> dict[str, Any]:
    """The vaezoo config fields a diffusers AutoencoderKL config.json sets (its defaults for what it leaves out).

    A setting vaezoo's model does not implement (another activation or block type, per-channel
    latents_mean/std) is a one-line CheckpointError, never silently dropped.
    """
    path = folder / DIFFUSERS_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {DIFFUSERS_CONFIG}; a diffusers folder holds "
                              f"{' and '.join(DIFFUSERS_FILES)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); download it again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds {type(data).__name__}, not a diffusers config object")
    unknown = sorted(key for key in data if not key.startswith("_") and key not in DIFFUSERS_DEFAULTS)
    if unknown:
        raise CheckpointError(f"{path} sets {', '.join(unknown)}, which vaezoo's autoencoder-kl does not implement; "
                              "it reads diffusers' AutoencoderKL configs only")
    config = {**DIFFUSERS_DEFAULTS, **{k: v for k, v in data.items() if not k.startswith("_")}}
    levels = len(config["block_out_channels"])
    problems = [
        f"act_fn={config['act_fn']!r} (only 'silu')" * (config["act_fn"] != "silu"),
        "down_block_types other than DownEncoderBlock2D" * (config["down_block_types"] != ["DownEncoderBlock2D"] * levels),
        "up_block_types other than UpDecoderBlock2D" * (config["up_block_types"] != ["UpDecoderBlock2D"] * levels),
        f"in_channels={config['in_channels']} != out_channels={config['out_channels']}"
        * (config["in_channels"] != config["out_channels"]),
        "latents_mean/latents_std" * (config["latents_mean"] is not None or config["latents_std"] is not None),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"{path} asks for {'; '.join(problems)}, which vaezoo's autoencoder-kl does not implement")
    size = config["sample_size"]
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    fields = {name: config[name] for name in SAME_NAMED}
    fields["block_out_channels"] = tuple(fields["block_out_channels"])
    shift = config["shift_factor"]
    return {**fields, "shift_factor": 0.0 if shift is None else shift, "sample_size": size,
            "input_shape": (config["in_channels"], size, size)}


def read_diffusers_weights(folder: Path) -> dict[str, Tensor]:
    """diffusion_pytorch_model.safetensors of ``folder`` with current attention names; pickles are refused."""
    path = folder / DIFFUSERS_WEIGHTS
    if not path.is_file():
        for pickled in sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES):
            check_no_pickles(pickled)  # raises, saying why vaezoo never unpickles
        raise CheckpointError(f"{folder} has no {DIFFUSERS_WEIGHTS}; a diffusers folder holds {' and '.join(DIFFUSERS_FILES)}")
    return rename_old_attention(load_tensors(path))


def rename_old_attention(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' attention names before 0.14 (query, key, value, proj_attn) as today's (to_q, to_k, to_v,
    to_out.0), as ``_fix_state_dict_keys_on_load`` renames them; 1x1-conv weights become linear ones."""
    renamed = {}
    for key, tensor in tensors.items():
        path, _, leaf = key.rpartition(".")
        parent, _, name = path.rpartition(".")
        if ".attentions." in key and name in OLD_ATTENTION_NAMES:
            key = f"{parent}.{OLD_ATTENTION_NAMES[name]}.{leaf}"
        renamed[key] = _as_linear(key, tensor)
    return renamed


# --------------------------------------------------------------------------- LDM single files

_LDM_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^(encoder|decoder)\.norm_out\."), r"\1.conv_norm_out."),
    (re.compile(r"^encoder\.down\.(\d+)\.block\.(\d+)\."), r"encoder.down_blocks.\1.resnets.\2."),
    (re.compile(r"^encoder\.down\.(\d+)\.downsample\.conv\."), r"encoder.down_blocks.\1.downsamplers.0.conv."),
    (re.compile(r"^(encoder|decoder)\.mid\.block_([12])\."), lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}."),
    (re.compile(r"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\."),
     lambda m: f"{m[1]}.mid_block.attentions.0.{LDM_ATTENTION_NAMES[m[2]]}."),
]


def ldm_key_to_diffusers(key: str, num_up_blocks: int) -> str:
    """One LDM key under diffusers' (and so this model's) name. LDM numbers the decoder's levels from the finest
    (``decoder.up.{i}``, run last to first), diffusers in the order they run: up.{i} is up_blocks.{N - 1 - i}."""
    up = re.match(r"^decoder\.up\.(\d+)\.(block|upsample)\.", key)
    if up:
        level = num_up_blocks - 1 - int(up[1])
        inner = "resnets" if up[2] == "block" else "upsamplers.0"
        key = f"decoder.up_blocks.{level}.{inner}.{key[up.end():]}"
    for pattern, replacement in _LDM_RULES:
        key = pattern.sub(replacement, key)
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


def ldm_to_diffusers(tensors: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """An LDM state dict (a bare VAE file, or a whole Stable Diffusion checkpoint holding it under
    ``first_stage_model.`` or ``vae.``) under diffusers' names, with the 1x1-conv attention weights made linear.
    LDM's training-only ``loss.*`` tensors (discriminator, LPIPS) are dropped; any other key is kept as it is,
    so that strict loading names what does not belong."""
    prefix = next((p for p in LDM_PREFIXES if any(k.startswith(p) for k in tensors)), "")
    vae = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
    vae = {k: t for k, t in vae.items() if not k.startswith(LDM_TRAINING_ONLY)}
    if not any(k.startswith("encoder.down.") for k in vae):
        raise CheckpointError(f"{source} holds no LDM autoencoder keys (encoder.down.0.block.0...., under "
                              f"{' or '.join(LDM_PREFIXES)} or bare); for a diffusers file use from_diffusers")
    num_up = 1 + max(int(k.split(".")[2]) for k in vae if re.match(r"^decoder\.up\.\d+\.", k))
    converted = {ldm_key_to_diffusers(k, num_up): t for k, t in vae.items()}
    return {k: _as_linear(k, t) for k, t in converted.items()}


def config_from_tensors(tensors: dict[str, Tensor]) -> dict[str, Any]:
    """The config fields the weights themselves fix (diffusers' names): channels per level, ResNet blocks per
    level, latent and image channels, quant convs, mid-block attention. Not in them: norm_num_groups (32 in
    every released model), the scaling and shift factors and the image size, which the caller gives."""
    levels = sorted({int(k.split(".")[2]) for k in tensors if k.startswith("encoder.down_blocks.")})
    blocks = {int(k.split(".")[4]) for k in tensors if k.startswith("encoder.down_blocks.0.resnets.")}
    try:
        channels = tuple(int(tensors[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels)
        latent, image = int(tensors["decoder.conv_in.weight"].shape[1]), int(tensors["encoder.conv_in.weight"].shape[1])
    except KeyError as missing:
        raise CheckpointError(f"the autoencoder weights lack {missing}; they are not an AutoencoderKL's") from None
    return {"block_out_channels": channels, "layers_per_block": len(blocks), "latent_channels": latent,
            "image_channels": image, "use_quant_conv": "quant_conv.weight" in tensors,
            "use_post_quant_conv": "post_quant_conv.weight" in tensors,
            "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in tensors}


def _as_linear(key: str, tensor: Tensor) -> Tensor:
    """An attention projection stored as a 1x1 conv, (C, C, 1, 1) or (C, C, 1), as the (C, C) linear weight it is."""
    if ".attentions." in key and key.endswith(".weight") and tensor.dim() > 2 and "group_norm" not in key:
        return tensor.reshape(tensor.shape[0], tensor.shape[1])
    return tensor
