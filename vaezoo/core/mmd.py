"""Maximum mean discrepancy between two samples: its kernels and the unbiased MMD^2 estimator.

The squared MMD of distributions P and Q under a kernel k (Gretton et al. 2012, "A Kernel Two-Sample Test",
JMLR 13, lemma 6) has the unbiased estimator, from x_1..x_n ~ Q and y_1..y_m ~ P,

    MMD^2_u = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j)

which is what Tolstikhin et al.'s WAE-MMD penalty computes (2018, arXiv:1711.01558, Algorithm 2; their reference
code, tolstikhin/wae, wae.py ``mmd_penalty``). Two kernels, each a sum over ``scales`` s of one kernel with
C = s * 2 * D * sigma^2 (D the latent size, sigma the prior's scale: 2 D sigma^2 = E||y - y'||^2 under N(0, sigma^2 I)):

    imq   k(x, y) = C / (C + ||x - y||^2)      inverse multiquadric (Tolstikhin et al., section 4; scales .1 .. 10)
    rbf   k(x, y) = exp(-||x - y||^2 / C)      Gaussian, with pythae's C (clementchadebec/benchmark_VAE,
                                               src/pythae/models/wae_mmd/wae_mmd_model.py ``rbf_kernel``)

A sum of characteristic kernels is characteristic, so MMD = 0 still means P = Q; the scales spread the kernel's
sensitivity over distances the fixed C would miss (the reference code's reason for the IMQ sum). The estimate is
unbiased, hence near 0 (and possibly negative) for two samples of one distribution.

>>> import torch
>>> torch.manual_seed(0) is not None
True
>>> same = mmd_squared(torch.randn(200, 2), torch.randn(200, 2))
>>> shifted = mmd_squared(torch.randn(200, 2) + 2.0, torch.randn(200, 2))
>>> bool(abs(same) < 0.02 < shifted)
True
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vaezoo.errors import ConfigError, InputError, did_you_mean

KERNELS = ("imq", "rbf")
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # Tolstikhin et al.'s reference code (wae.py, mmd_penalty)


def check_kernel(kernel: str, bandwidth: float, scales: Sequence[float], *, error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` naming the bad value when the kernel is unknown, sigma is not > 0 or a scale is not > 0.

    The configs of InfoVAE and WAE call it from ``__post_init__``.

    >>> check_kernel("imq", 1.0, IMQ_SCALES)
    >>> check_kernel("imk", 1.0, (1.0,))
    Traceback (most recent call last):
    ...
    vaezoo.errors.ConfigError: kernel='imk' is unknown; use one of imq, rbf (did you mean 'imq'?)
    """
    if kernel not in KERNELS:
        raise error(f"kernel={kernel!r} is unknown; use one of {', '.join(KERNELS)}" + did_you_mean(str(kernel), KERNELS))
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not 0 < bandwidth < math.inf:
        raise error(f"kernel_bandwidth={bandwidth!r} must be a number > 0: the prior's scale sigma (1 for N(0, I))")
    if not isinstance(scales, (tuple, list)) or not scales:
        raise error(f"kernel_scales={scales!r} must be a non-empty tuple of numbers > 0, e.g. (1.0,) or {IMQ_SCALES}")
    bad = [s for s in scales if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf]
    if bad:
        raise error(f"kernel_scales={tuple(scales)!r} holds {bad[0]!r}; every scale must be a number > 0")


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """||x_i - y_j||^2 for every pair, (n, D) and (m, D) -> (n, m).

    Expanded as ||x||^2 + ||y||^2 - 2 x.y (no (n, m, D) tensor, and a finite gradient at x_i = y_j, where the
    norm's is not), clamped at 0 against rounding.
    """
    cross = x @ y.transpose(0, 1)  # (n, m)
    return (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * cross).clamp_min(0.0)


def kernel_matrix(x: Tensor, y: Tensor, kernel: str = "imq", bandwidth: float = 1.0,
                  scales: Sequence[float] = (1.0,)) -> Tensor:
    """k(x_i, y_j) for every pair, summed over ``scales``: (n, D) and (m, D) -> (n, m).

    >>> kernel_matrix(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]])).item()  # C = 2 * 2 * 1 = 4: 4 / (4 + 4)
    0.5
    """
    check_kernel(kernel, bandwidth, scales, error=InputError)
    distances = squared_distances(x, y)  # (n, m)
    base = 2.0 * x.shape[1] * bandwidth**2  # E||y - y'||^2 for y, y' ~ N(0, sigma^2 I_D)
    total = torch.zeros_like(distances)
    for scale in scales:
        c = scale * base
        total = total + (c / (c + distances) if kernel == "imq" else torch.exp(-distances / c))
    return total


def mmd_squared(x: Tensor, y: Tensor, kernel: str = "imq", bandwidth: float = 1.0,
                scales: Sequence[float] = (1.0,)) -> Tensor:
    """The unbiased estimate MMD^2_u of two samples x (n, D) ~ Q and y (m, D) ~ P, a scalar (module docstring).

    Computed in float32 or wider. With fewer than two draws on either side the within-sample means have no
    pairs, so there is no estimate: it returns 0 (a batch of one example says nothing about the spread of Q).

    >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [3.0]])  # IMQ, C = 2: k(a, b) = 2 / (2 + (a - b)^2)
    >>> round(mmd_squared(x, y).item(), 6) == round(2/3 + 2/11 - 2 * (1 + 2/11 + 2/3 + 2/6) / 4, 6)
    True
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise InputError(f"mmd_squared takes two samples (n, D) and (m, D) of one D; got shapes {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    n, m = x.shape[0], y.shape[0]
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    if n < 2 or m < 2:
        return x.new_zeros((), dtype=dtype)
    x, y = x.to(dtype), y.to(dtype)
    k_xx = kernel_matrix(x, x, kernel, bandwidth, scales)  # (n, n)
    k_yy = kernel_matrix(y, y, kernel, bandwidth, scales)  # (m, m)
    k_xy = kernel_matrix(x, y, kernel, bandwidth, scales)  # (n, m)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))  # i != j only: unbiased
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * k_xy.mean()
