"""The ``vaezoo`` commands about models themselves: list, info, train, eval, push, new-plugin and bench.

    vaezoo info vq-vae
    vaezoo train vae-mlp --data digits --epochs 30 --out runs/vae-digits
    vaezoo eval runs/vae-digits --data digits --json
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from vaezoo.bench import results_markdown, run_benchmark
from vaezoo.cli.interrupts import reported_interrupts
from vaezoo.cli.options import (
    DEVICE,
    DEVICE_HELP,
    data_dir_option,
    device_option,
    json_option,
    label_column_option,
    parse_sets,
    quiet_option,
    set_option,
    split_option,
    split_seed_option,
)
from vaezoo.eval.runs import eval_run
from vaezoo.io.cards import card_body
from vaezoo.scaffold import new_plugin
from vaezoo.training.config import TrainConfig
from vaezoo.training.runs import train_run
from vaezoo.zoo.factory import model_info
from vaezoo.zoo.pretrained import describe_tag, tag_card_text
from vaezoo.zoo.publish import push_to_hub
from vaezoo.zoo.registry import REGISTRY, get_model_class, list_models, split_name
from vaezoo.zoo.sources import is_folder_source, looks_like_path, source_info, training_data


@click.command("list")
@click.argument("pattern", default="*")
@click.option("--pretrained", is_flag=True, help="List pretrained tags (name.tag) instead of architectures.")
def list_command(pattern: str, pretrained: bool) -> None:
    """List registered models matching PATTERN (fnmatch wildcards).

    Example: vaezoo list 'beta*'
    """
    names = list_models(pattern, pretrained=pretrained)
    if not names:
        what = "pretrained tags" if pretrained else "models"
        click.echo(f"no {what} match {pattern!r}", err=True)
        return
    if pretrained:
        rows = {name: describe_tag(name) for name in names}
        tag_width = max(20, *map(len, rows))  # columns as wide as the longest tag and dataset name
        data_width = max(14, *(len(row["dataset"]) for row in rows.values()))
        click.echo(f"{'tag':<{tag_width}} {'dataset':<{data_width}} {'test NLL':>9} {'-ELBO':>9}  weights")
        for name, row in rows.items():
            nll = f"{row['nll']:9.2f}" if row.get("nll") is not None else f"{'n/a':>9}"
            elbo = f"{row['neg_elbo']:9.2f}" if row.get("neg_elbo") is not None else f"{'-':>9}"
            click.echo(f"{name:<{tag_width}} {row['dataset']:<{data_width}} {nll} {elbo}  {row['weights']}")
        return
    for name in names:
        entry = REGISTRY.entries[name.partition(".")[0]]
        click.echo(f"{name:<24} {entry.distribution}")


@click.command("info")
@click.argument("name", metavar="MODEL")
@json_option
def info_command(name: str, as_json: bool) -> None:
    """Show a model's config, parameter count, capabilities, reported metrics, presets, tags and plugin distribution.

    MODEL is a registry name or tag, a run or model folder, or hf-hub:ORG/NAME, as for sample and eval;
    a folder's own config, card and training data are shown.

    Example: vaezoo info hvae && vaezoo info runs/vae-digits
    """
    if is_folder_source(name) or looks_like_path(name):
        info = source_info(name)
        card = card_body(info["folder"])
    else:
        info = model_info(name)
        model_class = get_model_class(name)
        info["train_defaults"] = dict(model_class.train_defaults)
        info["compile_pays_after_steps"] = model_class.compile_pays_after_steps
        info.update({"data": training_data(name)} if training_data(name) else {})
        card = tag_card_text(name) if split_name(name)[1] is not None else ""
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if card:
        click.echo(card.rstrip())
        click.echo()
    _print_info(info)


def _print_info(info: Mapping[str, Any]) -> None:
    click.echo(f"{info['name']}: {info['summary']}")
    if "folder" in info:
        click.echo(f"  folder        {info['folder']}")
    click.echo(f"  class         {info['class']}")
    click.echo(f"  distribution  {info['distribution']}")
    click.echo(f"  parameters    {info['parameters']:,}")
    click.echo(f"  presets       {', '.join(info['presets']) or '-'}")
    click.echo(f"  tags          {', '.join(info['pretrained_tags']) or '-'}")
    click.echo(f"  capabilities  {_flags(info['capabilities'])}")
    if "data" in info:
        data = info["data"]
        click.echo(f"  trained on    {data['data']} (split seed {data.get('split_seed') or 0}"
                   + (f", data dir {data['data_dir']})" if data.get("data_dir") else ")"))
    if info.get("train_defaults"):
        click.echo(f"  train defaults  {', '.join(f'{k}={v}' for k, v in info['train_defaults'].items())}")
    if "compile_pays_after_steps" in info:
        after = info["compile_pays_after_steps"]
        click.echo("  compile       " + ("off by default (not measured to pay)" if after is None else
                                         f"on by default on a CPU for a stage of {after:,} steps or more (measured)"))
    if info["reported_metrics"]:
        click.echo("  reported metrics")
        for metric, meaning in info["reported_metrics"].items():
            click.echo(f"    {metric:<24} {meaning}")
    else:
        click.echo("  reported metrics  -")
    click.echo("  config")
    for key, value in info["config"].items():
        click.echo(f"    {key:<24} {json.dumps(value)}")
    if "train" in info:
        click.echo("  training")
        for key, value in info["train"].items():
            click.echo(f"    {key:<24} {json.dumps(value)}")


def _flags(flags: Mapping[str, bool]) -> str:
    """``{"conditional": False, "temperature": True}`` -> ``"conditional=no, temperature=yes"``."""
    return ", ".join(f"{name}={'yes' if value else 'no'}" for name, value in flags.items())


COMPILE_HELP = ("torch.compile the training step (--no-compile: never). Default: only where "
                "benchmarks/compile_default.py measured it to pay on a CPU, for a stage at least as long as the variant's "
                "break-even (`vaezoo info NAME` shows it); eager on GPUs "
                "and under torchrun until measured there.")
VARIANT_DEFAULT = ", unless the variant's train defaults set it: see `vaezoo info NAME`"


@click.command("train")
@click.argument("name")
@click.option("--data", "data_name", help="Dataset: digits, fashion-mnist, mnist, or a path (.npy/.npz/.csv/image folder).")
@data_dir_option
@click.option("--epochs", type=int, help=f"Epochs per training stage (default {TrainConfig.epochs}{VARIANT_DEFAULT}).")
@click.option("--batch-size", type=int, help=f"Global batch size (default {TrainConfig.batch_size}{VARIANT_DEFAULT}).")
@click.option("--lr", type=float, help=f"Peak learning rate (default {TrainConfig.lr:g}{VARIANT_DEFAULT}).")
@set_option("Override a model or training config field, e.g. --set latent_dim=10 --set hidden_dims=[256].")
@click.option("--device", type=DEVICE, help=f"{DEVICE_HELP} Default: {TrainConfig.device}.")
@click.option("--compile/--no-compile", "compile_", default=None, help=COMPILE_HELP)
@click.option("--seed", type=int, help=f"Seed for initialisation, data order and noise (default {TrainConfig.seed}).")
@split_seed_option
@label_column_option
@click.option("--memory-budget", "memory_budget_mb", type=float, metavar="MB",
              help="MiB of float32 samples to hold in memory; a .npy or image folder over it is streamed from disk "
                   "(default $VAEZOO_MEMORY_BUDGET_MB, else a quarter of memory).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder to create (or to resume).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(name: str, data_name: str | None, data_dir: str | None, epochs: int | None, batch_size: int | None,
                  lr: float | None, sets: tuple[str, ...], device: str | None, compile_: bool | None, seed: int | None,
                  split_seed: int, label_column: str | None, memory_budget_mb: float | None, out_dir: str, resume: bool,
                  quiet: bool) -> None:
    """Train model NAME (or a pretrained tag's config, NAME.TAG) and write a run folder.

    Example: vaezoo train vae-mlp --data digits --epochs 30 --out runs/vae-digits
    """
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device, "compile": compile_, "seed": seed}
    resume_command = ["vaezoo", "train", name, "--resume", "--out", out_dir] + (["--data-dir", data_dir] if data_dir else [])
    resume_command += ["--memory-budget", f"{memory_budget_mb:g}"] if memory_budget_mb is not None else []
    with reported_interrupts(out_dir, resume_command):  # Ctrl-C or SIGTERM: one line naming the checkpoint kept
        result = train_run(
            name, data_name, out_dir, data_dir=data_dir, split_seed=split_seed, resume=resume,
            overrides=parse_sets(sets), train_flags={k: v for k, v in flags.items() if v is not None},
            progress=not quiet, label_column=label_column, memory_budget_mb=memory_budget_mb,
        )
    val = result.val_metrics
    summary = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if k in ("neg_elbo", "recon", "kl", "loss"))
    click.echo(f"done: {result.out_dir} (val {summary})")


@click.command("eval")
@click.argument("model_source", metavar="MODEL")
@click.option("--data", "data_name",
              help="Dataset name or path, as for train (default: the data MODEL was trained on, as it records).")
@data_dir_option
@split_option
@click.option("--split-seed", type=int,
              help="Seed of the train/val/test split (default: the one MODEL was trained with, on its own data; else 0).")
@label_column_option
@click.option("--allow-overlap", is_flag=True,
              help="Evaluate even on rows MODEL was trained on (its train split), e.g. to measure the training fit.")
@click.option("--iw-samples", type=click.IntRange(min=0), default=100, show_default=True,
              help="Importance samples for the NLL estimate (0 = skip it).")
@click.option("--iw-examples", type=click.IntRange(min=1), default=None,
              help="Estimate the NLL on the first N examples only (it costs K forward passes each; default: all).")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@device_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise (same seed, same figures).")
@quiet_option
@json_option
def eval_command(model_source: str, data_name: str | None, data_dir: str | None, split: str, split_seed: int | None,
                 label_column: str | None, allow_overlap: bool, iw_samples: int, iw_examples: int | None, batch_size: int, device: str, seed: int,
                 quiet: bool, as_json: bool) -> None:
    """Evaluate MODEL (a run folder, a tag or hf-hub:ORG/NAME) on a data split; metrics in nats per example.

    Example: vaezoo eval runs/vae-digits --iw-samples 1000 --json
    """
    metrics = eval_run(model_source, data_name, data_dir=data_dir, split=split, split_seed=split_seed,
                       iw_samples=iw_samples, batch_size=batch_size, device=device, iw_examples=iw_examples, seed=seed,
                       allow_overlap=allow_overlap, progress=not quiet, label_column=label_column)
    if as_json:
        click.echo(json.dumps(metrics, default=float))  # default: a numpy or 0-d torch scalar a variant reported
        return
    width = max(16, *map(len, metrics))
    for key, value in metrics.items():
        click.echo(f"{key:<{width}} {_metric_text(value)}")


def _metric_text(value: Any) -> str:
    """A float to 4 decimals; named figures (e.g. kl_per_layer) as ``kl_0=1.2345, kl_1=0.5678``; anything else as is."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{name}={_metric_text(part)}" for name, part in value.items())
    return str(value)


