"""The memory budget, and the streaming path ``load_data`` takes for a ``.npy`` or an image folder over it.

Data whose samples take more bytes as float32 than the budget are not loaded: a ``.npy`` is memory-mapped, an
image folder is decoded image by image as batches are read (see :mod:`.streaming`). Everything else about the
data is as on the in-memory path: the same checks with the same one-line errors (the shape from the header; NaN
and Inf counted chunk by chunk; labels), the same seeded split, the same scaling to [0, 1] (min-max statistics
gathered chunk by chunk over the train rows), so row ``i`` of each split holds the same values either way.

>>> splits = load_data("big.npy", memory_budget_mb=2048)  # doctest: +SKIP
INFO vaezoo.data.budget: big.npy: streaming it from disk (a memory-mapped .npy): its samples take 2,929.7 MiB as
float32, over the memory budget of 2,048.0 MiB (memory_budget_mb)

The budget is ``memory_budget_mb`` (``vaezoo train --memory-budget MB``), else ``$VAEZOO_MEMORY_BUDGET_MB``, else a
quarter of this machine's memory: the in-memory path holds the file's array, its rows gathered per split and
their float32 copy at once, up to four times the float32 size for float64 data.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from . import files
from .arrays import feature_range, finite_counts, label_array, minmax_bounds, refuse_non_finite, sample_array, sample_location
from .images import FolderScan
from .limits import MIN_STORED_FRACTION, memory_bytes, stored_fraction
from .splits import DataSplits, split_indices
from .streaming import CHUNK_BYTES, ImageRows, NpyRows, StreamedArray, StreamingData

logger = logging.getLogger(__name__)

MEMORY_BUDGET_ENV = "VAEZOO_MEMORY_BUDGET_MB"  # MiB of float32 samples a dataset may take in memory
DEFAULT_BUDGET_FRACTION = 0.25  # of memory_bytes(), when neither the argument nor the variable sets it


def check_memory_budget(memory_budget_mb: float | None, what: str = "memory_budget_mb") -> float | None:
    """``memory_budget_mb`` if it is None or a finite number of MiB > 0, else a ConfigError naming ``what``."""
    if memory_budget_mb is None:
        return None
    number = isinstance(memory_budget_mb, (int, float, np.integer, np.floating)) and not isinstance(memory_budget_mb, bool)
    if not number or not math.isfinite(memory_budget_mb) or memory_budget_mb <= 0:
        raise ConfigError(f"{what}={memory_budget_mb!r} must be a number of MiB > 0, e.g. 4096; data whose samples "
                          "take more as float32 are streamed from disk instead of loaded")
    return float(memory_budget_mb)


def memory_budget(memory_budget_mb: float | None = None) -> tuple[int, str]:
    """(budget in bytes, where it came from): the argument, else ``$VAEZOO_MEMORY_BUDGET_MB``, else a quarter of memory.

    >>> memory_budget(512)
    (536870912, 'memory_budget_mb')
    """
    if check_memory_budget(memory_budget_mb) is not None:
        return int(memory_budget_mb * 2**20), "memory_budget_mb"
    value = os.environ.get(MEMORY_BUDGET_ENV)
    if value is not None:
        try:
            megabytes = float(value)
        except ValueError:
            megabytes = math.nan
        check_memory_budget(megabytes if math.isfinite(megabytes) else value, f"${MEMORY_BUDGET_ENV}")
        return int(megabytes * 2**20), f"${MEMORY_BUDGET_ENV}"
    return int(memory_bytes() * DEFAULT_BUDGET_FRACTION), "a quarter of this machine's memory"


def streaming_chunk_rows(source: str, float32_bytes: int, sample_shape: tuple[int, ...],
                         memory_budget_mb: float | None, how: str) -> int | None:
    """None when data of ``float32_bytes`` fits the budget and is loaded; else it is streamed (``how``), and the
    answer is the rows a pass over it reads at once (CHUNK_BYTES, or a quarter of a smaller budget). A log line
    says which and why."""
    budget, origin = memory_budget(memory_budget_mb)
    size = f"its samples take {_mib(float32_bytes)} as float32"
    if float32_bytes <= budget:
        logger.info("%s: loading it into memory: %s, within the memory budget of %s (%s)", source, size, _mib(budget),
                    origin)
        return None
    logger.info("%s: streaming it from disk (%s): %s, over the memory budget of %s (%s)", source, how, size,
                _mib(budget), origin)
    return max(1, min(CHUNK_BYTES, budget // 4) // (4 * math.prod(sample_shape)))


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB" if n_bytes >= 2**20 / 10 else f"{n_bytes / 2**10:,.1f} KiB"


# ---------------------------------------------------------------- .npy


def stream_npy(name: str, path: Path, seed: int, val_fraction: float, test_fraction: float, allow_missing: bool,
               memory_budget_mb: float | None) -> DataSplits | None:
    """The splits of the ``.npy`` file ``path`` streamed from a memory map, or None when it fits the budget
    (or is an ``.npz`` archive, which cannot be mapped): then ``load_data`` loads it as before."""
    layout = files.npy_layout(path)
    if layout is None:
        logger.info("%s: loading it into memory (an .npz archive cannot be memory-mapped; save x with numpy.save as "
                    ".npy to stream it)", path)
        return None
    source, (shape, _) = str(path), layout
    over = 4 * math.prod(shape) > memory_budget(memory_budget_mb)[0]
    if over and (stored := stored_fraction(path)) < MIN_STORED_FRACTION:  # the in-memory path judges it (a bomb)
        logger.info("%s: not streaming it: only %.2g%% of its bytes are stored on disk (a sparse file, mostly holes that "
                    "read as zeros); loading it into memory", source, 100 * stored)
        return None
    chunk_rows = streaming_chunk_rows(source, 4 * math.prod(shape), shape[1:], memory_budget_mb, "a memory-mapped .npy")
    if chunk_rows is None:
        return None
    raw = files.map_npy(path)
    x = sample_array(raw, source)  # the same shape checks and layout as in memory; a view, nothing read
    layout_name = "none" if x.shape == raw.shape else "expand" if raw.ndim == 3 else "channels_last"
    low, high = _check_values(x, source, allow_missing, chunk_rows)
    indices = split_indices(len(x), val_fraction, test_fraction, seed, source)
    minmax = None
    if x.dtype != np.uint8 and not (low >= 0.0 and high <= 1.0):  # unit_parts' rule
        logger.info("%s: values span [%g, %g]; min-max scaling each feature to [0, 1] with the train split's statistics",
                    source, low, high)
        minmax = _train_minmax(x, indices[0].numpy(), chunk_rows)
    reader = NpyRows(path, layout_name, tuple(int(d) for d in x.shape[1:]), minmax)
    parts = [StreamingData(StreamedArray(reader, index.numpy(), chunk_rows)) for index in indices]
    return DataSplits(train=parts[0], val=parts[1], test=parts[2], name=name, input_shape=reader.sample_shape,
                      num_classes=0, class_names=None, source=source)


def _chunks(x: np.ndarray, chunk_rows: int) -> list[slice]:
    return [slice(start, min(start + chunk_rows, len(x))) for start in range(0, len(x), chunk_rows)]


def _check_values(x: np.ndarray, source: str, allow_missing: bool, chunk_rows: int) -> tuple[float, float]:
    """NaN/Inf refused as ``check_finite`` refuses them (the same counts and first position), chunk by chunk; then the
    lowest and highest value as float32, NaN left out ((0, 1) for uint8, which is never min-max scaled)."""
    if x.dtype == np.uint8:
        return 0.0, 1.0
    floating = np.issubdtype(x.dtype, np.floating)
    n_nan = n_inf = 0
    first: tuple[int, ...] | None = None
    lows, highs = [], []
    for rows in _chunks(x, chunk_rows):
        chunk = np.array(x[rows])  # a copy: a slice of the map is read-only
        if floating:
            chunk_nan, chunk_inf, chunk_first = finite_counts(chunk, allow_missing)
            n_nan, n_inf = n_nan + chunk_nan, n_inf + chunk_inf
            if first is None and chunk_first is not None:
                first = (chunk_first[0] + rows.start, *chunk_first[1:])
        values = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        observed = values[~torch.isnan(values)] if floating and bool(torch.isnan(values).any()) else values
        if observed.numel():
            lows.append(float(observed.min()))
            highs.append(float(observed.max()))
    if floating:
        refuse_non_finite(source, n_nan, n_inf, None if first is None else sample_location(first), x.size, allow_missing)
    return (min(lows), max(highs)) if lows else (0.0, 1.0)


def _train_minmax(x: np.ndarray, train_rows: np.ndarray, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, span) of each feature over the train rows, as ``minmax_scale`` takes them, read chunk by chunk."""
    low = high = None
    for start in range(0, len(train_rows), chunk_rows):
        values = torch.from_numpy(np.ascontiguousarray(x[train_rows[start : start + chunk_rows]], dtype=np.float32))
        chunk_low, chunk_high = feature_range(values)
        low = chunk_low if low is None else torch.minimum(low, chunk_low)
        high = chunk_high if high is None else torch.maximum(high, chunk_high)
    assert low is not None and high is not None  # split_indices leaves at least one train row
    return minmax_bounds(low, high)


