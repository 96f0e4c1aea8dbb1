"""Codes of data with known generative factors, drawn as the disentanglement metrics need them.

The metrics (vaezoo.eval.disentanglement_metrics) see a representation only through ``represent``, a function
from a batch of observations (B, *observation_shape) to codes (B, D) -- for a VAE the posterior means,
``lambda x: model.encode_mean(x.to(model.device)).cpu()`` -- and the data only through the ``GroundTruthData``
protocol of vaezoo.data.factors.
disentanglement_lib (google-research/disentanglement_lib, ``evaluation/metrics/utils.py``,
``generate_batch_factor_code``) draws factors and observations in batches of 16; here all factors are drawn
at once and the observations are encoded in chunks of ``CHUNK`` rows, which is the same distribution and
is faster.

>>> codes, factors = sample_codes(lambda x: x, data, 100, np.random.default_rng(0))  # doctest: +SKIP
>>> codes.shape, factors.shape  # (N, D) float64, (N, F) int64  # doctest: +SKIP
((100, 5), (100, 5))
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from vaezoo.data.factors import GroundTruthData
from vaezoo.errors import ConfigError, InputError

Represent = Callable[[Tensor], Tensor]  # observations (B, *observation_shape) -> codes (B, D)
CHUNK = 2048  # observations per call of ``represent``
BLOCK = 16384  # observations of the points drawn at once for the BetaVAE and FactorVAE scores (bounds memory)


def check_factors(data: GroundTruthData) -> int:
    """The number of factors F of ``data``; ConfigError unless there are two or more, each taking two or more values.

    A factor of one value has no entropy (MIG divides by it) and cannot be told from another by any code.
    """
    sizes = tuple(int(size) for size in data.factor_sizes)
    if len(sizes) < 2:
        raise ConfigError(f"disentanglement needs data with two or more factors; {type(data).__name__} has "
                          f"factor_sizes={sizes}")
    constant = [name for name, size in zip(data.factor_names, sizes) if size < 2]
    if constant:
        raise ConfigError(f"factors {constant} of {type(data).__name__} take a single value; leave them out of "
                          f"factor_sizes (disentanglement_lib's dSprites drops its one colour the same way)")
    return len(sizes)


def encode(represent: Represent, data: GroundTruthData, factors: np.ndarray) -> np.ndarray:
    """Codes (N, D) float64 of the observations of ``factors`` (N, F), ``CHUNK`` observations at a time."""
    chunks = []
    with torch.no_grad():
        for begin in range(0, factors.shape[0], CHUNK):
            part = factors[begin:begin + CHUNK]
            chunks.append(_checked_codes(represent(data.observations(part)), part.shape[0]))
    return np.concatenate(chunks)


def _checked_codes(codes: Tensor, rows: int) -> np.ndarray:
    """``codes`` as float64 numpy; InputError unless it is (rows, D >= 2) and finite."""
    if not isinstance(codes, Tensor) or codes.dim() != 2 or codes.shape[0] != rows or codes.shape[1] < 2:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise InputError(f"represent gave {shape} for {rows} observations; it must return a (B, D) tensor with "
                         f"D >= 2 (flatten a hierarchy's means into one code per example)")
    array = codes.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise InputError("represent gave NaN or Inf codes; the metrics need finite codes (check the model's weights)")
    return array


def sample_codes(represent: Represent, data: GroundTruthData, num_points: int,
                 generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` random observations' codes (N, D) float64 and factors (N, F) int64."""
    factors = np.asarray(data.sample_factors(num_points, generator), dtype=np.int64)
    return encode(represent, data, factors), factors


def fixed_factor_codes(represent: Represent, data: GroundTruthData, num_points: int, batch_size: int,
                       generator: np.random.Generator, pairs: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``num_points`` points a random factor k and ``batch_size`` codes whose observations share it.

    ``pairs=False`` (FactorVAE score): one batch whose factor k takes a single value (that of its first row).
    ``pairs=True`` (BetaVAE score): two independent batches, the second given the first's factor k row by row.
    Returns k (N,) and codes (N, batch_size, D), or (N, 2, batch_size, D) for pairs.
    """
    num_factors = len(data.factor_sizes)
    fixed = generator.integers(num_factors, size=num_points)
    groups = 2 if pairs else 1
    factors = np.asarray(data.sample_factors(num_points * groups * batch_size, generator), dtype=np.int64)
    factors = factors.reshape(num_points, groups, batch_size, num_factors)
    rows = np.arange(num_points)
    if pairs:
        factors[rows, 1, :, fixed] = factors[rows, 0, :, fixed]
    else:
        factors[rows, 0, :, fixed] = factors[rows, 0, :1, fixed]
    codes = encode(represent, data, factors.reshape(-1, num_factors))
    shape = (num_points, 2, batch_size, -1) if pairs else (num_points, batch_size, -1)
    return fixed, codes.reshape(shape)


def fixed_factor_blocks(represent: Represent, data: GroundTruthData, num_points: int, batch_size: int,
                        generator: np.random.Generator, pairs: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`fixed_factor_codes` of ``num_points`` points, a block of about ``BLOCK`` observations at a time
    (disentanglement_lib's 15,000 BetaVAE points of 2 x 64 observations would hold 1.9 million codes at once)."""
    per_block = max(1, BLOCK // (batch_size * (2 if pairs else 1)))
    for begin in range(0, num_points, per_block):
        yield fixed_factor_codes(represent, data, min(per_block, num_points - begin), batch_size, generator, pairs)
