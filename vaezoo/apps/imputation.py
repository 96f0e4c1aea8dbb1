"""Imputation: missing values filled by iterated reconstruction or by Metropolis-within-Gibbs; observed values kept."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from vaezoo.apps._common import check_choice, check_examples, checked_labels, compute_dtype, model_label, seeded
from vaezoo.core.distributions import standard_normal_log_prob
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count, value_problem
from vaezoo.errors import CapabilityError, InputError

logger = logging.getLogger(__name__)

IMPUTATION_ITERATIONS = 20  # iterated reconstruction: enough to converge on digits and Fashion-MNIST
MWG_ITERATIONS = 300  # Metropolis-within-Gibbs chain length; the first quarter is burn-in
IMPUTATION_METHODS = ("iterate", "mwg")


def bottom_half_mask(input_shape: tuple[int, ...]) -> Tensor:
    """(1, C, H, W) bool mask, True on the hidden pixels: the bottom half of the rows."""
    channels, height, width = input_shape
    mask = torch.zeros(1, channels, height, width, dtype=torch.bool)
    mask[:, :, height // 2:, :] = True
    return mask


def observed_mean_fill(x: Tensor, hidden: Tensor) -> Tensor:
    """(1, *shape): each feature's mean over the examples where it is observed (0.5 where it never is)."""
    observed = (~hidden).to(x.dtype)
    total = torch.where(hidden, torch.zeros_like(x), x).sum(0, keepdim=True)
    count = observed.sum(0, keepdim=True)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, 0.5))


