"""Measuring one ready model on the test split, the same way for every variant; each measurement fills a record and notes.

``measure`` writes the likelihood figures, the variant's reported metrics, active units, the probe,
imputation and sample quality; ``measure_anomaly`` trains a second model without one class;
``peak_memory_mb`` reads the peak memory. A figure that does not apply stays None, with the reason in ``notes``.
"""
from __future__ import annotations

import dataclasses
import resource
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.apps import bottom_half_mask, fit_sampler, impute, neg_elbo_scores, posterior_means, reconstruct
from vaezoo.bench.budget import build_seeded, train_model
from vaezoo.bench.metrics import active_units, feature_frechet_distance
from vaezoo.bench.record import NOT_REPORTED
from vaezoo.bench.settings import CLASS_SAMPLES, FD_MAX_EXAMPLES, PROBE_MAX_TRAIN, SAMPLER_COMPONENTS, SAMPLER_MAX_TRAIN
from vaezoo.core.model import VAE
from vaezoo.data import fixed_binarize, ground_truth_data, list_ground_truth_data
from vaezoo.eval.classifier import has_classifier, load_classifier
from vaezoo.eval.disentanglement import SCORE_NAMES, disentanglement_scores
from vaezoo.eval.evaluate import BITS_PER_DIM_OF, NO_ELBO, evaluate
from vaezoo.eval.feature_networks import load_feature_network

Record = dict[str, Any]  # metric name -> value (None = n/a)
Notes = dict[str, str]  # metric name -> why it is n/a, or how to read it


def eval_inputs(model: VAE, part: Any, seed: int) -> tuple[Tensor, Tensor | None]:
    """The inputs as the model is evaluated on them (fixed binarization if it trains on dynamic); labels if conditional."""
    x = fixed_binarize(part.x, seed=seed) if model.config.dynamic_binarization else part.x
    return x, part.y if model.capabilities.conditional else None


def measure(model: VAE, splits: Any, settings: dict[str, Any], reported: list[str], record: Record, notes: Notes,
            phase: Callable[[str], None] = lambda label: None) -> None:
    """Every measurement of one model but the anomaly detector's; ``reported`` are the reported-metric rows of the
    benchmark; ``phase`` hears the name of each measurement as it starts (for a progress bar)."""
    conditional = model.capabilities.conditional
    phase("likelihood")
    _likelihood(model, splits, settings, reported, record, notes)
    phase("latents and probe")
    test_means, gaussian = posterior_means(model, *eval_inputs(model, splits.test, 0))
    if gaussian:
        record["active_units"], record["latent_dims"] = active_units(test_means), int(test_means.shape[1])
    else:
        notes["active_units"] = "posterior is not Gaussian: active units (a variance of Gaussian means) are undefined"
    if splits.num_classes and splits.test.y is not None:
        from sklearn.linear_model import LogisticRegression  # scikit-learn is heavy; only the probe needs it

        train_part = splits.train[:PROBE_MAX_TRAIN]  # rows of x, y and factors together
        train_means, _ = posterior_means(model, *eval_inputs(model, train_part, 0))
        probe = LogisticRegression(max_iter=1000).fit(train_means.numpy(), train_part.y.numpy())
        record["probe_accuracy"] = float(probe.score(test_means.numpy(), splits.test.y.numpy()))
        if conditional:
            notes["probe_accuracy"] = "means of q(z | x, y) given the true label: the label is meant to be outside z"
        if not gaussian:
            notes["probe_accuracy"] = "on the flattened posterior means (not Gaussian) of each example"
    else:
        notes["probe_accuracy"] = "the data has no labels"
    phase("imputation")
    _imputation(model, splits, record, notes)
    classifier = _feature_space(settings, tuple(splits.input_shape))  # loaded once, for both FDs
    # the test images' features, computed once for both FDs (with Inception on a CPU, the costliest part of them)
    test_features = None if isinstance(classifier, str) else _test_features(classifier, splits)
    phase("reconstruction")
    _reconstruction_quality(model, splits, classifier, record, notes, test_features)
    phase("sample quality")
    _sample_quality(model, splits, settings, classifier, record, notes, test_features)
    if settings["data"] in list_ground_truth_data():
        phase("disentanglement")
        _disentanglement(model, settings, record, notes)


