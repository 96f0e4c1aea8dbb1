"""The benchmark's pure measurements: active latent units and the Frechet distance between feature sets.

>>> import torch
>>> active_units(torch.tensor([[0.0, 1.0], [0.0, -1.0]]))  # dim 0 never moves, dim 1 does
1
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, sec. 5.2


def active_units(means: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dims whose posterior mean varies across inputs: Var_x(E_q[z_u]) > threshold.

    ``means`` is (N, D), one posterior mean per example.
    """
    return int((means.double().var(dim=0, unbiased=True) > threshold).sum())


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """d^2 = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) between two Gaussians (Dowson and Landau 1982).

    The symmetric form C_a^1/2 C_b C_a^1/2 has the same eigenvalues as C_a C_b but stays PSD, so its
    square root is taken by eigendecomposition without complex round-off.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    root_a = _sqrtm_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_cross = float(np.sqrt(np.clip(cross, 0, None)).sum())
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_cross)


def feature_frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, F) feature sets."""
    a, b = features_a.double().cpu().numpy(), features_b.double().cpu().numpy()
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
