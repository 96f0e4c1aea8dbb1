"""The zoo benchmark: train every variant under one budget and seed, then measure all of them with one code path.

>>> from vaezoo.bench import run_benchmark
>>> results = run_benchmark(["vae-mlp", "vq-vae"], "digits", epochs=15, out_dir="bench/digits")  # doctest: +SKIP

or ``vaezoo bench vae-mlp vq-vae --data digits --epochs 15 --out bench/digits``.

Per variant (metrics in nats per example on the test split; ``None`` = n/a, with the reason in ``notes``):

- likelihood: ``nll`` (importance-weighted, Burda et al. 2016, arXiv:1509.00519; n/a without
  ``capabilities.log_likelihood``), ``neg_elbo``, ``recon``, ``kl``; for images ``nll_bits_per_dim`` and
  ``neg_elbo_bits_per_dim`` (nats / (C H W ln 2)), with a note saying whether the likelihood is the discrete
  8-bit one (``logistic_mixture``) that published bits/dim use;
- latents: ``active_units`` (Burda et al. 2016 sec. 5.2: dim u is active if Cov_x(E_q[z_u]) > 0.01;
  Gaussian posteriors only, a hierarchy's layers concatenated);
- the variant's own figures: every name in its ``reported_metrics`` (e.g. ``kl_per_layer``, ``perplexity``,
  ``code_usage``), averaged over the test split by vaezoo's evaluate; n/a for the variants that do not report it;
- ``probe_accuracy``: LogisticRegression on train posterior means (flattened), scored on test means;
- ``anomaly_auroc``: a second model trained without one class; AUROC of its -ELBO for "is that class";
- ``imputation_mse``: the bottom half of each test image filled by iterated reconstruction, vs. the
  training mean (``imputation_mse_mean_fill``);
- ``recon_psnr``, ``recon_ssim`` (scikit-image) and ``recon_frechet_distance`` (rFID-style: reconstructions vs
  originals in the classifier's features below) of the test images' reconstructions;
- ``frechet_distance``: between samples and test images in the features of the dataset's small CNN
  (vaezoo/eval/classifier.py); ``conditional_sample_accuracy`` for conditional variants;
- cost: ``parameters``, ``train_samples_per_s`` (median over epochs), ``eval_samples_per_s``,
  ``peak_memory_mb``, ``train_seconds``.

The modules: settings (resolving and checking them), budget (config, training or pretrained weights),
measure (one model's measurements), metrics (the pure math), record (a record's layout), report
(results.json, results.md, summary chart), figures (each model's figures); this one runs them in order.
"""
from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vaezoo.apps import IMPUTATION_ITERATIONS, bottom_half_mask, impute, neg_elbo_scores, posterior_means
from vaezoo.bench.budget import (
    PRETRAINED_TAG_FOR_DATA,
    build_seeded,
    epochs_for_minutes,
    load_pretrained,
    train_model,
)
from vaezoo.bench.figures import save_model_figures
from vaezoo.bench.measure import measure, measure_anomaly, peak_memory_mb
from vaezoo.bench.metrics import ACTIVE_UNIT_THRESHOLD, active_units, feature_frechet_distance, frechet_distance
from vaezoo.bench.record import METRIC_KEYS, NOT_REPORTED, STATUS, empty_record, reported_metric_names
from vaezoo.bench.report import machine_info, results_markdown, write_results
from vaezoo.bench.settings import (
    CLASS_SAMPLES,
    FD_MAX_EXAMPLES,
    FULL_DEFAULTS,
    PROBE_MAX_TRAIN,
    QUICK_DEFAULTS,
    check_holdout_class,
    resolve_settings,
    route_overrides,
)
from vaezoo.data import load_data
from vaezoo.errors import VAEZooError
from vaezoo.eval.feature_networks import load_feature_network
from vaezoo.zoo.registry import get_model_class

__all__ = [
    "ACTIVE_UNIT_THRESHOLD", "CLASS_SAMPLES", "FD_MAX_EXAMPLES", "FULL_DEFAULTS", "IMPUTATION_ITERATIONS", "METRIC_KEYS",
    "NOT_REPORTED", "PRETRAINED_TAG_FOR_DATA", "PROBE_MAX_TRAIN", "QUICK_DEFAULTS", "active_units", "bottom_half_mask",
    "feature_frechet_distance", "frechet_distance", "impute", "neg_elbo_scores", "posterior_means", "results_markdown",
    "run_benchmark",
]

logger = logging.getLogger(__name__)


