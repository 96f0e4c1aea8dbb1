"""Sizes known before any memory is allocated: a variant built on the meta device, its size, its weights' shapes.

A config with a layer of 10**12 weights, or a model folder whose config.json promises shapes its
model.safetensors does not hold, is refused here in milliseconds, instead of after minutes of
allocating and initialising the real model.

>>> from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig
>>> check_model_size(VanillaVAE, VanillaVAEConfig(hidden_dims=(10**7,)), "vae-mlp")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
vaezoo.errors.ConfigError: 'vae-mlp' with this config would hold 16,660,000,848 parameters and buffers ...
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vaezoo.errors import ConfigError
from vaezoo.io.tensors import check_shapes_fit, header_shapes

MAX_PARAMETERS = 2**31  # parameters and buffers of one model: 8 GiB in float32, far past any variant of the zoo
SHAPE_CHANGING = {"resize_", "resize_as_", "set_", "as_strided_", "squeeze_", "unsqueeze_", "t_", "transpose_",
                  "swapdims_", "swapaxes_"}  # in-place methods that change a shape: these still run


class _ShapesOnly(TorchFunctionMode):
    """Skip in-place operations on meta tensors (initialisers: ``normal_``, ``uniform_``, ``zero_``, ...).

    They cannot change a shape, and on the meta device some of them (``normal_``, so every nn.Embedding)
    import torch's compiler stack on first use: seconds, where the rest of a meta build takes milliseconds.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # nn.init passes tensor=...
        if (name.endswith("_") and not name.startswith("_") and name not in SHAPE_CHANGING
                and isinstance(target, Tensor) and target.is_meta):
            return target
        return func(*args, **kwargs)


def build_on_meta(model_class: type, config: Any) -> nn.Module | None:
    """``model_class(config)`` on the meta device: every shape, no memory and no initialisation.

    None where the variant cannot be built there (a constructor that reads a tensor's value, as some
    timm models do): the real build then runs as before and reports any real problem.
    """
    try:
        with torch.device("meta"), _ShapesOnly():
            return model_class(config)
    except Exception:  # noqa: BLE001 - whatever it is, the real build raises it again with its own message
        return None


def check_model_size(model_class: type, config: Any, name: str) -> None:
    """ConfigError, before anything is allocated, when ``model_class(config)`` would hold more than
    :data:`MAX_PARAMETERS` values, naming the count, the largest tensor and the fix."""
    model = build_on_meta(model_class, config)
    if model is None:
        return
    tensors = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
    count = sum(t.numel() for t in tensors.values())
    if count <= MAX_PARAMETERS:
        return
    largest = max(tensors, key=lambda key: tensors[key].numel())
    raise ConfigError(
        f"{name!r} with this config would hold {count:,} parameters and buffers ({count * 4 / 2**30:,.1f} GiB in "
        f"float32; the largest, {largest}, has shape {tuple(tensors[largest].shape)}), over vaezoo's limit of "
        f"2**31 = {MAX_PARAMETERS:,}: it needs more memory than there is on most machines; use smaller sizes "
        "(hidden_dims, latent_dim, conv_channels, ...)"
    )


def check_weights_fit(model_class: type, config: Any, weights: Path) -> None:
    """CheckpointError when the tensors in ``weights`` (read from its header only) do not have the shapes that
    ``model_class(config)`` has: checked on the meta device, before the real model is built and initialised."""
    given = header_shapes(weights)
    model = build_on_meta(model_class, config) if given is not None else None
    if model is None:  # an unreadable file, or a variant that cannot be built on meta: the strict load says it
        return
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    check_shapes_fit(expected, given, str(weights), type(model).__name__)

