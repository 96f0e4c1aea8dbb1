"""Training with missing data: miwae against vae-mlp and the mean fill, on 8x8 digits with values missing at random.

    python3 benchmarks/missing_data.py                          # 50% missing, the figures README quotes
    python3 benchmarks/missing_data.py --missing-rate 0.01      # few missing: vae-mlp gets the complete rows
    python3 benchmarks/missing_data.py --epochs 10 --json out.json

Every split of the digits (``load_data("digits")``: values in [0, 1], vaezoo's fixed train/val/test split)
loses ``--missing-rate`` of its values, chosen uniformly without replacement (missing completely at random,
as the reference notebook does: pamattei/miwae, MIWAE_Pytorch_exercises_demo.ipynb), marked NaN. Then:

- ``miwae`` (Mattei and Frellsen 2019, arXiv:1812.02633) trains on the incomplete training split as it is;
- ``vae-mlp`` trains on the complete-case rows of the training split (no value missing). At a high rate there
  are none (each of the 64 values survives with probability 1 - rate, so a row does with (1 - rate)^64:
  5e-20 at 50%), and vae-mlp trains instead on every training row with each missing value set to its
  feature's mean over the observed training values: a VAE trained on naively filled-in data, the kind of
  baseline MIWAE is meant to beat, and the label of its row says so;
- the mean fill puts each feature's mean over the observed training values in every missing value.

Both models have the same networks (an MLP with one hidden layer of 256 and 8 latents, the shape of both
variants' ``digits`` tags; with the same seed they start from the same weights), the same epochs, seed,
batch size and learning rate (2e-3, both variants' ``train_defaults``), through vaezoo's trainer. Each fills
the hidden test values with ``vaezoo.apps.impute`` by the same method and seed: ``importance``
(self-normalised importance weighting, the paper's eq. 9, adapted over rounds) when both models have
importance weights, which both do. The table gives each method's mean squared error over the hidden test
values, in the data's [0, 1] units, and its ratio to the mean fill's. Each model's KL on the validation
split is printed too: a model whose posterior collapsed (KL near 0: the latents say nothing about x)
imputes about its own mean, which is what vae-mlp trained on the mean-filled rows does here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import apps  # noqa: E402
from vaezoo.apps.imputation import IMPORTANCE_ROUNDS, IMPUTATION_IW_SAMPLES  # noqa: E402
from vaezoo.data import DataSplits, load_data  # noqa: E402
from vaezoo.data.splits import TensorData  # noqa: E402
from vaezoo.errors import ConfigError, VAEZooError  # noqa: E402

DEFAULT_EPOCHS = 200  # the digits tags' recipe; the whole script then needs about 45 s of one core (42 s measured)
HIDDEN_DIMS = (256,)  # both variants' digits tags
LATENT_DIM = 8
BATCH_SIZE = 64  # the digits tags' recipe: 22 updates an epoch on the 1437 training rows
MODEL_NAMES = ("miwae", "vae-mlp")
COLLAPSED_KL = 0.1  # nats per row; below it a model's latents say next to nothing about x
MEAN_FILL = "mean fill"


@dataclasses.dataclass
class MissingDataResult:
    """What one run measured, and the imputations it measured them on (so that a test can recompute them)."""

    missing_rate: float
    epochs: int
    seed: int
    hidden_dims: tuple[int, ...]  # both models' MLP widths
    latent_dim: int  # both models' latent size
    imputation_method: str  # the apps.impute method used for both models
    complete_train_rows: int  # training rows with no value missing
    baseline: str  # how vae-mlp was trained: "complete-case rows" or "mean-filled rows"
    training_rows: dict[str, int]  # per method, the training rows it learned from
    mse: dict[str, float]  # per method, the mean squared error over the hidden test values
    kl: dict[str, float]  # per model, KL(q(z | x) || p(z)) on the validation split after training, nats per row
    seconds: dict[str, float]  # wall time of each phase
    truth: Tensor  # (N, 1, 8, 8) the complete test split
    hidden: Tensor  # (N, 1, 8, 8) bool, True where a test value was hidden
    imputed: dict[str, Tensor]  # per method, the test split with its hidden values filled

    def ratio(self, method: str) -> float:
        """The method's MSE as a share of the mean fill's."""
        return self.mse[method] / self.mse[MEAN_FILL]

    def figures(self) -> dict[str, Any]:
        """The figures, JSON-ready (what --json writes)."""
        return {
            "settings": {"missing_rate": self.missing_rate, "epochs": self.epochs, "seed": self.seed,
                         "hidden_dims": list(self.hidden_dims), "latent_dim": self.latent_dim, "batch_size": BATCH_SIZE,
                         "imputation_method": self.imputation_method},
            "complete_train_rows": self.complete_train_rows,
            "baseline": self.baseline,
            "hidden_test_values": int(self.hidden.sum()),
            "methods": {name: {"training_rows": self.training_rows[name], "mse": self.mse[name],
                               "ratio_to_mean_fill": self.ratio(name)} for name in self.mse},
            "validation_kl": self.kl,
            "seconds": self.seconds,
        }


# --- the data ------------------------------------------------------------------------------------------------
def check_settings(missing_rate: float, epochs: int) -> None:
    """ConfigError naming a missing rate outside (0, 1) or fewer than one epoch."""
    if not (isinstance(missing_rate, float) and 0.0 < missing_rate < 1.0):
        raise ConfigError(f"--missing-rate {missing_rate} must be in (0, 1), the share of values hidden; e.g. 0.5")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--epochs {epochs} must be a whole number >= 1; e.g. {DEFAULT_EPOCHS}")


def hide_at_random(x: Tensor, missing_rate: float, generator: torch.Generator) -> Tensor:
    """x with floor(rate * x.numel()) of its values, drawn uniformly without replacement, set to NaN (MCAR).

    >>> hide_at_random(torch.ones(4, 2), 0.5, torch.Generator().manual_seed(0)).isnan().sum().item()
    4
    """
    count = math.floor(missing_rate * x.numel())
    hidden = torch.zeros(x.numel(), dtype=torch.bool)
    hidden[torch.randperm(x.numel(), generator=generator)[:count]] = True
    return x.masked_fill(hidden.view_as(x), math.nan)


def with_missing_values(splits: DataSplits, missing_rate: float, seed: int) -> DataSplits:
    """The splits with ``missing_rate`` of each one's values NaN; one generator from ``seed``, train then val then test.

    >>> holes = with_missing_values(load_data("digits"), 0.5, seed=0)  # doctest: +SKIP
    """
    generator = torch.Generator().manual_seed(seed)
    parts = {name: getattr(splits, name) for name in ("train", "val", "test")}
    holed = {name: TensorData(hide_at_random(part.x, missing_rate, generator), part.y, part.factors)
             for name, part in parts.items()}
    return dataclasses.replace(splits, **holed)


def observed_means(x: Tensor) -> Tensor:
    """(1, *shape): each feature's mean over the rows where it is not NaN (0.5 where it never is)."""
    missing = torch.isnan(x)
    return apps.observed_mean_fill(x.nan_to_num(nan=0.0), missing)


