"""Test metrics computed the same way for every variant: -ELBO, its terms, its reported metrics, and the IWAE estimate.

>>> import vaezoo, torch
>>> from vaezoo.eval.evaluate import evaluate
>>> model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,))
>>> {"kl", "neg_elbo", "nll"} <= set(evaluate(model, torch.rand(32, 16), iw_samples=10))
True
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vaezoo.core.contract import MetricValue
from vaezoo.core.model import VAE
from vaezoo.errors import PluginError


@torch.no_grad()
def evaluate(
    model: VAE, x: Tensor, y: Tensor | None = None, iw_samples: int = 0, batch_size: int = 500, seed: int | None = 0,
    iw_examples: int | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Mean per-example metrics in nats: ``neg_elbo``, ``recon``, ``kl``, variant terms, and ``nll``
    (importance-weighted with ``iw_samples`` samples) when ``iw_samples > 0`` and the variant has one.
    A variant without an ELBO (``capabilities.elbo`` False, see NO_ELBO) has no ``neg_elbo`` and ``kl`` here;
    its ``loss`` (the batch-weighted mean of forward's objective) is reported instead.
    Each metric the variant reports (``VAEOutput.metrics``, named in its ``reported_metrics``) is averaged
    over the data under its name: a float, or a dict of floats for a metric of named parts (e.g. per layer).
    Also ``samples_per_s`` of the -ELBO pass. With a ``seed`` the latent noise is fixed, so the same
    weights give the same figures (the global RNG is left as it was). ``iw_examples`` limits the costly
    NLL estimate to the first N examples (reported as ``nll_examples``). For images, ``neg_elbo_bits_per_dim``
    and ``nll_bits_per_dim`` are the same figures in bits per pixel value (``BITS_PER_DIM_OF`` says what they
    measure under each likelihood). ``progress`` draws a bar over the batches on stderr, when it is a terminal."""
    iw_n = min(x.shape[0], iw_examples) if iw_examples else x.shape[0]
    iw_batches = math.ceil(iw_n / _iw_batch(batch_size, iw_samples)) if iw_samples > 0 and model.has_log_likelihood else 0
    total = math.ceil(x.shape[0] / batch_size) + iw_batches
    with torch.random.fork_rng(devices=[]), tqdm(total=total, desc="-ELBO", unit="batch", leave=False, dynamic_ncols=True,
                                                  disable=None if progress else True) as bar:
        if seed is not None:
            torch.manual_seed(seed)
        return _evaluate(model, x, y, iw_samples, batch_size, iw_examples, bar)


def _evaluate(model: VAE, x: Tensor, y: Tensor | None, iw_samples: int, batch_size: int,
              iw_examples: int | None, bar: tqdm) -> dict[str, Any]:
    was_training = model.training
    model.eval()
    device = model.device
    totals: dict[str, float] = {}
    reported: dict[str, float | dict[str, float]] = {}  # sums over examples of the variant's reported metrics
    n = x.shape[0]
    start = time.perf_counter()
    for begin in range(0, n, batch_size):
        xb = x[begin : begin + batch_size].to(device)
        yb = None if y is None else y[begin : begin + batch_size].to(device)
        out = model(xb, yb)
        weight = xb.shape[0]
        if model.capabilities.elbo:
            batch_metrics = {"neg_elbo": out.neg_elbo.sum(), "recon": out.recon * weight, "kl": out.kl * weight}
        else:  # its neg_elbo and kl are +inf, not figures (NO_ELBO): its own objective takes their place
            batch_metrics = {"loss": out.loss * weight, "recon": out.recon * weight}
        batch_metrics.update({name: value * weight for name, value in out.terms.items()})
        for name, value in batch_metrics.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        for name, value in out.metrics.items():
            _accumulate(reported, name, value, weight, model)
        bar.update()
    elapsed = time.perf_counter() - start
    metrics: dict[str, Any] = {name: value / n for name, value in totals.items()}
    for name, total in reported.items():  # a metric that is also a term overwrites it with the same figure
        metrics[name] = {part: value / n for part, value in total.items()} if isinstance(total, dict) else total / n
    metrics["samples_per_s"] = n / max(elapsed, 1e-9)
    if iw_samples > 0 and model.has_log_likelihood:
        iw_batch = _iw_batch(batch_size, iw_samples)
        total = 0.0
        n = min(n, iw_examples) if iw_examples else n
        bar.set_description(f"NLL ({iw_samples} importance samples)")
        for begin in range(0, n, iw_batch):
            end = min(begin + iw_batch, n)  # the last batch stops at n: the sum is divided by n
            xb = x[begin:end].to(device)
            yb = None if y is None else y[begin:end].to(device)
            total -= float(model.log_likelihood(xb, yb, iw_samples=iw_samples).sum())
            bar.update()
        metrics["nll"] = total / n
        metrics["iw_samples"] = iw_samples
        metrics["nll_examples"] = n
    _add_bits_per_dim(metrics, model, x)
    model.train(was_training)
    return metrics