def _imputation_inputs(model: VAE, x: Tensor, hidden: Tensor | None, fill: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Check x and the mask; return (x with missing values filled, in the model's dtype; hidden (B, ...); fill)."""
    check_examples(model, x)
    if torch.isinf(x).any():
        raise InputError("x holds Inf values; mark missing values with NaN (or a mask), not Inf")
    missing = torch.isnan(x)
    if hidden is None:
        hidden = missing
    else:
        if not isinstance(hidden, Tensor) or hidden.dtype != torch.bool:
            got = getattr(hidden, "dtype", type(hidden).__name__)
            raise InputError(f"the mask must be a bool tensor (True = missing), got {got}")
        try:
            hidden = hidden.to(x.device).expand_as(x) | missing
        except RuntimeError:
            raise InputError(f"the mask has shape {tuple(hidden.shape)} but x has {tuple(x.shape)}; "
                             "give one bool per value of x (True = missing)") from None
    dtype = compute_dtype(model)
    values = torch.where(hidden, torch.zeros((), dtype=x.dtype, device=x.device), x).to(model.device, dtype)
    hidden = hidden.to(model.device)
    problem = value_problem(values, model.config.likelihood)  # the missing values are 0 here: only observed ones count
    if problem:
        raise InputError(f"x {problem}")
    fill = observed_mean_fill(values, hidden) if fill is None else fill.to(model.device, dtype)
    return torch.where(hidden, fill.expand_as(values), values), hidden, fill


@torch.no_grad()
def impute(model: VAE, x: Tensor, hidden: Tensor | None = None, fill: Tensor | None = None, y: Tensor | None = None,
           iterations: int | None = None, method: str = "iterate", burn_in: int | None = None,
           seed: int | None = None) -> Tensor:
    """Fill missing values of x with the model; observed values are returned bit for bit.

    ``hidden`` (bool, True = missing, broadcastable to x) marks what to fill; NaN in x is missing too,
    and with no mask NaN is all that is. ``fill`` starts the missing values (default: each feature's
    mean where observed). Methods:

    - ``iterate``: iterated reconstruction (Rezende et al. 2014, arXiv:1401.4082, sec. 5.3): the missing
      values become the reconstruction of the current guess, ``iterations`` times (default 20). Any variant.
    - ``mwg``: Metropolis-within-Gibbs (Mattei and Frellsen 2018, arXiv:1802.02484, algorithm 1), a
      Markov chain whose stationary law is the model's p(z, x_mis | x_obs); returns the chain's mean
      of E[x_mis | z] after ``burn_in`` (default a quarter of ``iterations``, default 300). Needs one
      Gaussian latent with an N(0, I) prior: a model whose ``capabilities.mwg_imputation`` is set.

    x: (B, *input_shape), any float dtype; returns the same shape and dtype, on x's device.

    >>> filled = apps.impute(model, x_with_nans)                                   # doctest: +SKIP
    >>> filled = apps.impute(model, x, apps.bottom_half_mask((1, 8, 8)), method="mwg", seed=0)  # doctest: +SKIP
    """
    check_choice(method, IMPUTATION_METHODS, "method")
    if method == "mwg" and not model.capabilities.mwg_imputation:
        raise CapabilityError(f"{model_label(model)} does not support Metropolis-within-Gibbs imputation (it needs one "
                              "Gaussian latent q(z | x) under an N(0, I) prior); use method='iterate'")
    if iterations is None:
        iterations = IMPUTATION_ITERATIONS if method == "iterate" else MWG_ITERATIONS
    check_count(iterations, "iterations")
    start, hidden_full, _ = _imputation_inputs(model, x, hidden, fill)
    y = checked_labels(model, y, x.shape[0])
    model.eval()
    with seeded(seed):
        if method == "iterate":
            imputed = _iterated_reconstruction(model, start, hidden_full, y, iterations)
        else:
            burn_in = iterations // 4 if burn_in is None else burn_in
            if not 0 <= burn_in < iterations:
                raise InputError(f"burn_in={burn_in} must be in 0..{iterations - 1} (iterations={iterations})")
            imputed = _metropolis_within_gibbs(model, start, hidden_full, y, iterations, burn_in)
    result = x.clone()
    hidden_here = hidden_full.to(x.device)
    result[hidden_here] = imputed.to(x.device, x.dtype)[hidden_here]
    return result


def _iterated_reconstruction(model: VAE, start: Tensor, hidden: Tensor, y: Tensor | None, iterations: int) -> Tensor:
    current = start
    for _ in range(iterations):
        current = torch.where(hidden, model.reconstruct(current, y), start)
    return current


def _metropolis_within_gibbs(model: VAE, start: Tensor, hidden: Tensor, y: Tensor | None, iterations: int,
                             burn_in: int) -> Tensor:
    """Mattei and Frellsen 2018, algorithm 1. Each step, with the completed x_t = (x_obs, x_mis):

        z' ~ q(z | x_t),   accept with prob min(1, p(x_t | z') p(z') q(z | x_t) / (p(x_t | z) p(z) q(z' | x_t)))
        x_mis ~ p(x_mis | z)      (the decoder factorises over values, so this is exact)

    The encoder is only the proposal: the accept step corrects it, so the chain targets the model's
    own p(z, x_mis | x_obs), unlike iterated reconstruction. The model declares that it fits
    (``capabilities.mwg_imputation``: one Gaussian latent, an N(0, I) prior).
    """

    def log_joint(z: Tensor, x: Tensor) -> Tensor:  # log p(x | z) + log p(z), (B,)
        return model.likelihood.log_prob(model.decode(z, y), x) + standard_normal_log_prob(z)

    current, z = start, model.encode(start, y).rsample()
    total, kept, accepted = torch.zeros_like(start), 0, 0.0
    for step in range(iterations):
        posterior = model.encode(current, y)
        proposal = posterior.rsample()
        log_ratio = (log_joint(proposal, current) - posterior.log_prob(proposal)
                     - log_joint(z, current) + posterior.log_prob(z))  # (B,)
        accept = torch.rand_like(log_ratio).log() < log_ratio
        z = torch.where(accept.view(-1, *([1] * (z.dim() - 1))), proposal, z)
        params = model.decode(z, y)
        current = torch.where(hidden, model.likelihood.sample(params), start)
        accepted += float(accept.float().mean())
        if step >= burn_in:
            total += model.likelihood.mean(params)
            kept += 1
    logger.info("Metropolis-within-Gibbs: acceptance rate %.3f over %d steps", accepted / iterations, iterations)
    return torch.where(hidden, total / kept, start)
