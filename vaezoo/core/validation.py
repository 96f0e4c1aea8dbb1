"""One check per kind of input (counts, example batches, their values, labels), each raising one clear error.

Every layer above uses these instead of writing its own: the model's input checks, the applications,
the trainer's splits, the benchmark's settings and the CLI all say the same thing for the same mistake.

>>> check_count(3, "n")
3
>>> check_count(0, "n")
Traceback (most recent call last):
...
vaezoo.errors.InputError: n=0 must be a positive integer
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.errors import InputError, VAEZooError

MAX_VALUES = 2**28  # values one call may hold at once (1 GiB as float32): sizes are refused before any work


def _is_integer(value: Any) -> bool:
    """An int or a numpy integer, not a bool (True would silently count as 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    """An int, float or numpy number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_count(value: Any, what: str, *, minimum: int = 1, error: type[VAEZooError] = InputError,
                hint: str = "") -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (not a bool), else ``error`` naming ``what``."""
    if not _is_integer(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise error(f"{what}={value!r} must be {kind}{hint}")
    return int(value)


def check_positive_number(value: Any, what: str, *, error: type[VAEZooError] = InputError, hint: str = "") -> float:
    """``value`` if it is a finite number > 0, else ``error`` naming ``what``."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise error(f"{what}={value!r} must be a number > 0{hint}")
    return float(value)


def check_finite_number(value: Any, what: str, *, error: type[VAEZooError] = InputError, hint: str = "") -> float:
    """``value`` if it is a finite number (of either sign), else ``error`` naming ``what``."""
    if not _is_real(value) or not math.isfinite(value):
        raise error(f"{what}={value!r} must be a finite number{hint}")
    return float(value)


def check_non_negative_number(value: Any, what: str, *, error: type[VAEZooError] = InputError, hint: str = "") -> float:
    """``value`` if it is a finite number >= 0 (NaN and Inf are refused), else ``error`` naming ``what``."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise error(f"{what}={value!r} must be a finite number >= 0{hint}")
    return float(value)


def check_output_size(count: int, example_shape: Sequence[int], what: str, *, limit: int = MAX_VALUES,
                      hint: str = "") -> int:
    """``count`` if ``count`` examples of ``example_shape`` hold at most ``limit`` values, else InputError.

    Checked before any work, so that a typo such as ``n=10**9`` is one clear line, not minutes of
    work ending in an out-of-memory crash.
    """
    per_example = max(1, math.prod(example_shape))
    if count * per_example > limit:
        gib = count * per_example * 4 / 2**30
        raise InputError(f"{what}={count} asks for {count:,} examples of shape {tuple(example_shape)} ({gib:,.1f} GiB "
                         f"as float32), over the limit of {limit:,} values ({limit * 4 / 2**30:g} GiB) at once; ask "
                         f"for at most {limit // per_example:,}{hint}")
    return count


def check_device(x: Tensor, device: torch.device, what: str = "x") -> None:
    """InputError unless ``x`` lies on ``device`` (the model's): torch would fail deep inside the first layer."""
    if x.device != device:
        raise InputError(f"{what} is on {x.device} but the model is on {device}; move it with {what}.to(model.device)")


def check_batch(x: Any, input_shape: Sequence[int], what: str = "x", owner: str = "this model") -> Tensor:
    """``x`` if it is a float tensor of shape (B, *input_shape), else InputError saying how to fix it."""
    expected = ", ".join(map(str, input_shape))
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch.Tensor of shape (B, {expected}), got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise InputError(f"{what} has shape {tuple(x.shape)} but {owner} takes (B, {expected}); "
                         "reshape it, or use a model created with input_shape set to match")
    if not x.is_floating_point():
        raise InputError(f"{what} has dtype {x.dtype}; convert it to float in [0, 1] (e.g. x.float() / 255)")
    return x


def value_problem(x: Tensor, likelihood: str) -> str | None:
    """What is wrong with the values of ``x`` for a model with this likelihood, or None.

    NaN/Inf, or values outside [0, 1] under a Bernoulli or logistic-mixture likelihood, would give wrong nats silently.
    One host sync. The model checks its inputs with it outside training, the trainer its splits.
    """
    if x.numel() == 0:
        return None
    low, high = (float(v) for v in torch.aminmax(x.detach().float()))  # NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)):
        return "holds NaN or Inf values; remove or replace them"
    if likelihood == "bernoulli" and (low < 0 or high > 1):
        return (f"holds values in [{low:g}, {high:g}] but the Bernoulli likelihood needs [0, 1]; "
                "scale the data (vaezoo.data.load_data does) or use likelihood='gaussian'")
    if likelihood == "logistic_mixture" and (low < 0 or high > 1):
        return (f"holds values in [{low:g}, {high:g}] but the logistic_mixture likelihood reads [0, 1] as the 256 values "
                "of 8-bit pixels; scale the data (x / 255 for 8-bit images; vaezoo.data.load_data does)")
    return None


def label_range_problem(y: Tensor, num_classes: int) -> str | None:
    """What is wrong with the labels' range for a model of ``num_classes`` classes, or None (one host sync)."""
    if not y.numel():
        return None
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        return f"hold {low}..{high}; this model knows 0..{num_classes - 1}"
    return None


def check_labels(y: Any, num_classes: int, batch: int, what: str = "y", owner: str = "this model", *,
                 check_range: bool = True) -> Tensor:
    """Labels for a conditional model as a (batch,) long tensor: an int is repeated, a tensor must fit.

    ``check_range=False`` skips the range check (its one host sync) where the labels were checked already.
    """
    if y is None:
        raise InputError(f"{owner} is conditional: pass labels {what} (ints in 0..{num_classes - 1})")
    if not (_is_integer(y) or isinstance(y, Tensor)):
        raise InputError(f"{what}={y!r} must be an int or a tensor of {batch} ints, got {type(y).__name__}")
    if not isinstance(y, Tensor):
        if not 0 <= y < num_classes:  # before making a tensor: 2**64 would not fit one
            raise InputError(f"label {what}={y} is out of range: {owner} knows labels 0..{num_classes - 1}; "
                             "pass a label in that range")
        y = torch.tensor(int(y))
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InputError(f"{what} has dtype {y.dtype}; pass integer class labels (e.g. y.long())")
    if y.dim() == 0:
        y = y.expand(batch)
    problem = label_range_problem(y, num_classes) if check_range else None
    if problem:
        raise InputError(f"labels {what} {problem} ({owner}); pass labels in that range")
    if tuple(y.shape) != (batch,):
        raise InputError(f"{what} has shape {tuple(y.shape)}; pass one label per example, shape ({batch},)")
    return y.long()