# ---------------------------------------------------------------- image folders


def stream_image_folder(name: str, scan: FolderScan, seed: int, val_fraction: float, test_fraction: float,
                        memory_budget_mb: float | None) -> DataSplits | None:
    """The splits of a scanned image folder, decoded image by image as batches are read, or None when the folder
    fits the budget (``load_data`` then decodes it all, as before)."""
    source = str(scan.folder)
    chunk_rows = streaming_chunk_rows(source, scan.float32_bytes, scan.sample_shape, memory_budget_mb,
                                      "images decoded as batches are read")
    if chunk_rows is None:
        return None
    n = len(scan.files)
    y = None if scan.labels is None else torch.from_numpy(label_array(scan.labels, n, source))
    indices = split_indices(n, val_fraction, test_fraction, seed, source)
    reader = ImageRows(scan.files, scan.sample_shape)
    parts = [StreamingData(StreamedArray(reader, index.numpy(), chunk_rows), None if y is None else y[index]) for index in indices]
    num_classes = len(scan.class_names) if scan.class_names else (int(y.max()) + 1 if y is not None else 0)
    return DataSplits(train=parts[0], val=parts[1], test=parts[2], name=name, input_shape=scan.sample_shape,
                      num_classes=num_classes, class_names=list(scan.class_names) if scan.class_names else None,
                      source=source)