def mean_filled(x: Tensor, means: Tensor) -> Tensor:
    """x with each NaN replaced by its feature's value in ``means`` (1, *shape)."""
    return torch.where(torch.isnan(x), means.expand_as(x), x)


def complete_rows(x: Tensor) -> Tensor:
    """(N,) bool: the rows of x with no NaN."""
    return ~torch.isnan(x).flatten(1).any(1)


def baseline_splits(incomplete: DataSplits, means: Tensor) -> tuple[DataSplits, str, int]:
    """vae-mlp's data: the complete-case training rows if there are any, else every training row mean-filled.

    Returns (splits, how the training rows were made, the number of complete training rows). The validation
    and test splits are mean-filled either way: validation only reports here (no early stopping), and a
    validation split of complete rows would be empty at a rate that leaves a few complete training rows.
    """
    complete = complete_rows(incomplete.train.x)
    count = int(complete.sum())
    if count > 0:
        train, label = incomplete.train[complete], "complete-case rows"
    else:
        train, label = TensorData(mean_filled(incomplete.train.x, means), incomplete.train.y), "mean-filled rows"
    filled = {name: TensorData(mean_filled(getattr(incomplete, name).x, means), getattr(incomplete, name).y)
              for name in ("val", "test")}
    return dataclasses.replace(incomplete, train=train, **filled), label, count


