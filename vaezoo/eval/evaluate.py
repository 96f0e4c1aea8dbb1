"""Test metrics computed the same way for every variant: -ELBO, its terms, and the IWAE estimate.

>>> import vaezoo, torch
>>> from vaezoo.evaluation import evaluate
>>> model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,))
>>> sorted(evaluate(model, torch.rand(32, 16), iw_samples=10))[:3]
['kl', 'neg_elbo', 'nll']
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from vaezoo.core.model import VAE


@torch.no_grad()
def evaluate(
    model: VAE, x: Tensor, y: Tensor | None = None, iw_samples: int = 0, batch_size: int = 500, seed: int | None = 0,
    iw_examples: int | None = None,
) -> dict[str, float]:
    """Mean per-example metrics in nats: ``neg_elbo``, ``recon``, ``kl``, variant terms, and ``nll``
    (importance-weighted with ``iw_samples`` samples) when ``iw_samples > 0`` and the variant has one.
    Also ``samples_per_s`` of the -ELBO pass. With a ``seed`` the latent noise is fixed, so the same
    weights give the same figures (the global RNG is left as it was). ``iw_examples`` limits the costly
    NLL estimate to the first N examples (reported as ``nll_examples``)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return _evaluate(model, x, y, iw_samples, batch_size, iw_examples)


def _evaluate(model: VAE, x: Tensor, y: Tensor | None, iw_samples: int, batch_size: int,
              iw_examples: int | None) -> dict[str, float]:
    was_training = model.training
    model.eval()
    device = model.device
    totals: dict[str, float] = {}
    n = x.shape[0]
    start = time.perf_counter()
    for begin in range(0, n, batch_size):
        xb = x[begin : begin + batch_size].to(device)
        yb = None if y is None else y[begin : begin + batch_size].to(device)
        out = model(xb, yb)
        weight = xb.shape[0]
        batch_metrics = {"neg_elbo": out.neg_elbo.sum(), "recon": out.recon * weight, "kl": out.kl * weight}
        batch_metrics.update({name: value * weight for name, value in out.terms.items()})
        for name, value in batch_metrics.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    elapsed = time.perf_counter() - start
    metrics = {name: value / n for name, value in totals.items()}
    metrics["samples_per_s"] = n / max(elapsed, 1e-9)
    if iw_samples > 0 and model.has_log_likelihood:
        iw_batch = max(1, min(batch_size, 20_000 // iw_samples))
        total = 0.0
        n = min(n, iw_examples) if iw_examples else n
        for begin in range(0, n, iw_batch):
            xb = x[begin : begin + iw_batch].to(device)
            yb = None if y is None else y[begin : begin + iw_batch].to(device)
            total -= float(model.log_likelihood(xb, yb, iw_samples=iw_samples).sum())
        metrics["nll"] = total / n
        metrics["iw_samples"] = iw_samples
        metrics["nll_examples"] = n
    model.train(was_training)
    return metrics
