"""One model's benchmark record: the metrics measured for every variant, and where each variant's reported metrics go.

The benchmark names only the shared metrics. A variant's own figures are the names in its class
attribute ``reported_metrics``; every record holds each name that any benchmarked variant reports
(None, "n/a", for the variants that do not), between the model metrics and the downstream tasks.

>>> list(empty_record(["perplexity"]))[7:11]
['active_units', 'latent_dims', 'perplexity', 'probe_accuracy']
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vaezoo.errors import PluginError
from vaezoo.eval.disentanglement import SCORE_NAMES

# The shared metrics, in the order of the results table (and of each record).
MODEL_METRICS = ("nll", "nll_examples", "neg_elbo", "recon", "kl", "nll_bits_per_dim", "neg_elbo_bits_per_dim",
                 "active_units", "latent_dims")
TASK_METRICS = (
    "probe_accuracy", "anomaly_auroc", "imputation_mse", "imputation_mse_mean_fill", "recon_psnr", "recon_ssim",
    "recon_frechet_distance", "frechet_distance", "frechet_distance_gmm",
    "conditional_sample_accuracy", "parameters", "train_samples_per_s", "eval_samples_per_s", "peak_memory_mb",
    "train_seconds", "epochs",
)
METRIC_KEYS = MODEL_METRICS + TASK_METRICS  # in every record, whatever the variant
DISENTANGLEMENT_METRICS = SCORE_NAMES  # only in the records of data with known factors (shapes2d)
STATUS = "status"  # "ok", or "n/a: <why>" for a variant that could not be built or trained
NOT_REPORTED = "not reported by this variant"


def reported_metric_names(model_classes: Mapping[str, type]) -> list[str]:
    """The names that the classes (``{registry name: class}``) declare in ``reported_metrics``, in order of first
    appearance. A name that would overwrite a shared metric is a PluginError naming the variant."""
    names: dict[str, None] = {}
    for registry_name, model_class in model_classes.items():
        for metric in model_class.reported_metrics:
            if metric in METRIC_KEYS or metric in DISENTANGLEMENT_METRICS or metric == STATUS:
                raise PluginError(f"{registry_name} ({model_class.__name__}) declares reported metric {metric!r}, a name "
                                  "the benchmark measures for every variant; rename it in reported_metrics")
            names.setdefault(metric, None)
    return list(names)


def empty_record(reported: Iterable[str]) -> dict[str, Any]:
    """Every metric None ("n/a"): the model metrics, then the ``reported`` names, then the task metrics."""
    return {key: None for key in (*MODEL_METRICS, *reported, *TASK_METRICS)}


def table_rows(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The results table's rows: the status, the model metrics, each reported metric found in any record, the tasks,
    then the disentanglement scores where the data has known factors."""
    records = list(records)
    shared = {*METRIC_KEYS, *DISENTANGLEMENT_METRICS, STATUS}
    reported = dict.fromkeys(key for record in records for key in record if key not in shared)
    scored = [key for key in DISENTANGLEMENT_METRICS if any(key in record for record in records)]
    return [STATUS, *MODEL_METRICS, *reported, *TASK_METRICS, *scored]
