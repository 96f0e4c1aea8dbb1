"""The benchmark's settings: its defaults and fixed sizes, and resolving and checking what the caller asked for.

>>> resolve_settings(["vae-mlp"], "digits", epochs=5, out_dir="bench/x")["command"]  # doctest: +SKIP
'vaezoo bench vae-mlp --data digits --epochs 5 --out bench/x'
"""
from __future__ import annotations

import json
import shlex
from typing import Any

from vaezoo.apps import IMPUTATION_ITERATIONS
from vaezoo.core.config import config_fields
from vaezoo.core.validation import check_count, check_positive_number
from vaezoo.data.splits import check_seed
from vaezoo.errors import ConfigError, did_you_mean
from vaezoo.training.trainer import TrainConfig
from vaezoo.zoo.registry import get_model_class, list_models

PROBE_MAX_TRAIN = 10_000  # probe fits on at most this many train examples (the first ones), to bound its time
FD_MAX_EXAMPLES = 5_000  # Frechet distance between this many samples and as many test images
SAMPLER_COMPONENTS = 10  # the ex-post GMM's components (pythae's GMMSampler default), fitted on codes of
SAMPLER_MAX_TRAIN = 10_000  # at most this many train examples (the first ones)
CLASS_SAMPLES = 100  # samples per class for a conditional variant's sample accuracy
QUICK_DEFAULTS = {"data": "digits", "epochs": 15, "iw_samples": 100}
FULL_DEFAULTS = {"epochs": 20, "iw_samples": 1000}
RESERVED_OVERRIDES = ("epochs", "stage_epochs", "seed", "progress")  # the benchmark's own budget and seed


def resolve_settings(names: list[str] | None, data: str | None, *, epochs: int | None = None,
                     minutes: float | None = None, pretrained: bool = False, quick: bool = False,
                     overrides: dict[str, Any] | None = None, seed: int = 0, iw_samples: int | None = None,
                     iw_examples: int | None = None, holdout_class: int = 0, out_dir: str, fd_features: str | None = None,
                     fd_weights: str | None = None) -> dict[str, Any]:
    """The settings of one benchmark (as results.json records them, with the command that reruns it);
    ConfigError or UnknownModelError for a bad one. See ``run_benchmark`` for what each means."""
    if data is None:
        if not quick:
            raise ConfigError("no dataset given: pass data (--data digits or fashion-mnist), or quick=True (--quick) for digits")
        data = QUICK_DEFAULTS["data"]
    budgets = [b for b, v in (("epochs", epochs), ("minutes", minutes), ("pretrained", pretrained or None)) if v is not None]
    if len(budgets) > 1:
        raise ConfigError(f"{' and '.join(budgets)} both set: choose one budget (epochs, minutes or pretrained)")
    if epochs is not None:
        check_count(epochs, "epochs", error=ConfigError)
    if minutes is not None:
        check_positive_number(minutes, "minutes", error=ConfigError)
    if iw_samples is not None:
        check_count(iw_samples, "iw_samples", minimum=0, error=ConfigError, hint=" (0 skips the NLL)")
    check_seed(seed)
    if iw_examples is not None:
        check_count(iw_examples, "iw_examples", error=ConfigError, hint=" (omit it for the whole test split)")
    defaults = QUICK_DEFAULTS if quick else FULL_DEFAULTS
    if epochs is None and minutes is None and not pretrained:
        epochs = defaults["epochs"]
    overrides = dict(overrides or {})
    for reserved in RESERVED_OVERRIDES:
        if reserved in overrides:
            raise ConfigError(
                f"--set {reserved}=... would give variants different budgets; use the benchmark's --epochs/--minutes/seed"
            )
    names = list(names) if names else list_models(loadable=True)  # a broken plugin is skipped with a warning
    for name in names:
        get_model_class(name)  # an unknown name raises the registry's did-you-mean error here
        if "." in name:
            raise ConfigError(f"{name!r} is a pretrained tag; give the arch ({name.split('.')[0]!r}) and --pretrained")
    command = ["vaezoo", "bench", *names, "--data", data]
    command += ["--epochs", str(epochs)] if epochs is not None else []
    command += ["--minutes", str(minutes)] if minutes is not None else []
    command += ["--iw-samples", str(iw_samples)] if iw_samples is not None else []
    command += ["--iw-examples", str(iw_examples)] if iw_examples is not None else []
    if fd_weights is not None and fd_features is None:
        raise ConfigError("--fd-weights given without --fd-features: name the timm network the file holds, e.g. "
                          "--fd-features inception_v3.tv_in1k")
    command += ["--fd-features", fd_features] if fd_features is not None else []
    command += ["--fd-weights", str(fd_weights)] if fd_weights is not None else []
    command += ["--pretrained"] * bool(pretrained) + ["--quick"] * bool(quick) + ["--out", str(out_dir)]
    command += [part for key, value in overrides.items() for part in ("--set", f"{key}={json.dumps(value)}")]
    return {
        "command": shlex.join(command), "models": names, "data": data, "epochs": epochs, "minutes": minutes,
        "pretrained": bool(pretrained), "quick": bool(quick), "seed": seed,
        "iw_samples": defaults["iw_samples"] if iw_samples is None else iw_samples, "iw_examples": iw_examples,
        "holdout_class": holdout_class, "overrides": overrides, "fd_features": fd_features, "fd_weights": fd_weights,
        "imputation": f"bottom half hidden, {IMPUTATION_ITERATIONS} iterations",
        "model_configs": "each variant's pretrained-tag config for this data (name.digits / name.fmnist) when it has one, "
                         "else its default config; then --set overrides",
        "probe": f"LogisticRegression(max_iter=1000) on posterior means of the first {PROBE_MAX_TRAIN} train examples",
    }


def check_holdout_class(holdout_class: int, num_classes: int, data: str) -> None:
    """ConfigError unless ``holdout_class`` is one of the data's classes (data without labels has none to hold out)."""
    if num_classes and not 0 <= holdout_class < num_classes:
        raise ConfigError(f"holdout_class={holdout_class} is not a class of {data!r} (0..{num_classes - 1})")


def route_overrides(overrides: dict[str, Any], names: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per model: (model-config part, TrainConfig part). A key no benchmarked variant or TrainConfig knows is an error."""
    train_fields = set(config_fields(TrainConfig))
    model_fields = {name: set(config_fields(get_model_class(name).config_class)) for name in names}
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