@click.command("push")
@click.argument("run_dir", type=click.Path())
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="Hub repo to create or update, e.g. my-org/vae-digits.")
@click.option("--private", is_flag=True, help="Create the repo as private (an existing repo keeps its visibility).")
@click.option("--revision", metavar="BRANCH", help="Branch to push to, created from main if missing (default main).")
@click.option("--token", help="Hub token with write access (default: HF_TOKEN, then the `hf auth login` token).")
def push_command(run_dir: str, repo_id: str, private: bool, revision: str | None, token: str | None) -> None:
    """Publish RUN_DIR's config.json, model.safetensors and README.md to the Hugging Face Hub (safetensors only).

    Example: vaezoo push runs/vae-digits --repo-id my-org/vae-digits --revision v1
    """
    url = push_to_hub(run_dir, repo_id, private=private, revision=revision, token=token)
    click.echo(f"pushed {run_dir} to {repo_id}{'@' + revision if revision else ''}: {url}")


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(), help="Folder to create (default: ./NAME); must be new or empty.")
def new_plugin_command(name: str, directory: str | None) -> None:
    """Write a ready-to-install plugin package for a new variant NAME: a working VAE, its entry point,
    a test that runs vaezoo.testing.check_model on it, and a README.

    Example: vaezoo new-plugin sparse-vae --dir ../sparse-vae && pip install -e ../sparse-vae
    """
    plugin = new_plugin(name, directory)
    click.echo(f"created {plugin.directory} ({plugin.class_name} in {plugin.module}/model.py):")
    for path in plugin.files:
        click.echo(f"  {path}")
    click.echo(f"next: pip install -e {plugin.directory} && vaezoo list && python3 -m pytest {plugin.directory}")


