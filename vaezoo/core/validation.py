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
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vaezoo.errors import InputError, VAEZooError


def check_count(value: Any, what: str, *, minimum: int = 1, error: type[VAEZooError] = InputError,
                hint: str = "") -> int:
    """``value`` if it is an int >= ``minimum`` (not a bool), else ``error`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise error(f"{what}={value!r} must be {kind}{hint}")
    return value


def check_positive_number(value: Any, what: str, *, error: type[VAEZooError] = InputError, hint: str = "") -> float:
    """``value`` if it is a finite number > 0, else ``error`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise error(f"{what}={value!r} must be a number > 0{hint}")
    return float(value)


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

    NaN/Inf, or values outside [0, 1] under a Bernoulli likelihood, would give wrong nats silently.
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
    return None


def label_range_problem(y: Tensor, num_classes: int) -> str | None:
    """What is wrong with the labels' range for a model of ``num_classes`` classes, or None (one host sync)."""
    if not y.numel():
        return None
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        return f"hold {low}..{high}; this model knows 0..{num_classes - 1}"
    return None


def check_labels(y: Any, num_classes: int, batch: int, what: str = "y", owner: str = "this model") -> Tensor:
    """Labels for a conditional model as a (batch,) long tensor: an int is repeated, a tensor must fit."""
    if y is None:
        raise InputError(f"{owner} is conditional: pass labels {what} (ints in 0..{num_classes - 1})")
    if isinstance(y, bool) or not isinstance(y, (int, Tensor)):
        raise InputError(f"{what} must be an int or a tensor of {batch} ints, got {type(y).__name__}")
    if isinstance(y, int) or y.dim() == 0:
        y = torch.full((batch,), int(y), dtype=torch.long)
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{what} has dtype {y.dtype}; pass integer class labels (e.g. y.long())")
    problem = label_range_problem(y, num_classes)
    if problem:
        raise InputError(f"labels {what} {problem} ({owner}); pass labels in that range")
    if tuple(y.shape) != (batch,):
        raise InputError(f"{what} has shape {tuple(y.shape)}; pass one label per example, shape ({batch},)")
    return y.long()