def hidden_mse(imputed: Tensor, truth: Tensor, hidden: Tensor) -> float:
    """Mean squared error over the hidden values only: mean over hidden (imputed - truth)^2."""
    return float((imputed - truth)[hidden].double().pow(2).mean())


# --- the models ----------------------------------------------------------------------------------------------
def trained(name: str, splits: DataSplits, epochs: int, seed: int, hidden_dims: tuple[int, ...],
            latent_dim: int) -> tuple[vaezoo.VAE, float]:
    """``name`` with the shared networks, seeded (the same seed gives both variants the same first weights),
    trained by vaezoo's trainer for ``epochs`` at the variant's learning rate; and its KL on the validation split."""
    torch.manual_seed(seed)
    model = vaezoo.create_model(name, input_shape=splits.input_shape, hidden_dims=hidden_dims, latent_dim=latent_dim)
    result = vaezoo.train(model, splits, epochs=epochs, seed=seed, batch_size=BATCH_SIZE, progress=False)
    return model.eval(), float(result.val_metrics["kl"])


def imputation_method(models: Sequence[vaezoo.VAE]) -> str:
    """``importance`` when every model has importance weights, else ``iterate``: one method for all."""
    return "importance" if all(model.capabilities.log_likelihood for model in models) else "iterate"


def run(missing_rate: float = 0.5, epochs: int = DEFAULT_EPOCHS, seed: int = 0,
        hidden_dims: tuple[int, ...] = HIDDEN_DIMS, latent_dim: int = LATENT_DIM) -> MissingDataResult:
    """Hide the values, train both models, impute the test split's hidden values with each method, measure.

    >>> result = run(missing_rate=0.5, epochs=2)  # doctest: +SKIP
    >>> result.mse["miwae"] < result.mse["mean fill"]  # doctest: +SKIP
    """
    check_settings(missing_rate, epochs)
    seconds: dict[str, float] = {}
    complete = load_data("digits")
    incomplete = with_missing_values(complete, missing_rate, seed)
    means = observed_means(incomplete.train.x)
    baseline, baseline_label, complete_count = baseline_splits(incomplete, means)
    models, kl = {}, {}
    for name, data in (("miwae", incomplete), ("vae-mlp", baseline)):
        start = time.perf_counter()
        models[name], kl[name] = trained(name, data, epochs, seed, hidden_dims, latent_dim)
        seconds[f"train {name}"] = time.perf_counter() - start
    method = imputation_method(list(models.values()))
    test = incomplete.test.x
    imputed = {MEAN_FILL: mean_filled(test, means)}
    for name, model in models.items():
        start = time.perf_counter()
        imputed[name] = apps.impute(model, test, method=method, seed=seed)
        seconds[f"impute {name}"] = time.perf_counter() - start
    truth, hidden = complete.test.x, torch.isnan(test)
    rows = {"miwae": len(incomplete.train), "vae-mlp": len(baseline.train), MEAN_FILL: len(incomplete.train)}
    return MissingDataResult(
        missing_rate=missing_rate, epochs=epochs, seed=seed, hidden_dims=tuple(hidden_dims), latent_dim=latent_dim,
        imputation_method=method,
        complete_train_rows=complete_count, baseline=baseline_label, training_rows=rows,
        mse={name: hidden_mse(imputed[name], truth, hidden) for name in (*MODEL_NAMES, MEAN_FILL)}, kl=kl,
        seconds=seconds, truth=truth, hidden=hidden, imputed=imputed,
    )