@click.command("bench")
@click.argument("names", nargs=-1, metavar="[NAME ...]")
@click.option("--data", "data_name", help="Dataset: digits or fashion-mnist (any load_data name works; default digits with --quick).")
@click.option("--epochs", type=int, help="Epochs per training stage, the same for every model (default 20; 15 with --quick).")
@click.option("--minutes", type=float, help="Training minutes per model instead of --epochs (epochs estimated from one timed epoch).")
@click.option("--pretrained", is_flag=True, help="Load NAME.digits / NAME.fmnist weights instead of training (n/a where none).")
@click.option("--quick", is_flag=True, help="Defaults for a fast look: digits, 15 epochs, 100 importance samples.")
@click.option("--iw-samples", type=int, help="Importance samples for the test NLL (default 1000; 100 with --quick; 0 skips it).")
@click.option("--iw-examples", type=int, help="Estimate the NLL on the first N test examples only (default: all).")
@click.option("--holdout-class", type=int, default=0, show_default=True, help="Class left out of the anomaly detector's training.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every model's initialisation, training and evaluation (each model from the seed alone).")
@click.option("--out", "out_dir", default="bench", show_default=True, type=click.Path(),
              help="Folder for results.json, results.md and the figures.")
@click.option("--fd-features", metavar="TIMM_NAME", help="Frechet distances in this pretrained timm network's features "
              "(e.g. inception_v3.tv_in1k, FID's) instead of the dataset's shipped classifier: for your own image folders.")
