"""Config dataclasses shared by every variant, and their JSON round trip.

A variant's config is a frozen dataclass deriving from :class:`VAEConfig`. It becomes
``config.json`` next to the weights, so every field must be JSON-serializable
(numbers, strings, bools, None, and tuples of those).

>>> from vaezoo.core.config import VAEConfig, config_from_dict, config_to_dict
>>> cfg = VAEConfig(latent_dim=8)
>>> config_from_dict(VAEConfig, config_to_dict(cfg)) == cfg
True
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from vaezoo.core.samplers import LATENT_SAMPLERS
from vaezoo.core.validation import check_count
from vaezoo.data.limits import MAX_CLASSES
from vaezoo.errors import ConfigError, did_you_mean

LIKELIHOODS = ("bernoulli", "gaussian", "logistic_mixture")
MAX_MIXTURE_COMPONENTS = 256  # as many as a pixel channel has values

ConfigT = TypeVar("ConfigT", bound="VAEConfig")


@dataclass(frozen=True)
class VAEConfig:
    """Fields every variant shares. Variants subclass it and add their own."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) for images, (D,) for vectors
    latent_dim: int = 16  # size of z (of the top layer for hierarchical models)
    encoder: str = "auto"  # "auto" | "mlp" | "conv" | "timm:<model name>"; auto = conv for images, mlp for vectors
    decoder: str = "auto"  # "auto" | "mlp" | "conv"; auto = conv for images, mlp for vectors
    hidden_dims: tuple[int, ...] = (512, 256)  # MLP widths, input side first (the decoder mirrors them)
    conv_channels: tuple[int, ...] = (32, 64)  # conv widths, one stride-2 stage each
    likelihood: str = "bernoulli"  # "bernoulli" (BCE on [0, 1] data) | "gaussian" (MSE-like) | "logistic_mixture" (8-bit images)
    gaussian_scale: float | None = None  # fixed std of the Gaussian likelihood; None = learned per channel
    mixture_components: int = 10  # K of likelihood="logistic_mixture" (discretized logistics, PixelCNN++ uses 10)
    dynamic_binarization: bool = False  # resample x ~ Bernoulli(x) at every training step (Bernoulli only)
    num_classes: int = 0  # number of labels in the data (0 = unlabelled); conditional variants need it
    kl_warmup_steps: int = 0  # linear KL weight warm-up from 0 to beta (Bowman et al. 2016); 0 = off
    # An ex-post latent sampler fitted after training (Ghosh et al. 2020, section 4; vaezoo.apps.fit_sampler):
    # "" = none, "gmm" = a Gaussian mixture of sampler_components components, in model.safetensors.
    latent_sampler: str = ""
    sampler_components: int = 0  # K of the fitted mixture; 0 without a sampler
    # Inherited fields that a variant's own networks never read, each with what sets that part there (e.g.
    # autoencoder-kl: {"hidden_dims": "block_out_channels and layers_per_block"}): a value other than the default
    # is refused rather than silently ignored. A ClassVar, so not a field and not in config.json.
    unused_fields: ClassVar[dict[str, str]] = {}
    # Fields computed from another field of the variant (autoencoder-kl: {"latent_dim": "latent_channels"}): set from
    # it here; a given value other than the default or that value is refused rather than silently replaced.
    derived_fields: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        check_finite_floats(self)
        _check_positive_ints("input_shape", self.input_shape)
        if len(self.input_shape) not in (1, 3):
            raise ConfigError(
                f"input_shape={tuple(self.input_shape)} has {len(self.input_shape)} dims; "
                "use (C, H, W) for images or (D,) for vectors"
            )
        _check_positive_int("latent_dim", self.latent_dim)
        _check_positive_ints("hidden_dims", self.hidden_dims, allow_empty=True)
        _check_positive_ints("conv_channels", self.conv_channels)
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"likelihood={self.likelihood!r} is unknown; use one of {', '.join(LIKELIHOODS)}"
                + did_you_mean(str(self.likelihood), LIKELIHOODS)
            )
        _check_mixture(self)
        _check_latent_sampler(self)
        _check_unused_fields(self)
        for name, source in self.derived_fields.items():
            _set_derived_field(self, name, source)
        if self.gaussian_scale is not None and not self.gaussian_scale > 0:
            raise ConfigError(f"gaussian_scale={self.gaussian_scale} must be > 0, or None for a learned scale")
        if self.dynamic_binarization and self.likelihood != "bernoulli":
            raise ConfigError("dynamic_binarization=True needs likelihood='bernoulli'")
        if not 0 <= self.num_classes <= MAX_CLASSES:  # 2**62 classes would overflow inside the variant's embedding
            raise ConfigError(f"num_classes={self.num_classes} must be in 0..{MAX_CLASSES}; number the classes 0..K-1")
        if self.kl_warmup_steps < 0:
            raise ConfigError(f"kl_warmup_steps={self.kl_warmup_steps} must be >= 0")
        if not (self.encoder in ("auto", "mlp", "conv") or self.encoder.startswith("timm:")):
            raise ConfigError(f"encoder={self.encoder!r} is unknown; use 'auto', 'mlp', 'conv' or 'timm:<name>' (e.g. 'timm:resnet18')")
        if self.decoder not in ("auto", "mlp", "conv"):
            raise ConfigError(f"decoder={self.decoder!r} is unknown; use 'auto', 'mlp' or 'conv'")
        if len(self.input_shape) == 1:
            for name in ("encoder", "decoder"):
                value = getattr(self, name)
                if value == "conv" or value.startswith("timm:"):
                    raise ConfigError(
                        f"{name}={value!r} needs image input (C, H, W) but input_shape={tuple(self.input_shape)}; "
                        f"use {name}='mlp'"
                    )

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def check_finite_floats(config: Any) -> None:
    """Refuse NaN and +-Inf in every float field of a config dataclass, the variant's own fields included.

    A weight of Inf passes ``>= 0`` checks but turns the first loss into Inf, which would then be
    reported as divergence with the wrong advice (lower the learning rate).
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field.name}={value} must be a finite number")


def _check_mixture(config: VAEConfig) -> None:
    """mixture_components in 1..256; likelihood="logistic_mixture" models 8-bit pixels, so it needs images."""
    check_count(config.mixture_components, "mixture_components", error=ConfigError,
                hint=" (components of the logistic_mixture likelihood, e.g. 10)")
    if config.mixture_components > MAX_MIXTURE_COMPONENTS:
        raise ConfigError(f"mixture_components={config.mixture_components} is more than the {MAX_MIXTURE_COMPONENTS} "
                          "values of a pixel channel; use at most 256 (PixelCNN++ uses 10)")
    if config.likelihood == "logistic_mixture" and len(config.input_shape) != 3:
        raise ConfigError(f"likelihood='logistic_mixture' models the 256 values of 8-bit image pixels but "
                          f"input_shape={tuple(config.input_shape)} is not (C, H, W); use likelihood='gaussian' for vectors")


def _check_latent_sampler(config: VAEConfig) -> None:
    """latent_sampler is "" or a known sampler, and sampler_components >= 1 exactly when there is one."""
    if config.latent_sampler not in ("", *LATENT_SAMPLERS):
        raise ConfigError(f"latent_sampler={config.latent_sampler!r} is unknown"
                          + did_you_mean(str(config.latent_sampler), LATENT_SAMPLERS)
                          + f"; use '' (none) or one of {', '.join(LATENT_SAMPLERS)}, as vaezoo.apps.fit_sampler sets it")
    check_count(config.sampler_components, "sampler_components", minimum=0, error=ConfigError)
    if config.latent_sampler and config.sampler_components < 1:
        raise ConfigError(f"sampler_components={config.sampler_components} must be >= 1 with "
                          f"latent_sampler={config.latent_sampler!r}; fit one with vaezoo.apps.fit_sampler")
    if not config.latent_sampler and config.sampler_components:
        raise ConfigError(f"sampler_components={config.sampler_components} needs a latent_sampler (e.g. 'gmm'); "
                          "set it to 0, or fit one with vaezoo.apps.fit_sampler")


def _check_unused_fields(config: VAEConfig) -> None:
    """Refuse a value other than the default for a field the variant does not read (``unused_fields``)."""
    for name, instead in config.unused_fields.items():
        value, default = getattr(config, name), _default(config, name)
        if value != default:
            raise ConfigError(f"{name}={value!r} has no effect on {type(config).__name__}, whose networks take "
                              f"{instead} instead; leave {name} at its default {default!r}")


def _set_derived_field(config: VAEConfig, name: str, source: str) -> None:
    """Set frozen ``config``'s field ``name`` to the value of field ``source`` (``derived_fields``). A value given for
    ``name`` other than its default or that value is refused; the value itself is accepted, as config.json stores it."""
    value, derived = getattr(config, name), getattr(config, source)
    if value != _default(config, name) and value != derived:
        raise ConfigError(f"{name}={value!r} does not apply to {type(config).__name__}: it is derived from {source} "
                          f"({derived!r}); set {source}={value!r} instead")
    object.__setattr__(config, name, derived)


def _default(config: VAEConfig, name: str) -> Any:
    return config_fields(type(config))[name].default


def _check_positive_int(name: str, value: Any) -> None:
    check_count(value, name, error=ConfigError)


def _check_positive_ints(name: str, values: Any, allow_empty: bool = False) -> None:
    if not isinstance(values, tuple) or (not values and not allow_empty):
        raise ConfigError(f"{name}={values!r} must be a non-empty tuple of positive integers")
    if any(isinstance(value, bool) or not isinstance(value, int) or value <= 0 for value in values):
        raise ConfigError(f"{name}={values!r} must hold positive integers only")


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def config_to_dict(config: VAEConfig) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type[ConfigT], data: dict[str, Any], source: str = "config") -> ConfigT:
    """Build ``cls`` from a dict, coercing JSON lists back to tuples; unknown keys are an error."""
    fields = config_fields(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"unknown config field {key!r} in {source} for {cls.__name__}"
            + did_you_mean(key, fields)
            + f"; valid fields: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {key: coerce_value(key, value, hints[key]) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # e.g. comparing a str with an int inside __post_init__
        raise ConfigError(f"bad value in {source} for {cls.__name__}: {error}") from None


def replace_config(config: ConfigT, source: str = "overrides", **overrides: Any) -> ConfigT:
    """``dataclasses.replace`` with unknown-key checking and type coercion."""
    merged = {**dataclasses.asdict(config), **overrides}
    return config_from_dict(type(config), merged, source=source)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a CLI ``key=value``; the value is read as JSON when it parses, else as a string.

    >>> parse_override("hidden_dims=[256]")
    ('hidden_dims', [256])
    >>> parse_override("encoder=timm:resnet18")
    ('encoder', 'timm:resnet18')
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} is not of the form key=value (e.g. --set latent_dim=10)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = {"true": True, "false": False, "none": None, "null": None}.get(raw.lower(), raw)
    return key.strip(), value


def coerce_value(key: str, value: Any, hint: Any) -> Any:
    """Turn a JSON value into the field's declared type, or raise a ConfigError naming both."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce_value(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(hint)}")
    if origin is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]  # `--set hidden_dims=256` means (256,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a list like [256, 128]")
        item_hint = args[0] if args else Any
        return tuple(coerce_value(key, item, item_hint) for item in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} has the wrong type; expected true or false")
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a string")
        return value
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