def _likelihood(model: VAE, splits: Any, settings: dict[str, Any], reported: list[str], record: Record, notes: Notes) -> None:
    """-ELBO, its parts and the NLL from vaezoo's evaluate; then each reported metric under its declared name."""
    test_x, test_y = eval_inputs(model, splits.test, 0)
    metrics = evaluate(model, test_x, test_y, iw_samples=settings["iw_samples"], seed=settings["seed"],
                       iw_examples=settings["iw_examples"])
    record.update(neg_elbo=metrics.get("neg_elbo"), recon=metrics["recon"], kl=metrics.get("kl"), nll=metrics.get("nll"),
                  nll_examples=metrics.get("nll_examples"), eval_samples_per_s=metrics["samples_per_s"])
    elbo = model.capabilities.elbo
    if not elbo:
        notes["neg_elbo"] = notes["kl"] = NO_ELBO
    if record["nll"] is None:
        notes["nll"] = ("no importance-weighted likelihood (capabilities.log_likelihood is False)"
                        + ("; neg_elbo is its bound" if elbo else "") if not model.capabilities.log_likelihood
                        else "iw_samples=0")
    _bits_per_dim(model, metrics, record, notes)
    declared = type(model).reported_metrics
    for name in reported:
        if name not in declared:
            notes[name] = NOT_REPORTED
        elif name not in metrics:
            notes[name] = "declared in reported_metrics, but forward put no such entry in VAEOutput.metrics"
        else:
            record[name] = metrics[name]


def _bits_per_dim(model: VAE, metrics: dict[str, Any], record: Record, notes: Notes) -> None:
    """The -ELBO and NLL in bits per pixel value for images, with a note on what they measure under the likelihood."""
    if not model.config.is_image:
        notes["neg_elbo_bits_per_dim"] = f"input_shape {tuple(model.config.input_shape)} is not an image"
        return
    record.update(neg_elbo_bits_per_dim=metrics.get("neg_elbo_bits_per_dim"), nll_bits_per_dim=metrics.get("nll_bits_per_dim"))
    notes["neg_elbo_bits_per_dim"] = (BITS_PER_DIM_OF.get(model.config.likelihood, model.config.likelihood)
                                      if model.capabilities.elbo else NO_ELBO)


def _imputation(model: VAE, splits: Any, record: Record, notes: Notes) -> None:
    shape = tuple(splits.input_shape)
    if len(shape) != 3:
        notes["imputation_mse"] = f"input_shape {shape} is not an image"
        return
    hidden = bottom_half_mask(shape)
    fill = splits.train.x.mean(dim=0, keepdim=True)  # (1, C, H, W) per-pixel training mean
    x = splits.test.x.to(model.device)
    y = splits.test.y.to(model.device) if model.capabilities.conditional else None
    imputed = impute(model, x, hidden, fill, y, method="iterate").cpu()  # the one method every variant has
    mask = hidden.expand_as(splits.test.x)
    record["imputation_mse"] = float((imputed - splits.test.x)[mask].pow(2).mean())
    record["imputation_mse_mean_fill"] = float((fill.expand_as(splits.test.x) - splits.test.x)[mask].pow(2).mean())
    if model.capabilities.conditional:
        notes["imputation_mse"] = "given the true label"


PSNR_CAP_DB = 100.0  # a reconstruction equal to its image has PSNR +inf; JSON has no inf, and a mean would drown in it


def _feature_space(settings: dict[str, Any], input_shape: tuple[int, ...]) -> Any:
    """The network whose features the FDs use: the timm network ``--fd-features`` names (any image data), else the
    dataset's shipped classifier (vaezoo/eval/classifier.py); or a string saying why there is none: no classifier
    ships for the data, or it takes another input shape."""
    data = settings["data"]
    if settings.get("fd_features"):
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            return f"--fd-features takes images of 1 or 3 channels, not examples of shape {input_shape}"
        return load_feature_network(settings["fd_features"], settings.get("fd_weights"))
    if not has_classifier(data):
        return (f"no shipped classifier for {data!r} (benchmarks/train_classifiers.py); pass --fd-features "
                "inception_v3.tv_in1k for FID's network")
    classifier = load_classifier(data)
    if tuple(classifier.input_shape) != input_shape:
        return "the shipped classifier takes another input shape"
    return classifier


