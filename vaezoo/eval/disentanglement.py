"""All five disentanglement scores of a representation in one call, at disentanglement_lib's sample counts or small ones.

The metrics themselves are in vaezoo.eval.disentanglement_metrics. Each gets its own generator from ``seed``
(as disentanglement_lib evaluates every metric with ``evaluation.random_seed = 0``), so a score does not
depend on which others were computed, and the same seed gives the same numbers.

>>> from vaezoo.eval.disentanglement import disentanglement_scores
>>> scores = disentanglement_scores(lambda x: model.encode_mean(x), data, seed=0)  # doctest: +SKIP
>>> sorted(scores)  # doctest: +SKIP
['beta_vae_score', 'dci_completeness', 'dci_disentanglement', 'dci_informativeness', 'factor_vae_score', 'mig', 'sap']
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from vaezoo.core.validation import check_count
from vaezoo.errors import ConfigError
from vaezoo.eval.disentanglement_metrics import beta_vae_score, dci, factor_vae_score, mig, sap
from vaezoo.eval.factor_codes import GroundTruthData, Represent, check_factors

logger = logging.getLogger(__name__)

# disentanglement_lib's config/unsupervised_study_v1/metric_configs/{beta_vae_sklearn,factor_vae_metric,mig,
# sap_score,dci}.gin (Locatello et al. 2019): about 2.9 million observations encoded in all.
FULL_SIZES: dict[str, dict[str, Any]] = {
    "beta_vae_score": {"batch_size": 64, "num_train": 10000, "num_eval": 5000},
    "factor_vae_score": {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000},
    "mig": {"num_train": 10000},
    "sap": {"num_train": 10000, "num_test": 5000},
    "dci": {"num_train": 10000, "num_test": 5000},
}
# For tests and ``--quick``: the same procedures on a twentieth to a fifth of the points (about 250,000 observations).
SMALL_SIZES: dict[str, dict[str, Any]] = {
    "beta_vae_score": {"batch_size": 64, "num_train": 1000, "num_eval": 500},
    "factor_vae_score": {"batch_size": 64, "num_train": 500, "num_eval": 250, "num_variance_estimate": 1000},
    "mig": {"num_train": 2000},
    "sap": {"num_train": 2000, "num_test": 1000},
    "dci": {"num_train": 1000, "num_test": 500},
}
METRICS = {"beta_vae_score": beta_vae_score, "factor_vae_score": factor_vae_score, "mig": mig, "sap": sap, "dci": dci}
SCORE_NAMES = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
               "dci_informativeness")


def disentanglement_scores(represent: Represent, data: GroundTruthData, seed: int = 0, *,
                           small: bool = False) -> dict[str, float]:
    """The seven scores (``SCORE_NAMES``) of ``represent`` on ``data``: disentanglement_lib's sample counts
    (``FULL_SIZES``), or ``SMALL_SIZES`` with ``small``. Each metric's time is logged at INFO.

    >>> disentanglement_scores(lambda x: x, data, small=True)["mig"]  # doctest: +SKIP
    1.0
    """
    check_factors(data)
    check_count(seed, "seed", minimum=0, error=ConfigError)
    sizes = SMALL_SIZES if small else FULL_SIZES
    scores: dict[str, float] = {}
    for name, metric in METRICS.items():
        start = time.perf_counter()
        value = metric(represent, data, np.random.default_rng(seed), **sizes[name])
        scores.update(value if isinstance(value, dict) else {name: value})
        logger.info("%s took %.1f s", name, time.perf_counter() - start)
    return {name: scores[name] for name in SCORE_NAMES}