NO_ELBO = ("no -ELBO: q(z | x) has no density (capabilities.elbo is False; e.g. a deterministic encoder, whose "
           "KL(q(z | x) || p(z)) to the continuous prior is infinite)")  # why neg_elbo and kl are n/a

BITS_PER_DIM_OF = {  # what bits/dim measures under each likelihood: only the discrete one compares with published figures
    "logistic_mixture": "the 256 values of 8-bit pixels: the discrete bits/dim that PixelCNN++ and VDVAE report",
    "bernoulli": "[0, 1] values under a Bernoulli likelihood, not 8-bit pixels: not comparable with published bits/dim",
    "gaussian": "continuous values under a Gaussian density, not 8-bit pixels: not comparable with published bits/dim",
}


def bits_per_dim(nats: float, input_shape: tuple[int, ...]) -> float:
    """nats per example / (values per example * ln 2): the unit image likelihoods are reported in.

    >>> round(bits_per_dim(784 * math.log(2), (1, 28, 28)), 6)
    1.0
    """
    return nats / (math.prod(input_shape) * math.log(2))


def _add_bits_per_dim(metrics: dict[str, Any], model: VAE, x: Tensor) -> None:
    """``neg_elbo_bits_per_dim`` and ``nll_bits_per_dim`` (where there is an NLL) for images; BITS_PER_DIM_OF says
    what they measure under the model's likelihood. Where NaN marks missing values (miwae), the nats are of the
    observed values only, so they are divided by the observed values of the examples each figure averages."""
    if not model.config.is_image:
        return
    observed = (~torch.isnan(x)).flatten(1).sum(1).double()  # (N,) values scored per example
    for name in ("neg_elbo", "nll"):
        if name in metrics:
            examples = metrics["nll_examples"] if name == "nll" else len(x)
            values = float(observed[:examples].mean())
            metrics[f"{name}_bits_per_dim"] = metrics[name] / (values * math.log(2))


def _iw_batch(batch_size: int, iw_samples: int) -> int:
    """Examples per importance-weighted batch: about 20,000 forward passes at a time."""
    return max(1, min(batch_size, 20_000 // max(iw_samples, 1)))


def _accumulate(sums: dict[str, Any], name: str, value: MetricValue, weight: int, model: VAE) -> None:
    """Add ``weight`` times one batch's mean of a reported metric (a scalar, or a dict of named scalars) to ``sums``.

    The product is taken before ``float`` like the terms', so a metric that is also a term gets the same figure.
    """
    if isinstance(value, dict):
        parts = sums.setdefault(name, {})
        for part, part_value in value.items():
            parts[part] = parts.get(part, 0.0) + float(_scalar(part_value, f"{name}[{part!r}]", model) * weight)
    else:
        sums[name] = sums.get(name, 0.0) + float(_scalar(value, name, model) * weight)


def _scalar(value: Any, name: str, model: VAE) -> Any:
    """``value`` if it is one number (a batch mean), else PluginError naming the variant and the metric."""
    if isinstance(value, Tensor) and value.numel() != 1:
        raise PluginError(f"{type(model).__name__}.forward reported metric {name} with shape {tuple(value.shape)}; "
                          "VAEOutput.metrics holds batch means: reduce it to a scalar (e.g. value.mean())")
    return value