def _reconstruction_quality(model: VAE, splits: Any, classifier: Any, record: Record, notes: Notes,
                            test_features: Tensor | None = None) -> None:
    """PSNR and SSIM (scikit-image's, pixels in [0, 1]) of the test images' reconstructions from the posterior mean,
    averaged over images, and the Frechet distance between the reconstructions' and the originals' features in the
    dataset's classifier: the rFID of LDM's autoencoder tables (Rombach et al. 2022, table 8), in our features.
    ``test_features`` (:func:`_test_features`) are reused for the originals where the model codes the test images
    as they are (not binarized)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # only this measurement needs it

    shape = tuple(splits.input_shape)
    if len(shape) != 3:
        notes["recon_psnr"] = notes["recon_ssim"] = f"input_shape {shape} is not an image"
        return
    x, y = eval_inputs(model, splits.test[:min(len(splits.test.x), FD_MAX_EXAMPLES)], 0)
    recon = reconstruct(model, x, y).clamp(0, 1)
    originals, recons = x.double().numpy(), recon.double().numpy()
    record["recon_psnr"] = float(np.mean([min(PSNR_CAP_DB, peak_signal_noise_ratio(a, b, data_range=1.0))
                                          for a, b in zip(originals, recons)]))
    notes["recon_psnr"] = f"dB, peak 1 (pixels in [0, 1]), averaged over the {len(x)} test images; capped at {PSNR_CAP_DB:g}"
    side = min(7, *shape[1:])
    window = side if side % 2 else side - 1  # scikit-image's 7x7, or the largest odd window that fits the image
    if window < 3:
        notes["recon_ssim"] = f"images of {shape[1]}x{shape[2]} are smaller than SSIM's smallest window (3x3)"
    else:
        record["recon_ssim"] = float(np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=window)
                                              for a, b in zip(originals, recons)]))
        notes["recon_ssim"] = f"{window}x{window} window, averaged over the {len(x)} test images and their channels"
    if isinstance(classifier, str):
        notes["recon_frechet_distance"] = classifier
        return
    same_inputs = test_features is not None and not model.config.dynamic_binarization  # x is then the test images
    originals_features = test_features if same_inputs else _features(classifier, x.float())
    record["recon_frechet_distance"] = feature_frechet_distance(_features(classifier, recon.float()), originals_features)


def _sample_quality(model: VAE, splits: Any, settings: dict[str, Any], classifier: Any, record: Record,
                    notes: Notes, test_features: Tensor | None = None) -> None:
    if isinstance(classifier, str):  # why there is none
        notes["frechet_distance"] = classifier
        return
    conditional = model.capabilities.conditional
    count = min(len(splits.test.x), FD_MAX_EXAMPLES)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(settings["seed"])
        labels = splits.test.y[:count] if conditional else None  # same class mix as the test images
        samples = _batched_samples(model, count, labels)
        test_features = _test_features(classifier, splits) if test_features is None else test_features
        record["frechet_distance"] = feature_frechet_distance(_features(classifier, samples), test_features)
        _sampler_frechet_distance(model, splits, settings, classifier, test_features, labels, record, notes)
        if conditional and not getattr(classifier, "classifies_data", True):
            notes["conditional_sample_accuracy"] = f"{classifier.name} (--fd-features) has no head for the data's classes"
        elif conditional:
            accuracies = []
            for label in range(model.config.num_classes):
                generated = model.sample(CLASS_SAMPLES, y=label).cpu()
                accuracies.append(float((classifier(generated).argmax(1) == label).float().mean()))
            record["conditional_sample_accuracy"] = float(np.mean(accuracies))
        else:
            notes["conditional_sample_accuracy"] = "not a conditional variant"


def _sampler_frechet_distance(model: VAE, splits: Any, settings: dict[str, Any], classifier: Any, test_features: Tensor,
                              labels: Tensor | None, record: Record, notes: Notes) -> None:
    """FD of samples drawn through a Gaussian mixture fitted on the training codes instead of the prior (the ex-post
    density estimation of Ghosh et al. 2020, pythae's GMMSampler); the model is left with the sampler it had."""
    if not model.capabilities.latent_sampler:
        notes["frechet_distance_gmm"] = "no single continuous latent to fit a sampler on (capabilities.latent_sampler is False)"
        return
    had = model.latent_sampler, model.config
    train_part = splits.train[:SAMPLER_MAX_TRAIN]
    try:
        fit_sampler(model, *eval_inputs(model, train_part, 0), components=SAMPLER_COMPONENTS, seed=settings["seed"])
        torch.manual_seed(settings["seed"])
        samples = _batched_samples(model, len(test_features), labels, sampler="gmm")
        record["frechet_distance_gmm"] = feature_frechet_distance(_features(classifier, samples), test_features)
    finally:
        model.latent_sampler, model.config = had
    notes["frechet_distance_gmm"] = (f"{SAMPLER_COMPONENTS}-component GMM fitted on one z ~ q(z | x) of each of the first "
                                     f"{len(train_part.x)} training examples")


def _disentanglement(model: VAE, settings: dict[str, Any], record: Record, notes: Notes) -> None:
    """The five scores of disentanglement_lib (Locatello et al. 2019) on the posterior means, for data with known
    factors; its sample counts, or small ones with --quick."""
    if model.capabilities.conditional:
        for name in SCORE_NAMES:
            record[name] = None
            notes[name] = "conditional: its code is meant to leave out the label (here the shape), so it is not scored"
        return
    scores = disentanglement_scores(lambda x: posterior_means(model, x, None)[0], ground_truth_data(settings["data"]),
                                    seed=settings["seed"], small=settings["quick"])
    record.update(scores)
    sizes = "small sample counts (--quick)" if settings["quick"] else "disentanglement_lib's sample counts"
    notes["mig"] = f"on the posterior means over the whole factor grid, {sizes}; higher is better for all seven"


def _batched_samples(model: VAE, count: int, labels: Tensor | None, batch_size: int = 1000,
                     sampler: str | None = None) -> Tensor:
    chunks = []
    for begin in range(0, count, batch_size):
        n = min(batch_size, count - begin)
        y = None if labels is None else labels[begin:begin + n]
        chunks.append(model.sample(n, y=y, sampler=sampler).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def _features(classifier: Any, x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([classifier.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _test_features(classifier: Any, splits: Any) -> Tensor:
    """Features of the first FD_MAX_EXAMPLES test images, which both FDs compare against."""
    return _features(classifier, splits.test.x[:FD_MAX_EXAMPLES].float())


def measure_anomaly(name: str, model_class: type, splits: Any, settings: dict[str, Any], build: dict[str, Any],
                    epochs: int | None, train_overrides: dict[str, Any], record: Record, notes: Notes) -> None:
    """``anomaly_auroc``: a copy of the variant trained without ``holdout_class``; AUROC of its -ELBO for "is that class"."""
    if not splits.num_classes or splits.train.y is None:
        notes["anomaly_auroc"] = "the data has no labels"
        return
    if settings["pretrained"]:
        notes["anomaly_auroc"] = "needs a model trained without the held-out class; pretrained weights saw every class"
        return
    if not model_class.capabilities.elbo:
        notes["anomaly_auroc"] = f"scored by the -ELBO, which it lacks: {NO_ELBO}"
        return
    from sklearn.metrics import roc_auc_score  # scikit-learn is heavy; only the AUROC needs it

    held_out = settings["holdout_class"]

    def without(part: Any) -> Any:
        keep = part.y != held_out
        return part[keep]

    normal_splits = dataclasses.replace(splits, train=without(splits.train), val=without(splits.val))
    detector = build_seeded(name, settings["data"], model_class, settings["seed"], **build)
    train_model(detector, normal_splits, epochs, settings["seed"], train_overrides)
    test_x, _ = eval_inputs(detector, splits.test, 0)
    scores = neg_elbo_scores(detector, test_x, seed=settings["seed"])
    positives = (splits.test.y == held_out).numpy()
    record["anomaly_auroc"] = float(roc_auc_score(positives, scores.numpy()))
    notes["anomaly_auroc"] = f"class {held_out} held out of training; score = -ELBO" + (
        ", minimum over all labels (the true label is not used)" if detector.capabilities.conditional else "")


def peak_memory_mb(model: VAE) -> float:
    """Peak memory so far: the model's CUDA device's allocations, or on CPU the whole process's peak RSS."""
    if model.device.type == "cuda":
        return torch.cuda.max_memory_allocated(model.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; process-wide