# --- the report ----------------------------------------------------------------------------------------------
def method_label(result: MissingDataResult, name: str) -> str:
    return f"vae-mlp ({result.baseline})" if name == "vae-mlp" else name


def report(result: MissingDataResult) -> str:
    """The lines the script prints after its header: what was hidden, how each model trained, and the table."""
    rows = len(result.truth)
    train_rows = result.training_rows["miwae"]
    lines = [
        (f"data: digits, {result.missing_rate:g} of the values of every split missing completely at random (seed "
         f"{result.seed}); {int(result.hidden.sum())} hidden values in the {rows} test rows"),
        f"complete-case training rows (no value missing): {result.complete_train_rows} of {train_rows}",
    ]
    if result.complete_train_rows == 0:
        lines.append("  none, so vae-mlp trains on every training row with its missing values mean-filled "
                     "(the feature's mean over the observed training values)")
    else:
        lines.append(f"  vae-mlp trains on those {result.complete_train_rows} complete rows only")
    lines += [
        (f"models: miwae and vae-mlp, MLP hidden {list(result.hidden_dims)}, latent_dim {result.latent_dim}, "
         f"{result.epochs} epochs, batch {BATCH_SIZE}, seed {result.seed}, vaezoo's trainer"),
        (f"imputation: vaezoo.apps.impute(method={result.imputation_method!r}) for both, seed {result.seed}"
         + (f" ({IMPORTANCE_ROUNDS} rounds x {IMPUTATION_IW_SAMPLES} samples)"
            if result.imputation_method == "importance" else "")),
        "",
        f"| {'method':<28} | {'training rows':>13} | {'MSE on hidden test values':>25} | {'ratio to mean fill':>18} |",
        f"|{'-' * 30}|{'-' * 14}:|{'-' * 26}:|{'-' * 19}:|",
    ]
    for name in (*MODEL_NAMES, MEAN_FILL):
        lines.append(f"| {method_label(result, name):<28} | {result.training_rows[name]:>13} | "
                     f"{result.mse[name]:>25.4f} | {result.ratio(name):>18.3f} |")
    lines += ["", "KL(q(z | x) || p(z)) on the validation split, nats per row: "
              + ", ".join(f"{name} {result.kl[name]:.2f}" for name in MODEL_NAMES)]
    collapsed = [name for name in MODEL_NAMES if result.kl[name] < COLLAPSED_KL]
    if collapsed:
        lines.append(f"  {' and '.join(collapsed)}: posterior collapse (KL < {COLLAPSED_KL} nats): the latents carry "
                     "almost nothing about x, so the imputation is close to the model's own mean")
    lines += ["", "time: " + ", ".join(f"{phase} {s:.1f} s" for phase, s in result.seconds.items())]
    return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; see --help", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missing-rate", type=float, default=0.5, help="share of the values hidden, in (0, 1)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs of each model (the same for both)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the mask, the weights, the batches and the imputation")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        check_settings(args.missing_rate, args.epochs)
        if args.json is not None and not args.json.parent.is_dir():
            raise ConfigError(f"--json {args.json}: folder {args.json.parent} does not exist; create it or pick another path")
        print_header("Training with missing data: miwae vs vae-mlp vs the mean fill (8x8 digits)")
        start = time.perf_counter()
        result = run(args.missing_rate, args.epochs, args.seed)
        result.seconds["total"] = time.perf_counter() - start
        print(report(result))
        if args.json is not None:
            args.json.write_text(json.dumps(result.figures(), indent=2) + "\n", encoding="utf-8")
            print(f"figures -> {args.json}")
    except VAEZooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write {args.json}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
