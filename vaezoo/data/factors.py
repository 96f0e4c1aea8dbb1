"""Data with known generative factors: the GroundTruthData protocol, batches that share a factor, the built-in grids.

The disentanglement scores (BetaVAE, FactorVAE, MIG, SAP, DCI; Locatello et al. 2019, arXiv:1811.12359) draw
factor combinations and ask the data for their images, as disentanglement_lib's ``GroundTruthData`` does
(google-research/disentanglement_lib, ``data/ground_truth/ground_truth_data.py``): any combination of the whole
grid, not only the training rows.

>>> import numpy as np
>>> data = ground_truth_data("shapes2d-small")             # doctest: +SKIP
>>> data.factor_names, data.factor_sizes                   # doctest: +SKIP
(('shape', 'scale', 'orientation', 'pos_x', 'pos_y'), (3, 3, 8, 8, 8))
>>> first, second = sample_pairs_sharing_factor(data, 64, factor=1, generator=np.random.default_rng(0))  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigError, DataError, did_you_mean
from .shapes2d import SPECS, Shapes2D, cache_folder


@runtime_checkable
class GroundTruthData(Protocol):
    """A dataset whose images are a function of discrete factors, each drawn uniformly and independently."""

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]  # number of values of each factor; factor f takes 0..factor_sizes[f]-1
    observation_shape: tuple[int, ...]  # (C, H, W) of one image, e.g. (1, 64, 64)

    def sample_factors(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """(n, F) int64 factor indices, each factor uniform over its values."""
        ...

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """The images of ``factors`` ((n, F) indices): (n, *observation_shape) float32 in [0, 1]."""
        ...


def sample_pairs_sharing_factor(data: GroundTruthData, n: int, factor: int,
                                generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches of ``n`` images whose factors are drawn independently except ``factor``, equal row by row.

    The pairs of the BetaVAE score (Higgins et al. 2017), drawn as disentanglement_lib's
    ``evaluation/metrics/beta_vae.py`` (``_generate_training_sample``) does: two factor batches, then the second
    takes the first's column ``factor``.

    >>> first, second = sample_pairs_sharing_factor(data, 8, 0, np.random.default_rng(0))  # doctest: +SKIP
    >>> first.shape                                                                           # doctest: +SKIP
    torch.Size([8, 1, 32, 32])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} must be a positive number of pairs, e.g. 64")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 0 <= factor < len(data.factor_sizes):
        raise ConfigError(f"factor={factor!r} must be an index 0..{len(data.factor_sizes) - 1} of {data.factor_names}")
    first = data.sample_factors(n, generator)
    second = data.sample_factors(n, generator)
    second[:, factor] = first[:, factor]
    return data.observations(first), data.observations(second)


def list_ground_truth_data() -> list[str]:
    """Names of the built-in datasets with known factors.

    >>> list_ground_truth_data()
    ['shapes2d', 'shapes2d-small']
    """
    return sorted(SPECS)


def ground_truth_data(name: str, data_dir: str | os.PathLike[str] | None = None) -> GroundTruthData:
    """The whole factor grid of built-in ``name`` (``shapes2d`` or ``shapes2d-small``), its images read from the cache
    that ``load_data(name, data_dir=...)`` uses (drawn and written first when missing).

    >>> data = ground_truth_data("shapes2d-small")                               # doctest: +SKIP
    >>> data.observations(np.array([[2, 2, 0, 3, 4]])).shape                     # doctest: +SKIP
    torch.Size([1, 1, 32, 32])
    """
    if name not in SPECS:
        raise DataError(f"no ground-truth factors for {name!r}{did_you_mean(name, SPECS)}; "
                        f"datasets with known factors: {', '.join(list_ground_truth_data())}")
    return Shapes2D(SPECS[name], cache_folder(data_dir))
