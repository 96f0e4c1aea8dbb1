"""Regenerate the pretrained zoo: train every tag with its recipe, export fp16 weights and a model card.

    python benchmarks/train_zoo.py                       # every tag (Fashion-MNIST ones take a while on a CPU)
    python benchmarks/train_zoo.py --tags '*.digits'     # the small ones
    python benchmarks/train_zoo.py --tags hvae.fmnist --iw-samples 1000

Each tag is trained by the same code path as ``vaezoo train TAG --data DATASET --seed 0 --set <recipe>``
into ``--runs/<tag>``, then its weights are stored as float16 safetensors in the plugin's
``weights/<tag>/`` folder (what ships in the package), evaluated there with ``vaezoo eval``'s code on
the test split (seeded, so the card's -ELBO is reproducible), and described by a model card whose
metrics are those measured figures. A finished (or interrupted) run is reused unless ``--retrain`` is given,
and only if its config.json records the tag's config and recipe as they are now: a run of an older recipe is an
error naming the first difference, so that a card never states a recipe its weights were not trained with.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.eval.runs import eval_run  # noqa: E402
from vaezoo.io.cards import write_model_card  # noqa: E402
from vaezoo.training.runs import train_run
from vaezoo.zoo.builder import load_model_dir, save_model_dir  # noqa: E402
from vaezoo.zoo.pretrained import pretrained_tag, shipped_weights_dir

HEADLINE = ("neg_elbo", "recon", "kl", "nll", "iw_samples", "nll_examples", "perplexity", "code_usage")


def headline_metrics(metrics: dict) -> dict:
    """The figures a card states: HEADLINE's, and the KL of every layer or latent group (kl_0, kl_1, ...)."""
    headline = {key: value for key, value in metrics.items() if key in HEADLINE or re.fullmatch(r"kl_\d+", key)}
    if "neg_elbo" not in metrics and "loss" in metrics:  # no ELBO (wae): the card states the objective instead
        headline["loss"] = metrics["loss"]
    return headline


def training_command(tag: str, dataset: str, recipe: dict) -> str:
    sets = " ".join(f"--set {key}={json.dumps(list(v) if isinstance(v, tuple) else v).replace(' ', '')}"
                    for key, v in recipe.items())
    return f"vaezoo train {tag} --data {dataset} --seed 0 {sets} --out runs/zoo/{tag}".replace("  ", " ")


def recipe_difference(run_dir: Path, tag: str) -> str | None:
    """The first way the run recorded in ``run_dir/config.json`` differs from what ``tag``'s config and recipe
    train now (its data, model config, recipe and seed 0), as ``key=recorded where the tag now says wanted``;
    None when the run is the tag's."""
    spec = pretrained_tag(tag)
    recorded = json.loads((run_dir / "config.json").read_text())
    wanted = [("data", "data", spec.dataset), *(("config", key, value) for key, value in spec.config.items())]
    for key, value in {**spec.recipe, "seed": 0}.items():
        wanted.append(("train" if key in recorded.get("train", {}) else "config", key, value))
    for section, key, value in wanted:
        got = recorded.get(section, {}).get(key)
        if json.loads(json.dumps(got)) != json.loads(json.dumps(value)):  # tuples and lists alike
            return f"{key}={json.dumps(got)} where the tag now says {json.dumps(value)}"
    return None


def build_tag(tag: str, runs: Path, iw_samples: int, iw_examples: int | None, retrain: bool) -> dict:
    spec = pretrained_tag(tag)
    run_dir = runs / tag
    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "config.json").is_file():
        difference = recipe_difference(run_dir, tag)
        if difference is not None:
            raise SystemExit(f"error: the run in {run_dir} was trained with {difference}; pass --retrain to train "
                             f"{tag} again with its recipe (or --runs to use another folder)")
    start = time.perf_counter()
    if not (run_dir / "model.safetensors").is_file():
        if (run_dir / "checkpoints" / "last.safetensors").is_file():  # an interrupted run: continue it
            train_run(tag, spec.dataset, run_dir, resume=True, progress=False)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: nothing to keep
            train_run(tag, spec.dataset, run_dir, overrides={**spec.recipe, "seed": 0}, progress=False)
    train_seconds = time.perf_counter() - start
    model = load_model_dir(run_dir)
    export = shipped_weights_dir(tag)
    export.mkdir(parents=True, exist_ok=True)
    save_model_dir(model, export, dtype=torch.float16)
    start = time.perf_counter()
    metrics = eval_run(str(export), spec.dataset, iw_samples=iw_samples if model.has_log_likelihood else 0,
                       iw_examples=iw_examples)
    eval_seconds = time.perf_counter() - start
    card_metrics = headline_metrics(metrics)
    card_metrics["test_examples"] = metrics["examples"]
    write_model_card(export, name=tag, dataset=spec.dataset, metrics=card_metrics,
                     command=training_command(tag, spec.dataset, spec.recipe))
    size = (export / "model.safetensors").stat().st_size
    return {"tag": tag, **card_metrics, "mb": size / 2**20, "train_s": train_seconds, "eval_s": eval_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", default="*", help="fnmatch pattern over `vaezoo list --pretrained`")
    parser.add_argument("--runs", default="runs/zoo", help="where the training runs go")
    parser.add_argument("--iw-samples", type=int, default=1000, help="importance samples for the test NLL")
    parser.add_argument("--iw-examples", type=int, default=1000,
                        help="test examples the NLL is estimated on (K forward passes each); 0 = all")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default); 1 lets two zoo "
                        "processes share a 2-core machine without oversubscribing it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("vaezoo pretrained zoo")
    tags = [t for t in vaezoo.list_models(pretrained=True) if fnmatch.fnmatchcase(t, args.tags)]
    print(f"{'tag':<18} {'-ELBO':>9} {'NLL':>9} {'K':>5} {'MB':>6} {'train s':>8} {'eval s':>7}")
    for tag in tags:
        row = build_tag(tag, Path(args.runs), args.iw_samples, args.iw_examples or None, args.retrain)
        nll = f"{row['nll']:9.2f}" if "nll" in row else f"{'n/a':>9}"
        elbo = f"{row['neg_elbo']:9.2f}" if "neg_elbo" in row else f"{'n/a':>9}"
        print(f"{tag:<18} {elbo} {nll} {row.get('iw_samples', '-'):>5} {row['mb']:6.2f} "
              f"{row['train_s']:8.0f} {row['eval_s']:7.0f}", flush=True)


if __name__ == "__main__":
    main()
