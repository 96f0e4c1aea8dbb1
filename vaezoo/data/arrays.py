"""Checks and conversions from raw numpy arrays to the tensors of :mod:`vaezoo.data.splits`.

Every reader (IDX, npy/npz, CSV, image folder) ends here, so all data obeys one set of rules:

* shapes: ``(N, D)`` vectors, ``(N, H, W)`` -> ``(N, 1, H, W)``, ``(N, C, H, W)`` as is,
  ``(N, H, W, C)`` with C in (1, 3, 4) and H, W > 4 -> channels first;
* values: uint8 / 255; bool as 0/1; other numbers already in [0, 1] kept; anything else
  min-max scaled per feature with the train split's statistics (val/test clipped to [0, 1]);
* no NaN or Inf (NaN is let through as a missing value where the caller allows it, for a model that
  models missing values; min-max statistics then ignore it), at least one row, labels that are
  integers in 0..MAX_CLASSES-1.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError
from .limits import MAX_CLASSES

logger = logging.getLogger(__name__)

SHAPES_HELP = "(N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)"


def sample_array(x: np.ndarray, source: str) -> np.ndarray:
    """``x`` as a numeric array of shape (N, D) or (N, C, H, W); a :class:`DataError` naming ``source`` otherwise."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{source} holds {x.dtype} values; store real numbers (uint8 images or floats)")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{source} holds an array of shape {x.shape} ({x.ndim}-d); expected {SHAPES_HELP}")
    if x.shape[0] == 0:
        raise DataError(f"{source} holds zero rows (shape {x.shape}); it needs at least one sample")
    if 0 in x.shape[1:]:
        raise DataError(f"{source} has an empty sample shape {x.shape[1:]}; each sample needs at least one value")
    if x.ndim == 3:
        return x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] > 4 and x.shape[2] > 4:
        logger.info("%s: reading shape %s as (N, H, W, C); moving channels first", source, x.shape)
        return x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return x


def check_finite(
    x: np.ndarray, source: str, columns: Sequence[str] | None = None, lines: np.ndarray | None = None,
    allow_missing: bool = False,
) -> None:
    """Raise a :class:`DataError` that counts the NaN/Inf values in ``x`` and says where the first one is.

    ``columns`` and ``lines`` name the columns and file lines of a 2-d table, so the message
    can say "line 5, column 'b'". With ``allow_missing`` NaN marks a missing value and only Inf is refused.
    """
    if not np.issubdtype(x.dtype, np.floating):
        return
    n_nan, n_inf, first = finite_counts(x, allow_missing)
    where = None
    if first is not None:
        tabular = columns is not None and lines is not None
        where = f"line {lines[first[0]]}, column {columns[first[1]]!r}" if tabular else sample_location(first)
    refuse_non_finite(source, n_nan, n_inf, where, x.size, allow_missing)


def finite_counts(x: np.ndarray, allow_missing: bool = False) -> tuple[int, int, tuple[int, ...] | None]:
    """(NaN count, Inf count, index of the first refused value or None) of the float array ``x``.

    NaN is refused unless ``allow_missing``; Inf always. The streaming path adds these up chunk by chunk.
    """
    nan, inf = np.isnan(x), np.isinf(x)
    n_nan, n_inf = int(nan.sum()), int(inf.sum())
    if not (n_inf or (n_nan and not allow_missing)):
        return n_nan, n_inf, None
    bad = inf if allow_missing else nan | inf
    return n_nan, n_inf, tuple(int(i) for i in np.argwhere(bad)[0])


def sample_location(first: tuple[int, ...]) -> str:
    """Where a bad value is, for messages: ``sample 3, index (3, 0, 1, 2)``."""
    return f"sample {first[0]}, index {first}"


def refuse_non_finite(source: str, n_nan: int, n_inf: int, where: str | None, size: int, allow_missing: bool) -> None:
    """The one NaN/Inf verdict: log NaN read as missing, or raise the one-line :class:`DataError` naming ``where``."""
    if allow_missing and n_inf == 0:
        if n_nan:
            logger.info("%s: %d NaN values (%.1f%%) read as missing", source, n_nan, 100 * n_nan / size)
        return
    if n_nan == 0 and n_inf == 0:
        return
    if allow_missing:
        raise DataError(f"{source} holds {n_inf} Inf values (first at {where}); replace or drop them before training "
                        "(NaN marks a missing value; Inf is never read as one)")
    # The one in-tree variant with capabilities.missing_values; named so that the user knows what to run.
    hint = ", or train `miwae`, which models missing values" if n_inf == 0 else ""
    raise DataError(
        f"{source} holds {n_nan} NaN and {n_inf} Inf values (first at {where}); replace or drop them before training{hint}"
    )


