"""The zoo benchmark: train every variant under one budget and seed, then measure all of them with one code path.

>>> from vaezoo.bench import run_benchmark
>>> results = run_benchmark(["vae-mlp", "vq-vae"], "digits", epochs=15, out_dir="bench/digits")  # doctest: +SKIP

or ``vaezoo bench vae-mlp vq-vae --data digits --epochs 15 --out bench/digits``.

Per variant (metrics in nats per example on the test split; ``None`` = n/a, with the reason in ``notes``):

- likelihood: ``nll`` (importance-weighted, Burda et al. 2016, arXiv:1509.00519; n/a without
  ``has_log_likelihood``), ``neg_elbo``, ``recon``, ``kl`` and ``kl_per_layer`` (terms ``kl_<i>``);
- latents: ``active_units`` (Burda et al. 2016 sec. 5.2: dim u is active if Cov_x(E_q[z_u]) > 0.01;
  Gaussian posteriors only, a hierarchy's layers concatenated), ``perplexity`` and ``code_usage`` (VQ terms);
- ``probe_accuracy``: LogisticRegression on train posterior means (flattened), scored on test means;
- ``anomaly_auroc``: a second model trained without one class; AUROC of its -ELBO for "is that class";
- ``imputation_mse``: the bottom half of each test image filled by iterated reconstruction, vs. the
  training mean (``imputation_mse_mean_fill``);
- ``frechet_distance``: between samples and test images in the features of the dataset's small CNN
  (vaezoo/classifier.py); ``conditional_sample_accuracy`` for conditional variants;
- cost: ``parameters``, ``train_samples_per_s`` (median over epochs), ``eval_samples_per_s``,
  ``peak_memory_mb``, ``train_seconds``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import platform
import re
import resource
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.apps import IMPUTATION_ITERATIONS, bottom_half_mask, impute, neg_elbo_scores, posterior_means
from vaezoo.core.config import config_fields
from vaezoo.core.model import VAE
from vaezoo.data import TensorData, fixed_binarize, load_data
from vaezoo.errors import ConfigError, PretrainedUnavailableError, VAEZooError, did_you_mean
from vaezoo.eval.classifier import has_classifier, load_classifier
from vaezoo.eval.evaluate import evaluate
from vaezoo.eval.figures import save_sample_grid
from vaezoo.io.figures import interleave_rows, save_image_grid, save_loss_curve
from vaezoo.train.trainer import TrainConfig, train
from vaezoo.zoo.factory import create_model
from vaezoo.zoo.registry import get_model_class

logger = logging.getLogger(__name__)

PRETRAINED_TAG_FOR_DATA = {"digits": "digits", "fashion-mnist": "fmnist"}
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, sec. 5.2
PROBE_MAX_TRAIN = 10_000  # probe fits on at most this many train examples (the first ones), to bound its time
FD_MAX_EXAMPLES = 5_000  # Frechet distance between this many samples and as many test images
CLASS_SAMPLES = 100  # samples per class for a conditional variant's sample accuracy
QUICK_DEFAULTS = {"data": "digits", "epochs": 15, "iw_samples": 100}
FULL_DEFAULTS = {"epochs": 20, "iw_samples": 1000}

METRIC_KEYS = (
    "nll", "nll_examples", "neg_elbo", "recon", "kl", "kl_per_layer", "active_units", "latent_dims", "perplexity", "code_usage",
    "probe_accuracy", "anomaly_auroc", "imputation_mse", "imputation_mse_mean_fill", "frechet_distance",
    "conditional_sample_accuracy", "parameters", "train_samples_per_s", "eval_samples_per_s", "peak_memory_mb",
    "train_seconds", "epochs",
)


# --- the measurements (pure functions, unit-tested) ------------------------------------------------
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


# bottom_half_mask, impute, posterior_means and neg_elbo_scores live in vaezoo.apps, shared with the applications.


# --- the benchmark --------------------------------------------------------------------------------
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
) -> dict[str, Any]:
    """Train (or load) each variant in ``names`` (default: every registered one) on ``data`` under one budget,
    measure them all the same way, and write results.json, results.md and figures to ``out_dir``.

    The budget is ``epochs`` per training stage, or ``minutes`` of training per model (converted to
    epochs from one timed probe epoch), or ``pretrained`` weights (``name.digits`` / ``name.fmnist``).
    ``quick`` defaults to digits, 15 epochs and 100 importance samples; ``iw_examples`` estimates the NLL
    on the first N test examples only (default all; reported as ``nll_examples``). ``overrides`` are model-config
    or TrainConfig fields (``--set``); a key is applied to the variants that have it.

    >>> results = run_benchmark(["vae-mlp"], "digits", epochs=5, out_dir="bench/x")  # doctest: +SKIP
    >>> results["models"]["vae-mlp"]["probe_accuracy"]  # doctest: +SKIP
    0.93
    """
    from vaezoo.zoo import registry

    settings = _resolve_settings(names, data, epochs, minutes, pretrained, quick, overrides, seed, iw_samples,
                                 iw_examples, holdout_class, out_dir)
    names = settings["models"]
    splits = load_data(settings["data"], seed=0)
    if splits.num_classes and not 0 <= holdout_class < splits.num_classes:
        raise ConfigError(f"holdout_class={holdout_class} is not a class of {settings['data']!r} (0..{splits.num_classes - 1})")
    model_overrides, train_overrides = _route_overrides(settings["overrides"], names, registry)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"settings": settings, "machine": _machine(), "models": {}, "notes": {}}
    for name in names:
        logger.info("benchmarking %s on %s", name, settings["data"])
        record, notes = _benchmark_one(name, splits, settings, model_overrides[name], train_overrides[name], out)
        results["models"][name] = record
        results["notes"][name] = notes
    _save_summary_chart(results["models"], out / "summary.png")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    return results


def _resolve_settings(names, data, epochs, minutes, pretrained, quick, overrides, seed, iw_samples, iw_examples,
                      holdout_class, out_dir) -> dict[str, Any]:
    from vaezoo.zoo import registry

    if data is None:
        if not quick:
            raise ConfigError("no dataset given: pass data (--data digits or fashion-mnist), or quick=True (--quick) for digits")
        data = QUICK_DEFAULTS["data"]
    budgets = [b for b, v in (("epochs", epochs), ("minutes", minutes), ("pretrained", pretrained or None)) if v is not None]
    if len(budgets) > 1:
        raise ConfigError(f"{' and '.join(budgets)} both set: choose one budget (epochs, minutes or pretrained)")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"epochs={epochs!r} must be a positive integer")
    if minutes is not None and not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"minutes={minutes!r} must be a positive number")
    if iw_samples is not None and (isinstance(iw_samples, bool) or not isinstance(iw_samples, int) or iw_samples < 0):
        raise ConfigError(f"iw_samples={iw_samples!r} must be an integer >= 0 (0 skips the NLL)")
    if iw_examples is not None and (isinstance(iw_examples, bool) or not isinstance(iw_examples, int) or iw_examples < 1):
        raise ConfigError(f"iw_examples={iw_examples!r} must be a positive integer (omit it for the whole test split)")
    defaults = QUICK_DEFAULTS if quick else FULL_DEFAULTS
    if epochs is None and minutes is None and not pretrained:
        epochs = defaults["epochs"]
    overrides = dict(overrides or {})
    for reserved in ("epochs", "stage_epochs", "seed", "progress"):
        if reserved in overrides:
            raise ConfigError(
                f"--set {reserved}=... would give variants different budgets; use the benchmark's --epochs/--minutes/seed"
            )
    names = list(names) if names else registry.list_models()
    for name in names:
        registry.get_model_class(name)  # an unknown name raises the registry's did-you-mean error here
        if "." in name:
            raise ConfigError(f"{name!r} is a pretrained tag; give the arch ({name.split('.')[0]!r}) and --pretrained")
    command = ["vaezoo", "bench", *names, "--data", data]
    command += ["--epochs", str(epochs)] if epochs is not None else []
    command += ["--minutes", str(minutes)] if minutes is not None else []
    command += ["--iw-samples", str(iw_samples)] if iw_samples is not None else []
    command += ["--iw-examples", str(iw_examples)] if iw_examples is not None else []
    command += ["--pretrained"] * bool(pretrained) + ["--quick"] * bool(quick) + ["--out", str(out_dir)]
    command += [part for key, value in overrides.items() for part in ("--set", f"{key}={json.dumps(value)}")]
    return {
        "command": shlex.join(command), "models": names, "data": data, "epochs": epochs, "minutes": minutes,
        "pretrained": bool(pretrained), "quick": bool(quick), "seed": seed,
        "iw_samples": defaults["iw_samples"] if iw_samples is None else iw_samples, "iw_examples": iw_examples,
        "holdout_class": holdout_class, "overrides": overrides, "imputation": f"bottom half hidden, {IMPUTATION_ITERATIONS} iterations",
        "model_configs": "each variant's pretrained-tag config for this data (name.digits / name.fmnist) when it has one, "
                         "else its default config; then --set overrides",
        "probe": f"LogisticRegression(max_iter=1000) on posterior means of the first {PROBE_MAX_TRAIN} train examples",
    }


def _route_overrides(overrides: dict[str, Any], names: list[str], registry: Any) -> tuple[dict, dict]:
    """Per model: (model-config part, TrainConfig part). A key no benchmarked variant or TrainConfig knows is an error."""
    train_fields = set(config_fields(TrainConfig))
    model_fields = {name: set(config_fields(registry.get_model_class(name).config_class)) for name in names}
    known = set().union(train_fields, *model_fields.values())
    for key in overrides:
        if key not in known:
            raise ConfigError(f"unknown field {key!r} in --set" + did_you_mean(key, known)
                              + "; it must be a config field of a benchmarked variant or a TrainConfig field")
        if key in ("input_shape", "num_classes"):
            raise ConfigError(f"--set {key}=... is taken from the data; drop it")
    model_part = {n: {k: v for k, v in overrides.items() if k in model_fields[n]} for n in names}
    train_part = {n: {k: v for k, v in overrides.items() if k in train_fields and k not in model_fields[n]} for n in names}
    return model_part, train_part


def _machine() -> dict[str, Any]:
    import sklearn

    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "sklearn": sklearn.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "peak_memory": "torch.cuda.max_memory_allocated per model" if cuda
        else "process-wide peak RSS (ru_maxrss), cumulative over the whole benchmark process",
    }


def _empty_record() -> dict[str, Any]:
    return {key: None for key in METRIC_KEYS}


def _benchmark_one(name: str, splits: Any, settings: dict[str, Any], model_overrides: dict[str, Any],
                   train_overrides: dict[str, Any], out: Path) -> tuple[dict[str, Any], dict[str, str]]:
    record, notes = _empty_record(), {}
    record["status"] = "ok"
    model_class = get_model_class(name)
    build = {"input_shape": splits.input_shape, "num_classes": splits.num_classes, **model_overrides}
    try:
        if settings["pretrained"]:
            model = _load_pretrained(name, splits, settings["data"], model_class)
            history, train_seconds, epochs = [], None, None
        else:
            model = create_model(_config_source(name, settings["data"], model_class), **build)
            epochs = settings["epochs"] or _epochs_for_minutes(model, splits, settings, train_overrides)
            history, train_seconds = _train(model, splits, epochs, settings["seed"], train_overrides)
    except VAEZooError as error:  # one variant that cannot be built or trained must not stop the benchmark
        logger.warning("%s: %s", name, error)
        record["status"] = f"n/a: {error}"
        return record, {"all": str(error)}
    record.update(epochs=epochs, train_seconds=train_seconds, parameters=model.num_parameters())
    speeds = [r["samples_per_s"] for r in history if "samples_per_s" in r]
    record["train_samples_per_s"] = statistics.median(speeds) if speeds else None
    if not history:
        notes["train_samples_per_s"] = "pretrained weights: not trained here"
    _measure(model, splits, settings, record, notes)
    _anomaly(name, model_class, splits, settings, build, epochs, train_overrides, record, notes)
    record["peak_memory_mb"] = _peak_memory_mb(model)
    _figures(name, model, splits, history, out)
    return record, notes


def _config_source(name: str, data: str, model_class: type) -> str:
    """``name.tag`` when the variant has a pretrained tag for ``data`` (its config is sized for that data), else ``name``.

    Only the tag's config is used, not its weights: the default configs are sized for 28x28 images.
    """
    tag = PRETRAINED_TAG_FOR_DATA.get(data)
    return f"{name}.{tag}" if tag in model_class.pretrained_tags else name


def _load_pretrained(name: str, splits: Any, data: str, model_class: type) -> VAE:
    tag = PRETRAINED_TAG_FOR_DATA.get(data)
    if tag is None or tag not in model_class.pretrained_tags:
        raise PretrainedUnavailableError(f"{name} has no pretrained tag for data {data!r}; train it with --epochs")
    model = create_model(f"{name}.{tag}", pretrained=True)
    if tuple(model.config.input_shape) != tuple(splits.input_shape):
        raise ConfigError(f"{name}.{tag} takes {tuple(model.config.input_shape)} but {data!r} has {tuple(splits.input_shape)}")
    return model


def _train(model: VAE, splits: Any, epochs: int, seed: int, train_overrides: dict[str, Any]) -> tuple[list, float]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(model, splits, out_dir=None, epochs=epochs, seed=seed, progress=False, **train_overrides)
    return result.history, time.perf_counter() - start


def _epochs_for_minutes(model: VAE, splits: Any, settings: dict[str, Any], train_overrides: dict[str, Any]) -> int:
    """Epochs per stage that fit ``minutes`` of training, from one timed probe epoch on a throwaway copy."""
    probe = copy.deepcopy(model)
    history, _ = _train(probe, splits, 1, settings["seed"], train_overrides)
    seconds_per_pass = sum(r["wall_time_s"] for r in history)  # one epoch of every stage, validation included
    epochs = max(1, int(settings["minutes"] * 60 // max(seconds_per_pass, 1e-9)))
    logger.info("%s: %.1f s per epoch of all stages -> %d epochs in %s minutes",
                model.model_name, seconds_per_pass, epochs, settings["minutes"])
    return epochs


def _eval_inputs(model: VAE, part: Any, seed: int) -> tuple[Tensor, Tensor | None]:
    x = fixed_binarize(part.x, seed=seed) if model.config.dynamic_binarization else part.x
    return x, part.y if model.is_conditional else None


def _measure(model: VAE, splits: Any, settings: dict[str, Any], record: dict[str, Any], notes: dict[str, str]) -> None:
    test_x, test_y = _eval_inputs(model, splits.test, 0)
    metrics = evaluate(model, test_x, test_y, iw_samples=settings["iw_samples"], seed=settings["seed"],
                       iw_examples=settings["iw_examples"])
    record.update(neg_elbo=metrics["neg_elbo"], recon=metrics["recon"], kl=metrics["kl"], nll=metrics.get("nll"),
                  nll_examples=metrics.get("nll_examples"), eval_samples_per_s=metrics["samples_per_s"])
    if record["nll"] is None:
        notes["nll"] = ("no importance-weighted likelihood (has_log_likelihood=False); neg_elbo is its bound"
                        if not model.has_log_likelihood else "iw_samples=0")
    layers = {k: v for k, v in metrics.items() if re.fullmatch(r"kl_\d+", k)}
    record["kl_per_layer"] = dict(sorted(layers.items(), key=lambda kv: int(kv[0][3:]))) or None
    record["perplexity"], record["code_usage"] = metrics.get("perplexity"), metrics.get("code_usage")
    if record["perplexity"] is None:
        notes["perplexity"] = "no discrete codes"

    labels_for_encoder = splits.test.y if model.is_conditional else None  # a conditional posterior needs y
    test_means, gaussian = posterior_means(model, test_x, labels_for_encoder)
    if gaussian:
        record["active_units"], record["latent_dims"] = active_units(test_means), int(test_means.shape[1])
    else:
        notes["active_units"] = "posterior is not Gaussian (point mass on codes): active units are undefined"
    if splits.num_classes and splits.test.y is not None:
        from sklearn.linear_model import LogisticRegression

        train_part = dataclasses.replace(splits.train, x=splits.train.x[:PROBE_MAX_TRAIN], y=splits.train.y[:PROBE_MAX_TRAIN])
        train_x, train_y = _eval_inputs(model, train_part, 0)
        train_means, _ = posterior_means(model, train_x, train_part.y if model.is_conditional else None)
        probe = LogisticRegression(max_iter=1000).fit(train_means.numpy(), train_part.y.numpy())
        record["probe_accuracy"] = float(probe.score(test_means.numpy(), splits.test.y.numpy()))
        if model.is_conditional:
            notes["probe_accuracy"] = "means of q(z | x, y) given the true label: the label is meant to be outside z"
        if not gaussian:
            notes["probe_accuracy"] = "on the flattened quantized latents (codebook vectors) of each example"
    else:
        notes["probe_accuracy"] = "the data has no labels"
    _imputation(model, splits, record, notes)
    _sample_quality(model, splits, settings, record, notes)


def _imputation(model: VAE, splits: Any, record: dict[str, Any], notes: dict[str, str]) -> None:
    shape = tuple(splits.input_shape)
    if len(shape) != 3:
        notes["imputation_mse"] = f"input_shape {shape} is not an image"
        return
    hidden = bottom_half_mask(shape)
    fill = splits.train.x.mean(dim=0, keepdim=True)  # (1, C, H, W) per-pixel training mean
    x = splits.test.x.to(model.device)
    y = splits.test.y.to(model.device) if model.is_conditional else None
    imputed = impute(model, x, hidden, fill, y).cpu()
    mask = hidden.expand_as(splits.test.x)
    record["imputation_mse"] = float((imputed - splits.test.x)[mask].pow(2).mean())
    record["imputation_mse_mean_fill"] = float((fill.expand_as(splits.test.x) - splits.test.x)[mask].pow(2).mean())
    if model.is_conditional:
        notes["imputation_mse"] = "given the true label"


def _sample_quality(model: VAE, splits: Any, settings: dict[str, Any], record: dict[str, Any], notes: dict[str, str]) -> None:
    if not has_classifier(settings["data"]):
        notes["frechet_distance"] = f"no shipped classifier for {settings['data']!r} (benchmarks/train_classifiers.py)"
        return
    classifier = load_classifier(settings["data"])
    if tuple(classifier.input_shape) != tuple(splits.input_shape):
        notes["frechet_distance"] = "the shipped classifier takes another input shape"
        return
    count = min(len(splits.test.x), FD_MAX_EXAMPLES)
    test_x = splits.test.x[:count]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(settings["seed"])
        labels = splits.test.y[:count] if model.is_conditional else None  # same class mix as the test images
        samples = _batched_samples(model, count, labels)
        fd = feature_frechet_distance(_features(classifier, samples), _features(classifier, test_x))
        record["frechet_distance"] = fd
        if model.is_conditional:
            accuracies = []
            for label in range(model.config.num_classes):
                generated = model.sample(CLASS_SAMPLES, y=label).cpu()
                accuracies.append(float((classifier(generated).argmax(1) == label).float().mean()))
            record["conditional_sample_accuracy"] = float(np.mean(accuracies))
        else:
            notes["conditional_sample_accuracy"] = "not a conditional variant"


def _batched_samples(model: VAE, count: int, labels: Tensor | None, batch_size: int = 1000) -> Tensor:
    chunks = []
    for begin in range(0, count, batch_size):
        n = min(batch_size, count - begin)
        y = None if labels is None else labels[begin:begin + n]
        chunks.append(model.sample(n, y=y).float().cpu())
    return torch.cat(chunks)


def _features(classifier: Any, x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([classifier.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _anomaly(name: str, model_class: type, splits: Any, settings: dict[str, Any], build: dict[str, Any], epochs: int | None,
             train_overrides: dict[str, Any], record: dict[str, Any], notes: dict[str, str]) -> None:
    from sklearn.metrics import roc_auc_score


    if not splits.num_classes or splits.train.y is None:
        notes["anomaly_auroc"] = "the data has no labels"
        return
    if settings["pretrained"]:
        notes["anomaly_auroc"] = "needs a model trained without the held-out class; pretrained weights saw every class"
        return
    held_out = settings["holdout_class"]

    def without(part: Any) -> Any:
        keep = part.y != held_out
        return TensorData(part.x[keep], part.y[keep])

    normal_splits = dataclasses.replace(splits, train=without(splits.train), val=without(splits.val))
    detector = create_model(_config_source(name, settings["data"], model_class), **build)
    _train(detector, normal_splits, epochs, settings["seed"], train_overrides)
    test_x, _ = _eval_inputs(detector, splits.test, 0)
    scores = neg_elbo_scores(detector, test_x, seed=settings["seed"])
    positives = (splits.test.y == held_out).numpy()
    record["anomaly_auroc"] = float(roc_auc_score(positives, scores.numpy()))
    notes["anomaly_auroc"] = f"class {held_out} held out of training; score = -ELBO" + (
        ", minimum over all labels (the true label is not used)" if detector.is_conditional else "")


def _peak_memory_mb(model: VAE) -> float:
    if model.device.type == "cuda":
        return torch.cuda.max_memory_allocated(model.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; process-wide


# --- output ---------------------------------------------------------------------------------------
def _figures(name: str, model: VAE, splits: Any, history: list[dict[str, Any]], out: Path) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if history:
        save_loss_curve(history, folder / "loss_curve.png")
    if len(splits.input_shape) == 3 and splits.input_shape[0] in (1, 3):
        save_sample_grid(model, folder / "samples.png", n=64)
        originals = splits.test.x[:32]
        y = splits.test.y[:32].to(model.device) if model.is_conditional else None
        recons = model.reconstruct(originals.to(model.device), y).cpu()
        save_image_grid(interleave_rows(originals, recons, 8), folder / "reconstructions.png", nrow=8)  # originals above
    _save_latent_map(model, splits, folder / "latents_pca.png")


def _save_latent_map(model: VAE, splits: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    x, _ = _eval_inputs(model, splits.test, 0)
    means, _ = posterior_means(model, x, splits.test.y if model.is_conditional else None)
    if means.shape[1] < 2:
        return
    points = PCA(n_components=2).fit_transform(means.numpy())
    figure, axis = plt.subplots(figsize=(5, 4.5))
    colours = splits.test.y.numpy() if splits.test.y is not None else None
    scatter = axis.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=6)
    if colours is not None:
        figure.colorbar(scatter, ax=axis, label="class")
    axis.set_title(f"{model.model_name}: PCA of test posterior means")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _save_summary_chart(models: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    figure, axis = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
    positions = np.arange(len(names))
    for offset, key, label in ((-0.2, "neg_elbo", "-ELBO"), (0.2, "nll", "NLL (IWAE)")):
        values = [models[n].get(key) for n in names]
        axis.bar(positions + offset, [np.nan if v is None else v for v in values], width=0.4, label=label)
        for position, value in zip(positions, values):
            if value is None:
                axis.text(position + offset, 0, "n/a", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(positions, names)
    axis.set_ylabel("nats per test example")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format(v)}" for k, v in value.items())
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def results_markdown(results: dict[str, Any]) -> str:
    """A markdown table, one column per model and one row per metric; "n/a" where a metric does not apply."""
    models = results["models"]
    names = list(models)
    lines = [f"`{results['settings']['command']}`", "", "| metric | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for key in ("status", *METRIC_KEYS):
        lines.append(f"| {key} | " + " | ".join(_format(models[n].get(key)) for n in names) + " |")
    notes = results.get("notes", {})
    if any(notes.values()):
        lines += ["", "Notes:"]
        lines += [f"- {n}: {key}: {text}" for n in names for key, text in notes.get(n, {}).items()]
    return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (tuple, Path)):
        return list(value) if isinstance(value, tuple) else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