def run_benchmark(
    names: list[str] | None,
    data: str | None,
    *,
    epochs: int | None = None,
    minutes: float | None = None,
    pretrained: bool = False,
    quick: bool = False,
    out_dir: str,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    iw_samples: int | None = None,
    iw_examples: int | None = None,
    holdout_class: int = 0,
    progress: bool = False,
    fd_features: str | None = None,
    fd_weights: str | None = None,
) -> dict[str, Any]:
    """Train (or load) each variant in ``names`` (default: every registered one) on ``data`` under one budget,
    measure them all the same way, and write results.json, results.md and figures to ``out_dir``.

    The budget is ``epochs`` per training stage, or ``minutes`` of training per model (converted to
    epochs from one timed probe epoch), or ``pretrained`` weights (each variant's tag trained on ``data``,
    e.g. ``name.fmnist``).
    ``quick`` defaults to digits, 15 epochs and 100 importance samples; ``iw_examples`` estimates the NLL
    on the first N test examples only (default all; reported as ``nll_examples``). ``overrides`` are model-config
    or TrainConfig fields (``--set``); a key is applied to the variants that have it. ``progress`` draws one
    bar per model on stderr, when it is a terminal, naming the step it is at (training, likelihood, ...).
    ``fd_features`` names a pretrained timm network (e.g. ``inception_v3.tv_in1k``) whose pooled features the
    Frechet distances use instead of the dataset's shipped classifier, which exists for vaezoo's datasets only
    (vaezoo.eval.feature_networks); its weights come from the Hub, or from the .safetensors file ``fd_weights``.

    >>> results = run_benchmark(["vae-mlp"], "digits", epochs=5, out_dir="bench/x")  # doctest: +SKIP
    >>> results["models"]["vae-mlp"]["probe_accuracy"]  # doctest: +SKIP
    0.93
    """
    settings = resolve_settings(names, data, epochs=epochs, minutes=minutes, pretrained=pretrained, quick=quick,
                                overrides=overrides, seed=seed, iw_samples=iw_samples, iw_examples=iw_examples,
                                holdout_class=holdout_class, out_dir=out_dir, fd_features=fd_features, fd_weights=fd_weights)
    names = settings["models"]
    if fd_features is not None:
        load_feature_network(fd_features, fd_weights)  # a bad name or file fails before any training (it is cached)
    reported = reported_metric_names({name: get_model_class(name) for name in names})
    splits = load_data(settings["data"], seed=0)
    check_holdout_class(holdout_class, splits.num_classes, settings["data"])
    model_overrides, train_overrides = route_overrides(settings["overrides"], names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"settings": settings, "machine": machine_info(), "models": {}, "notes": {}}
    for index, name in enumerate(names, 1):
        logger.info("benchmarking %s on %s", name, settings["data"])
        with tqdm(total=len(PHASES), desc=f"[{index}/{len(names)}] {name}", unit="step", leave=True, dynamic_ncols=True,
                  disable=None if progress else True) as bar:
            record, notes = _benchmark_one(name, splits, settings, reported, model_overrides[name],
                                           train_overrides[name], out, _phases(bar))
            if record[STATUS] == "ok":
                bar.update(bar.total - bar.n)
            bar.set_postfix_str(record[STATUS][:60])
        results["models"][name] = record
        results["notes"][name] = notes
    write_results(results, out)
    return results


PHASES = ("training", "likelihood", "latents and probe", "imputation", "sample quality", "anomaly detector", "figures")


def _phases(bar: tqdm) -> Callable[[str], None]:
    """``phase(label)``: count the running step of ``bar`` as done and show ``label`` as the one now running."""
    started: list[str] = []

    def phase(label: str) -> None:
        if started:
            bar.update()
        started.append(label)
        bar.set_postfix_str(label)
    return phase


def _benchmark_one(name: str, splits: Any, settings: dict[str, Any], reported: list[str], model_overrides: dict[str, Any],
                   train_overrides: dict[str, Any], out: Path,
                   phase: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, str]]:
    """One variant's record and notes: build it, train or load it, measure it, draw its figures; ``phase`` hears
    each of PHASES as it starts."""
    record, notes = empty_record(reported), {}
    record[STATUS] = "ok"
    model_class = get_model_class(name)
    build = {"input_shape": splits.input_shape, "num_classes": splits.num_classes, **model_overrides}
    try:
        if settings["pretrained"]:
            phase("loading weights")
            model = load_pretrained(name, splits, settings["data"], model_class)
            history, train_seconds, epochs = [], None, None
        else:
            model = build_seeded(name, settings["data"], model_class, settings["seed"], **build)
            phase(f"training, {settings['epochs']} epochs" if settings["epochs"] else f"training, {settings['minutes']} min")
            epochs = settings["epochs"] or epochs_for_minutes(model, splits, settings, train_overrides)
            history, train_seconds = train_model(model, splits, epochs, settings["seed"], train_overrides)
    except VAEZooError as error:  # one variant that cannot be built or trained must not stop the benchmark
        logger.warning("%s: %s", name, error)
        record[STATUS] = f"n/a: {error}"
        return record, {"all": str(error)}
    record.update(epochs=epochs, train_seconds=train_seconds, parameters=model.num_parameters())
    speeds = [r["samples_per_s"] for r in history if "samples_per_s" in r]
    record["train_samples_per_s"] = statistics.median(speeds) if speeds else None
    if not history:
        notes["train_samples_per_s"] = "pretrained weights: not trained here"
    measure(model, splits, settings, reported, record, notes, phase)
    phase("anomaly detector")
    measure_anomaly(name, model_class, splits, settings, build, epochs, train_overrides, record, notes)
    record["peak_memory_mb"] = peak_memory_mb(model)
    phase("figures")
    save_model_figures(name, model, splits, history, out)
    return record, notes