def label_array(y: np.ndarray, n: int, source: str) -> np.ndarray:
    """``y`` as int64 class ids of shape (n,); a :class:`DataError` naming ``source`` otherwise."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"labels in {source} have shape {y.shape}; expected one class id per sample, shape ({n},)")
    if y.shape[0] != n:
        raise DataError(f"{source} has {y.shape[0]} labels for {n} samples; give exactly one label per sample")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or np.issubdtype(y.dtype, np.complexfloating):
        raise DataError(f"labels in {source} are {y.dtype}; encode the classes as integers 0..K-1")
    bad = ~np.isfinite(y) | (y < 0) | (y != np.round(y)) if np.issubdtype(y.dtype, np.floating) else y < 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"labels in {source} must be non-negative integers but sample {row} has {y[row].item()!r} "
            f"({int(bad.sum())} bad in all); encode the classes as integers 0..K-1"
        )
    too_large = y >= MAX_CLASSES  # before the cast: 2**64 or 1e300 would wrap to a negative int64
    if too_large.any():
        row = int(np.flatnonzero(too_large)[0])
        raise DataError(
            f"labels in {source} must be class ids below {MAX_CLASSES} but sample {row} has {y[row].item()!r} "
            f"({int(too_large.sum())} so large in all); number the classes 0..K-1 (K = the number of classes)"
        )
    return y.astype(np.int64)


def unit_parts(
    x: np.ndarray, parts: Sequence[torch.Tensor], source: str, always_minmax: bool = False
) -> list[torch.Tensor]:
    """The rows ``parts[i]`` of ``x`` as float32 tensors in [0, 1], scaled by the rules in this module's docstring.

    ``parts[0]`` must be the train indices: min-max statistics come from those rows only, so
    nothing leaks from val/test. ``always_minmax`` scales even data already in [0, 1] (CSV features).
    uint8 rows are gathered before the conversion to float, which keeps big image sets fast.
    """
    rows = [x[index.numpy()] for index in parts]  # numpy gathers: fresh copies, faster than torch's here
    if x.dtype == np.uint8 and not always_minmax:
        return [torch.from_numpy(_uint8_to_unit(part)) for part in rows]
    values = [torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32)) for part in rows]
    low, high = _observed_range(values)
    if not always_minmax and low >= 0.0 and high <= 1.0:
        return values
    logger.info(
        "%s: values span [%g, %g]; min-max scaling each feature to [0, 1] with the train split's statistics",
        source, low, high,
    )
    return minmax_scale(values)


def _observed_range(values: Sequence[torch.Tensor]) -> tuple[float, float]:
    """The lowest and highest value over all parts, NaN (missing) left out; (0, 1) when nothing is observed."""
    lows, highs = [], []
    for part in values:
        if bool(torch.isnan(part).any()):
            part = part[~torch.isnan(part)]
        if part.numel():
            lows.append(float(part.min()))
            highs.append(float(part.max()))
    return (min(lows), max(highs)) if lows else (0.0, 1.0)


def _uint8_to_unit(part: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(part, dtype=np.float32)
    values /= np.float32(255.0)  # in place: no second (N, ...) float buffer
    return values


def rows_to_unit(rows: np.ndarray, minmax: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Raw rows as the float32 tensor :func:`unit_parts` makes of them: uint8 / 255, else float32, then
    ``minmax`` = (low, span) scaling when given. The streaming path converts each batch with it.
    """
    if rows.dtype == np.uint8 and minmax is None:
        return torch.from_numpy(_uint8_to_unit(rows))
    values = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    return values if minmax is None else scale_minmax(values, *minmax)


def minmax_scale(parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Scale each feature (each position of a sample) to [0, 1] by its min and max over ``parts[0]`` (train).

    Values outside the train range (in val/test) are clipped; a feature constant on train maps to 0.
    NaN (a missing value) stays NaN and is left out of the statistics; a feature never observed on train
    keeps its values, clipped to [0, 1].
    """
    low, span = minmax_bounds(*feature_range(parts[0]))
    return [scale_minmax(part, low, span) for part in parts]


def feature_range(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's (min, max) over the rows of ``train``, NaN left out: +inf / -inf where a feature is all NaN.

    Exact whatever the grouping of rows, so the streaming path takes it chunk by chunk (torch.minimum of the parts).
    """
    if bool(torch.isnan(train).any()):  # NaN would win amin/amax: take them over the observed values only
        return train.nan_to_num(nan=np.inf).amin(dim=0), train.nan_to_num(nan=-np.inf).amax(dim=0)
    return train.amin(dim=0), train.amax(dim=0)


def minmax_bounds(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, span) for :func:`scale_minmax` from :func:`feature_range`: a feature never observed keeps 0..1,
    a constant one gets span 1 (it maps to 0)."""
    observed = torch.isfinite(low)  # False only where train never observes the feature
    low, high = torch.where(observed, low, torch.zeros_like(low)), torch.where(observed, high, torch.ones_like(high))
    span = high - low
    return low, torch.where(span > 0, span, torch.ones_like(span))


def scale_minmax(part: torch.Tensor, low: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """``part`` min-max scaled by the train statistics and clipped to [0, 1] (NaN stays NaN)."""
    return ((part - low) / span).clamp_(0.0, 1.0)
