"""Each step's batch for the trainer, from tensors held on the device or from rows streamed from disk, in one order.

Both sources take the epoch's permutation ``order`` (drawn on the CPU by the trainer's seeded generator) and give
rank ``r`` of ``world`` the rows ``order[step * batch_size + r * local_batch :][:local_batch]`` at each step
(:func:`rank_rows`). So a streamed split (vaezoo.data.streaming) yields the very batches, in the same order and on
the same ranks, that the in-memory split yields, and a resumed run, whose generator comes back from its
checkpoint, goes on with the batch the uninterrupted run would have taken.

>>> source = batch_source(splits.train.x, splits.train.y, torch.device("cpu"))  # doctest: +SKIP
>>> for xb, yb in source.epoch(order, steps=10, batch_size=128, rank=0, local_batch=128): ...  # doctest: +SKIP
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor

from vaezoo.data.streaming import RowLoader, StreamedArray, is_streamed, iter_chunks

Batch = tuple[Tensor, Tensor | None]


class BatchSource(Protocol):
    def epoch(self, order: Tensor, steps: int, batch_size: int, rank: int, local_batch: int) -> Iterator[Batch]:
        """One epoch's (x, y) batches for this rank, on the trainer's device."""


def rank_rows(order: Tensor, step: int, batch_size: int, rank: int, local_batch: int) -> Tensor:
    """The rows of ``order`` that rank ``rank`` trains on at ``step``: its slice of the step's global batch."""
    begin = step * batch_size + rank * local_batch
    return order[begin : begin + local_batch]


class TensorBatches:
    """Batches sliced from tensors already on the device: no copy, no host sync."""

    def __init__(self, x: Tensor, y: Tensor | None, device: torch.device) -> None:
        self.x, self.y, self.device = x, y, device

    def epoch(self, order: Tensor, steps: int, batch_size: int, rank: int, local_batch: int) -> Iterator[Batch]:
        order = order.to(self.device)
        for step in range(steps):
            index = rank_rows(order, step, batch_size, rank, local_batch)
            yield self.x[index], None if self.y is None else self.y[index]


class StreamedBatches:
    """Batches read from disk by a RowLoader's workers (pinned for CUDA), labels taken from memory."""

    def __init__(self, x: StreamedArray, y: Tensor | None, device: torch.device) -> None:
        self.loader = RowLoader(x, pin_memory=device.type == "cuda")
        self.y, self.device = (None if y is None else y.to(device)), device

    def epoch(self, order: Tensor, steps: int, batch_size: int, rank: int, local_batch: int) -> Iterator[Batch]:
        indices = [rank_rows(order, step, batch_size, rank, local_batch) for step in range(steps)]
        for index, xb in zip(indices, self.loader([index.numpy() for index in indices])):
            yb = None if self.y is None else self.y[index.to(self.device)]
            yield xb.to(self.device, non_blocking=True), yb


def batch_source(x: Tensor | StreamedArray, y: Tensor | None, device: torch.device) -> BatchSource:
    """Streamed batches for a streamed split, else slices of ``x`` and ``y`` (already on ``device``)."""
    return StreamedBatches(x, y, device) if isinstance(x, StreamedArray) else TensorBatches(x, y, device)


def on_device(x: Tensor | StreamedArray, device: torch.device) -> Tensor | StreamedArray:
    """``x`` moved to ``device``, where the in-memory trainer keeps it; streamed samples stay on disk."""
    return x if is_streamed(x) else x.to(device)


def value_summary(x: StreamedArray, missing_as_zero: bool) -> Tensor:
    """A few values with the same lowest, highest, NaN and Inf as the whole streamed ``x``, read chunk by chunk, so
    that the trainer's checks of a tensor say the same of it (NaN read as 0 with ``missing_as_zero``, as they do)."""
    lows, highs, has_nan, has_inf = [], [], False, False
    for chunk in iter_chunks(x):
        if missing_as_zero:
            chunk = chunk.nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
        if chunk.numel():
            low, high = torch.aminmax(chunk.float())  # NaN propagates into both, as it does over the whole
            lows.append(low)
            highs.append(high)
            has_nan = has_nan or bool(torch.isnan(chunk).any())
            has_inf = has_inf or bool(torch.isinf(chunk).any())
    if not lows:
        return torch.zeros(0)
    marks = [math.nan] * has_nan + [math.inf] * has_inf
    return torch.cat([torch.stack(lows).min()[None], torch.stack(highs).max()[None], torch.tensor(marks)])