@click.option("--fd-weights", type=click.Path(), help="Local .safetensors weights of the --fd-features network (default: "
              "its Hub repo, through the Hugging Face cache).")
@set_option("Override a config field of the variants that have it, or a training field, e.g. --set batch_size=64.")
@quiet_option
def bench_command(names: tuple[str, ...], data_name: str | None, epochs: int | None, minutes: float | None,
                  pretrained: bool, quick: bool, iw_samples: int | None, iw_examples: int | None, holdout_class: int,
                  seed: int, out_dir: str, fd_features: str | None, fd_weights: str | None, sets: tuple[str, ...],
                  quiet: bool) -> None:
    """Train every model (or NAME ...) under one budget and compare them on the same test metrics.

    Example: vaezoo bench vae-mlp vq-vae --data digits --epochs 15 --out bench/digits
    """
    results = run_benchmark(
        list(names) or None, data_name, epochs=epochs, minutes=minutes, pretrained=pretrained, quick=quick,
        out_dir=out_dir, overrides=parse_sets(sets), seed=seed, iw_samples=iw_samples, iw_examples=iw_examples,
        holdout_class=holdout_class, progress=not quiet, fd_features=fd_features, fd_weights=fd_weights,
    )
    click.echo(results_markdown(results).rstrip())
    click.echo(f"wrote {out_dir}/results.json, results.md and figures")


COMMANDS = (list_command, info_command, train_command, eval_command, push_command, new_plugin_command, bench_command)
