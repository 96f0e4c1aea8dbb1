"""Anomaly detection: per-example -ELBO or importance-weighted -log p(x) scores, thresholded on normal data."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vaezoo.apps._common import as_batch, check_choice, model_label, renamed_keyword, seeded
from vaezoo.core.model import VAE
from vaezoo.errors import CapabilityError, InputError

ANOMALY_METHODS = ("elbo", "iwae")
IW_SAMPLES = 100  # importance samples per example for method="iwae" unless given


def _default(iw_samples: int | None) -> int:
    return IW_SAMPLES if iw_samples is None else iw_samples


def _every_label(model: VAE, xb: Tensor, score: Callable[[Tensor], Tensor]) -> Tensor:
    """score(labels) for every label of a conditional model, stacked: (num_classes, B)."""
    return torch.stack([score(torch.full((xb.shape[0],), c, dtype=torch.long, device=xb.device))
                        for c in range(model.config.num_classes)])


@torch.no_grad()
def neg_elbo_scores(model: VAE, x: Tensor, y: Tensor | None = None, batch_size: int = 500, seed: int = 0) -> Tensor:
    """Per-example -ELBO, (N,). A conditional model is scored without labels: the minimum over all labels."""
    if not model.capabilities.elbo:
        raise CapabilityError(f"{model_label(model)} has no -ELBO to score by (capabilities.elbo is False: q(z | x) has "
                              "no density); score it by its reconstruction error instead")

    def score(xb: Tensor) -> Tensor:
        if model.is_conditional:
            return _every_label(model, xb, lambda y: model(xb, y).neg_elbo).min(dim=0).values
        return model(xb).neg_elbo

    return _batched(model, x, score, batch_size, seed)


def _batched(model: VAE, x: Tensor, score: Callable[[Tensor], Tensor], batch_size: int, seed: int) -> Tensor:
    """``score`` of each batch of x on the model's device, seeded and in eval mode, concatenated on the CPU: (N,)."""
    model.eval()
    with seeded(seed):
        scores = [score(x[begin:begin + batch_size].to(model.device)).float().cpu()
                  for begin in range(0, x.shape[0], batch_size)]
    return torch.cat(scores) if scores else torch.zeros(0)  # no examples: no scores


def nll_scores(model: VAE, x: Tensor, iw_samples: int | None = None, batch_size: int = 100, seed: int = 0, *,
               k: int | None = None) -> Tensor:
    """Per-example importance-weighted -log p(x) with ``iw_samples`` samples (default 100; Burda et al. 2016, eq. 8), (N,).

    A conditional model is scored without labels under a uniform p(y):
    -log p(x) = -log (1/C) sum_y p(x | y). (``k=`` is the old name of ``iw_samples``.)
    """
    iw_samples = _default(renamed_keyword("iw_samples", iw_samples, "k", k, "nll_scores"))
    with torch.no_grad():
        return _nll_scores(model, x, iw_samples, batch_size, seed)


def _nll_scores(model: VAE, x: Tensor, k: int, batch_size: int, seed: int) -> Tensor:
    if not model.capabilities.log_likelihood:
        raise CapabilityError(f"{model_label(model)} has no importance-weighted likelihood; score it by -ELBO "
                              "(method='elbo', --method elbo)")

    def score(xb: Tensor) -> Tensor:
        if model.is_conditional:
            per_label = _every_label(model, xb, lambda y: model.log_likelihood(xb, y, iw_samples=k))  # (C, B)
            return -(torch.logsumexp(per_label, 0) - math.log(model.config.num_classes))
        return -model.log_likelihood(xb, iw_samples=k)

    return _batched(model, x, score, batch_size, seed)


def anomaly_scores(model: VAE, x: Tensor, method: str = "elbo", iw_samples: int | None = None, seed: int = 0, *,
                   k: int | None = None) -> Tensor:
    """How unlikely each example is under the model, in nats (higher = more anomalous), (N,): ``elbo`` scores
    by -ELBO, ``iwae`` by the importance-weighted -log p(x) with ``iw_samples`` samples (tighter, that many times slower)."""
    iw_samples = _default(renamed_keyword("iw_samples", iw_samples, "k", k, "anomaly_scores"))
    check_choice(method, ANOMALY_METHODS, "method")
    x = as_batch(model, x)
    return neg_elbo_scores(model, x, seed=seed) if method == "elbo" else _nll_scores(model, x, iw_samples, 100, seed)


@dataclass
class AnomalyReport:
    """Scores of examples, the threshold they were judged against, and how well that separates, when known."""

    scores: Tensor  # (N,) nats, higher = more anomalous
    flagged: Tensor  # (N,) bool, scores > threshold
    threshold: float  # the quantile of the reference (normal) scores
    quantile: float
    method: str  # "elbo" or "iwae"
    is_anomaly: Tensor | None = None  # (N,) bool ground truth, when known
    auroc: float | None = None  # area under the ROC curve of scores for is_anomaly, when both kinds are present

    def summary(self) -> str:
        """One line: threshold, how many are flagged, and the AUROC when known."""
        text = (f"threshold {self.threshold:.2f} nats (-{'ELBO' if self.method == 'elbo' else 'log p(x)'}, "
                f"{self.quantile:.3g} quantile of the reference); flagged {int(self.flagged.sum())} of {len(self.scores)}")
        if self.is_anomaly is not None:
            detected = int((self.flagged & self.is_anomaly).sum())
            text += f" ({detected} of {int(self.is_anomaly.sum())} true anomalies)"
        if self.auroc is not None:
            text += f"; AUROC {self.auroc:.4f}"
        return text


def detect_anomalies(model: VAE, x: Tensor, reference: Tensor, *, is_anomaly: Tensor | None = None,
                     method: str = "elbo", quantile: float = 0.95, iw_samples: int | None = None, seed: int = 0,
                     k: int | None = None) -> AnomalyReport:
    """Score ``x``, flag those above the ``quantile`` of the scores of ``reference`` (normal examples the
    model did not train on, e.g. the validation split), and, given the truth ``is_anomaly``, the AUROC.

    The seed's recipe (section 7): anomalous data is less likely under a model of the normal data.

    >>> report = apps.detect_anomalies(model, test_x, reference=val_x, is_anomaly=test_y == 0)  # doctest: +SKIP
    >>> report.auroc  # doctest: +SKIP
    """
    iw_samples = _default(renamed_keyword("iw_samples", iw_samples, "k", k, "detect_anomalies"))
    if not (isinstance(quantile, (int, float)) and 0 < quantile < 1):
        raise InputError(f"quantile={quantile!r} must be in (0, 1), e.g. 0.95 flags 5% of normal examples")
    if len(reference) == 0:
        raise InputError("reference holds no examples; pass normal examples (e.g. the validation split) "
                         "to set the threshold")
    scores = anomaly_scores(model, x, method, iw_samples, seed)
    threshold = float(torch.quantile(anomaly_scores(model, reference, method, iw_samples, seed).double(), quantile))
    report = AnomalyReport(scores, scores > threshold, threshold, float(quantile), method)
    if is_anomaly is not None:
        if tuple(is_anomaly.shape) != (len(scores),):
            raise InputError(f"is_anomaly has shape {tuple(is_anomaly.shape)}; "
                             f"pass one bool per example, ({len(scores)},)")
        report.is_anomaly = is_anomaly.bool().cpu()
        if 0 < int(report.is_anomaly.sum()) < len(scores):
            from sklearn.metrics import roc_auc_score  # here: scikit-learn is only needed when the truth is given

            report.auroc = float(roc_auc_score(report.is_anomaly.numpy(), scores.numpy()))
    return report
