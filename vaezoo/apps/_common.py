"""What the applications share: seeds, checked inputs and labels, latents as ``decode`` takes them, decoding.

Everything here reads a model through the contract only (vaezoo.core.contract): ``encode`` for the
posterior, ``encode_mean`` for the deterministic code, ``capabilities`` for what it can do.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from vaezoo.core.contract import Latent
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_batch, check_labels, value_problem
from vaezoo.data.splits import check_seed
from vaezoo.errors import CapabilityError, InputError, did_you_mean

BATCH_SIZE = 1000  # examples per encode/decode call
CONDITIONAL_MODELS = "a conditional model (`vaezoo list` shows them; see `vaezoo info NAME`)"


# --- names, seeds, choices, renamed keywords -----------------------------------------------------
def model_label(model: VAE) -> str:
    """The name a message should use: the registry name or tag (``cvae.digits``), else the class name."""
    return model.model_name


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Fix torch's RNG inside the block when ``seed`` is given, leaving the global state as it was."""
    if seed is not None:
        check_seed(seed)
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):  # manual_seed seeds CUDA too
        if seed is not None:
            torch.manual_seed(seed)
        yield


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else InputError listing them (with a "did you mean")."""
    if value not in choices:
        raise InputError(f"{what}={value!r} is unknown; use one of {', '.join(choices)}"
                         + did_you_mean(str(value), choices))
    return value


def renamed_keyword(new: str, new_value: Any, old: str, old_value: Any, where: str) -> Any:
    """The value of keyword ``new``, or of its old name ``old`` with a DeprecationWarning at the caller's line.

    Call it from the public function itself (not through a decorator's wrapper), so the warning points
    at the line that called that function.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{where}() got both {new}= and its old name {old}=; pass {new}= only")
    warnings.warn(f"{where}({old}=...) is deprecated; use {new}=...", DeprecationWarning, stacklevel=3)
    return old_value


# --- inputs and labels ---------------------------------------------------------------------------
def compute_dtype(model: VAE) -> torch.dtype:
    """The dtype the model computes in (float16 weights are loaded as float32)."""
    return next(model.parameters()).dtype


def check_examples(model: VAE, x: Any, what: str = "x") -> Tensor:
    """``x`` if it is a float (B, *input_shape) tensor, else InputError naming the model (values unchecked)."""
    return check_batch(x, model.input_shape_for(x), what, model_label(model))


def as_batch(model: VAE, x: Tensor, what: str = "x") -> Tensor:
    """One example (*input_shape) or a batch (B, *input_shape), checked, as a batch on the model's device."""
    if isinstance(x, Tensor) and (tuple(x.shape) == tuple(model.config.input_shape) or (
            x.dim() == 3 and model.input_shape_for(x.unsqueeze(0)) == tuple(x.shape))):  # one image of any size
        x = x.unsqueeze(0)
    check_examples(model, x, what)
    # A model of missing values (miwae) reads NaN as missing: only its observed values are checked.
    checked = torch.where(torch.isnan(x), 0.0, x) if model.capabilities.missing_values else x
    problem = value_problem(checked, model.config.likelihood)
    if problem:
        hint = "" if torch.isfinite(x).all() else " (only impute() and miwae take missing values, as NaN)"
        raise InputError(f"{what} {problem}{hint}")
    return x.to(model.device, compute_dtype(model))


def require_examples(x: Tensor, what: str, purpose: str, minimum: int = 1) -> None:
    """InputError unless the batch ``x`` holds at least ``minimum`` examples, saying what ``purpose`` needs them for."""
    if x.shape[0] < minimum:
        raise InputError(f"{what} holds {x.shape[0]} examples but {purpose} needs at least {minimum}; pass more")


def checked_labels(model: VAE, y: Tensor | int | None, batch: int, what: str = "y") -> Tensor | None:
    """Labels for a conditional model as a (batch,) long tensor on its device; None, and an error if given, otherwise."""
    if not model.is_conditional:
        if y is not None:
            raise InputError(f"{model_label(model)} is not conditional, so it takes no label ({what}={_show(y)}); "
                             f"drop it, or use {CONDITIONAL_MODELS}")
        return None
    classes = model.config.num_classes
    if isinstance(y, int) and not isinstance(y, bool) and not 0 <= y < classes:  # one label: name it as given
        raise InputError(f"{what}={y} is out of range: {model_label(model)} knows labels 0..{classes - 1}")
    return check_labels(y, classes, batch, what, model_label(model)).to(model.device)


def _show(y: Tensor | int) -> str:
    if not isinstance(y, Tensor):
        return str(y)
    return str(y.tolist() if y.numel() <= 4 else f"tensor of shape {tuple(y.shape)}")


def require_conditional(model: VAE, what: str, instead: str = "") -> None:
    """Raise CapabilityError, saying ``what`` needs labels (and what to do ``instead``), unless the model takes them."""
    if not model.capabilities.conditional:
        raise CapabilityError(f"{model_label(model)} is not conditional, but {what} needs {CONDITIONAL_MODELS}"
                              f"{'; ' + instead if instead else ''}")


def check_label(model: VAE, label: int, what: str = "label") -> None:
    """Raise InputError unless ``label`` is a class of this conditional model (or, unconditional, is None)."""
    checked_labels(model, label, 1, what)


# --- latents -------------------------------------------------------------------------------------
def mean_code(model: VAE, x: Tensor, y: Tensor | None) -> Latent:
    """The deterministic code of x (``encode_mean``: each layer's mean given the means above it), a tensor or a list."""
    code = model.encode_mean(x, y)
    return list(code) if isinstance(code, tuple) else code


def posterior_is_gaussian(model: VAE, x: Tensor, y: Tensor | None) -> tuple[bool, str]:
    """Whether q(z | x) is Gaussian in every layer (``posterior.is_gaussian``), and the posterior's type name.

    Probed on the first example, under a forked RNG so the caller's random stream is left as it was.
    """
    with seeded(None), torch.no_grad():
        posterior = model.encode(x[:1].to(model.device), None if y is None else y[:1].to(model.device))
    return bool(posterior.is_gaussian), type(posterior).__name__


def require_gaussian(model: VAE, x: Tensor, y: Tensor | None, what: str, instead: str) -> None:
    """Raise CapabilityError, saying ``what`` needs it and what works ``instead``, unless the posterior is Gaussian."""
    gaussian, kind = posterior_is_gaussian(model, x, y)
    if not gaussian:
        raise CapabilityError(f"{what} needs a Gaussian posterior, but {model_label(model)}'s is a {kind} "
                              f"(discrete codes or another non-Gaussian family); {instead}")


@torch.no_grad()
def encode_means(model: VAE, x: Tensor, y: Tensor | int | None = None) -> Latent:
    """The posterior means E_q[z | x] as ``decode`` takes them: (B, D), or a list per layer for a hierarchy."""
    x = as_batch(model, x)
    return mean_code(model.eval(), x, checked_labels(model, y, x.shape[0]))


def map_latents(function: Callable[..., Tensor], *latents: Latent) -> Latent:
    """Apply ``function`` layer by layer to latents that are tensors or lists of tensors."""
    if isinstance(latents[0], Tensor):
        return function(*latents)
    return [function(*layers) for layers in zip(*latents)]


def flatten_latents(latent: Latent) -> Tensor:  # (B, ...) or layers -> (B, total)
    parts = [latent] if isinstance(latent, Tensor) else latent
    return torch.cat([part.flatten(1) for part in parts], dim=1)


def unflatten_latents(flat: Tensor, like: Latent) -> Latent:  # (B, total) -> the structure of ``like``
    parts = [like] if isinstance(like, Tensor) else like
    sizes = [part[0].numel() for part in parts]
    pieces = [piece.reshape(flat.shape[0], *part.shape[1:]) for piece, part in zip(flat.split(sizes, dim=1), parts)]
    return pieces[0] if isinstance(like, Tensor) else pieces


# --- decoding ------------------------------------------------------------------------------------
def decode_to_cpu(model: VAE, z: Latent, y: Tensor | None) -> Tensor:
    """Images (the likelihood's mean) of latents z, on the CPU."""
    return model.likelihood.mean(model.decode(z, y)).float().cpu()


def decode_in_batches(model: VAE, z: Latent, y: Tensor | None, shape: tuple[int, ...] | None = None) -> Tensor:
    """:func:`decode_to_cpu` :data:`BATCH_SIZE` rows at a time into one output: the peak memory is one batch's.
    ``shape`` is the examples' (C, H, W) where it is not the config's (a variant of any image size decoding the
    latents of other images): the decoded images are cropped to it from the top left, as reconstruct crops them."""
    count = (z if isinstance(z, Tensor) else z[0]).shape[0]
    shape = tuple(model.config.input_shape) if shape is None else tuple(shape)
    output = torch.empty((count, *shape))
    for begin in range(0, count, BATCH_SIZE):
        rows = slice(begin, begin + BATCH_SIZE)
        images = decode_to_cpu(model, map_latents(lambda layer: layer[rows], z), None if y is None else y[rows])
        output[rows] = images[..., : shape[-2], : shape[-1]] if len(shape) == 3 else images
    return output


@torch.no_grad()
def decode_latents(model: VAE, z: Latent, y: Tensor | int | None = None) -> Tensor:
    """Examples (the likelihood's mean) of latents as ``decode`` takes them, on the CPU.

    >>> apps.decode_latents(model, model.prior_sample(8) + 1.5 * apps.attribute_vector(model, x, y, 0))  # doctest: +SKIP
    """
    batch = (z if isinstance(z, Tensor) else z[0]).shape[0]
    return decode_to_cpu(model.eval(), z, checked_labels(model, y, batch))
