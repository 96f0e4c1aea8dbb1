"""The ``vaezoo`` command line. Thin: each command parses, calls one public function, prints.

    vaezoo list                 # every registered model
    vaezoo list '*vae' --pretrained
    vaezoo info vae-mlp

Errors are one line on stderr and a non-zero exit; set VAEZOO_DEBUG=1 to see a traceback.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

import click

from vaezoo.apps.runs import (
    run_anomaly,
    run_augment,
    run_explore,
    run_impute,
    run_interpolate,
    run_reconstruct,
    run_sample,
    run_transfer,
)
from vaezoo.bench import results_markdown, run_benchmark
from vaezoo.core.config import parse_override
from vaezoo.errors import VAEZooError
from vaezoo.eval.runs import eval_run
from vaezoo.scaffold import new_plugin
from vaezoo.train.runs import train_run
from vaezoo.zoo.factory import model_info
from vaezoo.zoo.pretrained import describe_tag, tag_card_text
from vaezoo.zoo.publish import push_to_hub
from vaezoo.zoo.registry import REGISTRY, list_models, split_name


class VAEZooGroup(click.Group):
    """Turns every error into one line on stderr and exit code 1 (2 for usage errors, as click does)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as error:  # click would print usage, a hint and the error on four lines
            if isinstance(error, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # bare `vaezoo`: the help
                error.show()
                sys.exit(error.exit_code)
            where = error.ctx.command_path if error.ctx is not None else "vaezoo"
            _fail(f"{error.format_message()} (see `{where} --help`)", code=error.exit_code)
        except click.ClickException as error:
            _fail(error.format_message(), code=error.exit_code)
        except click.exceptions.Abort:
            _fail("aborted")
        sys.exit(result if isinstance(result, int) else 0)  # what click's standalone mode does on success

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except VAEZooError as error:
            _fail(str(error))
        except KeyboardInterrupt:
            _fail("interrupted")
        except Exception as error:  # a bug: still one line, with a way to see the traceback
            if os.environ.get("VAEZOO_DEBUG"):
                raise
            _fail(f"internal error: {type(error).__name__}: {error} (rerun with VAEZOO_DEBUG=1 for the traceback)")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


@click.group(cls=VAEZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaezoo")
def main() -> None:
    """vaezoo: a plugin-based zoo of variational autoencoders.

    Example: vaezoo list && vaezoo info vae-mlp
    """
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {message}\n"


@main.command("list")
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
        click.echo(f"{'tag':<20} {'dataset':<14} {'test NLL':>9} {'-ELBO':>9}  weights")
        for name in names:
            row = describe_tag(name)
            nll = f"{row['nll']:9.2f}" if row.get("nll") is not None else f"{'n/a':>9}"
            elbo = f"{row['neg_elbo']:9.2f}" if row.get("neg_elbo") is not None else f"{'-':>9}"
            click.echo(f"{name:<20} {row['dataset']:<14} {nll} {elbo}  {row['weights']}")
        return
    for name in names:
        entry = REGISTRY.entries[name.partition(".")[0]]
        click.echo(f"{name:<24} {entry.distribution}")


@main.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(name: str, as_json: bool) -> None:
    """Show a model's config, parameter count, presets, tags and plugin distribution.

    Example: vaezoo info hvae
    """
    info = model_info(name)
    if split_name(name)[1] is not None and not as_json:
        card = tag_card_text(name)
        if card:
            click.echo(card.rstrip())
            click.echo()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['name']}: {info['summary']}")
    click.echo(f"  class         {info['class']}")
    click.echo(f"  distribution  {info['distribution']}")
    click.echo(f"  parameters    {info['parameters']:,}")
    click.echo(f"  presets       {', '.join(info['presets']) or '-'}")
    click.echo(f"  tags          {', '.join(info['pretrained_tags']) or '-'}")
    click.echo("  config")
    for key, value in info["config"].items():
        click.echo(f"    {key:<24} {json.dumps(value)}")


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_override(pair) for pair in pairs)


@main.command("train")
@click.argument("name")
@click.option("--data", "data_name", help="Dataset: digits, fashion-mnist, mnist, or a path (.npy/.npz/.csv/image folder).")
@click.option("--data-dir", type=click.Path(), help="Folder holding the dataset's files.")
@click.option("--epochs", type=int, help="Epochs per training stage (default 20).")
@click.option("--batch-size", type=int, help="Global batch size (default 128).")
@click.option("--lr", type=float, help="Peak learning rate (default 1e-3).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a model or training config field, e.g. --set latent_dim=10 --set hidden_dims=[256].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train (default auto).")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the training step.")
@click.option("--seed", type=int, help="Seed for initialisation, data order and noise (default 0).")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder to create (or to resume).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(name: str, data_name: str | None, data_dir: str | None, epochs: int | None, batch_size: int | None,
                  lr: float | None, sets: tuple[str, ...], device: str | None, compile_: bool | None, seed: int | None,
                  split_seed: int, out_dir: str, resume: bool, quiet: bool) -> None:
    """Train model NAME (or a pretrained tag's config, NAME.TAG) and write a run folder.

    Example: vaezoo train vae-mlp --data digits --epochs 30 --out runs/vae-digits
    """
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device, "compile": compile_, "seed": seed}
    result = train_run(
        name, data_name, out_dir, data_dir=data_dir, split_seed=split_seed, resume=resume,
        overrides=_parse_sets(sets), train_flags={k: v for k, v in flags.items() if v is not None},
        progress=not quiet,
    )
    val = result.val_metrics
    summary = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if k in ("neg_elbo", "recon", "kl", "loss"))
    click.echo(f"done: {result.out_dir} (val {summary})")


@main.command("eval")
@click.argument("model_source", metavar="MODEL")
@click.option("--data", "data_name", required=True, help="Dataset name or path, as for train.")
@click.option("--data-dir", type=click.Path(), help="Folder holding the dataset's files.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@click.option("--iw-samples", type=click.IntRange(min=0), default=100, show_default=True,
              help="Importance samples for the NLL estimate (0 = skip it).")
@click.option("--iw-examples", type=click.IntRange(min=1), default=None,
              help="Estimate the NLL on the first N examples only (it costs K forward passes each).")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise (same seed, same figures).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(model_source: str, data_name: str, data_dir: str | None, split: str, split_seed: int,
                 iw_samples: int, iw_examples: int | None, batch_size: int, device: str, seed: int, as_json: bool) -> None:
    """Evaluate MODEL (a run folder) on a data split; metrics in nats per example.

    Example: vaezoo eval runs/vae-digits --data digits --iw-samples 1000 --json
    """
    metrics = eval_run(model_source, data_name, data_dir=data_dir, split=split, split_seed=split_seed,
                       iw_samples=iw_samples, batch_size=batch_size, device=device, iw_examples=iw_examples, seed=seed)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    for key, value in metrics.items():
        click.echo(f"{key:<16} {value:.4f}" if isinstance(value, float) else f"{key:<16} {value}")


@main.command("push")
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


@main.command("new-plugin")
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


@main.command("bench")
@click.argument("names", nargs=-1, metavar="[NAME ...]")
@click.option("--data", "data_name", help="Dataset: digits or fashion-mnist (any load_data name works; default digits with --quick).")
@click.option("--epochs", type=int, help="Epochs per training stage, the same for every model (default 20; 15 with --quick).")
@click.option("--minutes", type=float, help="Training minutes per model instead of --epochs (epochs estimated from one timed epoch).")
@click.option("--pretrained", is_flag=True, help="Load NAME.digits / NAME.fmnist weights instead of training (n/a where none).")
@click.option("--quick", is_flag=True, help="Defaults for a fast look: digits, 15 epochs, 100 importance samples.")
@click.option("--iw-samples", type=int, help="Importance samples for the test NLL (default 1000; 100 with --quick; 0 skips it).")
@click.option("--iw-examples", type=int, help="Estimate the NLL on the first N test examples only (default: all).")
@click.option("--holdout-class", type=int, default=0, show_default=True, help="Class left out of the anomaly detector's training.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every model's training and evaluation.")
@click.option("--out", "out_dir", default="bench", show_default=True, type=click.Path(),
              help="Folder for results.json, results.md and the figures.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config field of the variants that have it, or a training field, e.g. --set batch_size=64.")
def bench_command(names: tuple[str, ...], data_name: str | None, epochs: int | None, minutes: float | None,
                  pretrained: bool, quick: bool, iw_samples: int | None, iw_examples: int | None, holdout_class: int,
                  seed: int, out_dir: str, sets: tuple[str, ...]) -> None:
    """Train every model (or NAME ...) under one budget and compare them on the same test metrics.

    Example: vaezoo bench vae-mlp vq-vae --data digits --epochs 15 --out bench/digits
    """
    results = run_benchmark(
        list(names) or None, data_name, epochs=epochs, minutes=minutes, pretrained=pretrained, quick=quick,
        out_dir=out_dir, overrides=_parse_sets(sets), seed=seed, iw_samples=iw_samples, iw_examples=iw_examples,
        holdout_class=holdout_class,
    )
    click.echo(results_markdown(results).rstrip())
    click.echo(f"wrote {out_dir}/results.json, results.md and figures")


# --- applications (seed sections 3 and 7): each command calls one function of vaezoo.app_runs ----------------
def _app_data_options(command: Any) -> Any:
    """--data, --split, --data-dir and --split-seed, shared by the commands that read examples."""
    for option in reversed([
        click.option("--data", "data_name", required=True, help="Dataset name or path, as for train (e.g. digits)."),
        click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True),
        click.option("--data-dir", type=click.Path(), help="Folder holding the dataset's files."),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split."),
    ]):
        command = option(command)
    return command


def _app_common_options(command: Any) -> Any:
    """-o/--out and --device, shared by every application command."""
    command = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)(command)
    return click.option("-o", "--out", "out", required=True, type=click.Path(),
                        help="Output file; its extension picks the format (.png grid, .npy, .npz, .csv).")(command)


@main.command("sample")
@click.argument("model_source", metavar="MODEL")
@click.option("--n", type=click.IntRange(min=1), default=64, show_default=True, help="Number of samples.")
@click.option("--label", type=int, help="Class to draw (conditional models such as cvae; default: every class in turn).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Scale of the prior's noise (< 1: typical samples).")
@click.option("--seed", type=int, default=0, show_default=True)
@_app_common_options
def sample_command(model_source: str, n: int, label: int | None, temperature: float, seed: int, out: str, device: str) -> None:
    """Generate samples from MODEL's prior (vq-vae: its learned prior) to a PNG grid, .npy or .npz (x, y).

    Example: vaezoo sample cvae.fmnist --n 64 --label 7 -o sevens.png
    """
    result = run_sample(model_source, out, n=n, label=label, temperature=temperature, seed=seed, device=device)
    click.echo(f"wrote {result['n']} samples to {result['out']}")


@main.command("reconstruct")
@click.argument("model_source", metavar="MODEL")
@_app_data_options
@click.option("--n", type=click.IntRange(min=1), default=32, show_default=True, help="Reconstruct the first N examples.")
@_app_common_options
def reconstruct_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int, n: int,
                        out: str, device: str) -> None:
    """Reconstruct examples of DATA through MODEL (PNG: each row of originals above its reconstructions).

    Example: vaezoo reconstruct vae-mlp.fmnist --data fashion-mnist --n 32 -o recon.png
    """
    result = run_reconstruct(model_source, data_name, out, n=n, split=split, data_dir=data_dir, split_seed=split_seed,
                             device=device)
    click.echo(f"wrote {result['n']} reconstructions to {result['out']} (mean squared error {result['mse']:.4f})")


@main.command("interpolate")
@click.argument("model_source", metavar="MODEL")
@_app_data_options
@click.option("--from", "index_from", type=int, required=True, help="Index of the first example in the split.")
@click.option("--to", "index_to", type=int, required=True, help="Index of the last example in the split.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Images on the path, ends included.")
@click.option("--method", type=click.Choice(["lerp", "slerp"]), default="lerp", show_default=True)
@_app_common_options
def interpolate_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int,
                        index_from: int, index_to: int, steps: int, method: str, out: str, device: str) -> None:
    """Decode a path in latent space between two examples of DATA (PNG: one row).

    Example: vaezoo interpolate vae-mlp.digits --data digits --from 0 --to 5 --method slerp -o path.png
    """
    result = run_interpolate(model_source, data_name, out, index_from, index_to, steps=steps, method=method, split=split,
                             data_dir=data_dir, split_seed=split_seed, device=device)
    start, end = result["end_mse"]
    click.echo(f"wrote {result['steps']} images to {result['out']} (ends vs the originals: mean squared error "
               f"{start:.4f} and {end:.4f})")


@main.command("anomaly")
@click.argument("model_source", metavar="MODEL")
@_app_data_options
@click.option("--normal-classes", metavar="C1,C2,...", help="Classes that are normal; the rest are anomalies (gives AUROC).")
@click.option("--method", type=click.Choice(["elbo", "iwae"]), default="elbo", show_default=True,
              help="Score by -ELBO, or by the importance-weighted -log p(x).")
@click.option("--quantile", type=float, default=0.95, show_default=True,
              help="Threshold: this quantile of the scores of the validation split's normal examples.")
@click.option("--iw-samples", type=click.IntRange(min=1), default=100, show_default=True, help="Samples for --method iwae.")
@click.option("--seed", type=int, default=0, show_default=True)
@_app_common_options
def anomaly_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int,
                    normal_classes: str | None, method: str, quantile: float, iw_samples: int, seed: int, out: str,
                    device: str) -> None:
    """Score each example of DATA by how unlikely MODEL finds it, flag those above a validation quantile (CSV).

    Example: vaezoo anomaly runs/no-zeros --data digits --normal-classes 1,2,3,4,5,6,7,8,9 -o scores.csv
    """
    report = run_anomaly(model_source, data_name, out, normal_classes=normal_classes, method=method, quantile=quantile,
                         k=iw_samples, split=split, data_dir=data_dir, split_seed=split_seed, seed=seed, device=device)
    click.echo(report.summary())
    click.echo(f"wrote {out}")


@main.command("impute")
@click.argument("model_source", metavar="MODEL")
@click.option("--input", "input_path", required=True, type=click.Path(), help=".npy array; NaN marks missing values.")
@click.option("--mask", "mask_path", type=click.Path(), help=".npy of bools, the input's shape: True = missing.")
@click.option("--labels", "labels_path", type=click.Path(), help=".npy of class ids, for a conditional model.")
@click.option("--method", type=click.Choice(["iterate", "mwg"]), default="iterate", show_default=True,
              help="Iterated reconstruction, or Metropolis-within-Gibbs (Mattei and Frellsen 2018).")
@click.option("--iterations", type=click.IntRange(min=1), help="Steps (default 20 for iterate, 300 for mwg).")
@click.option("--seed", type=int, default=0, show_default=True)
@_app_common_options
def impute_command(model_source: str, input_path: str, mask_path: str | None, labels_path: str | None, method: str,
                   iterations: int | None, seed: int, out: str, device: str) -> None:
    """Fill the missing values of an array with MODEL; observed values are kept exactly.

    Example: vaezoo impute vae-mlp.digits --input x.npy --mask m.npy -o filled.npy
    """
    result = run_impute(model_source, input_path, out, mask_path=mask_path, labels_path=labels_path, method=method,
                        iterations=iterations, seed=seed, device=device)
    click.echo(f"filled {result['missing']} missing values in {result['examples']} examples ({method}); wrote {result['out']}")


@main.command("transfer")
@click.argument("model_source", metavar="MODEL")
@_app_data_options
@click.option("--to-label", type=int, required=True, help="Class to re-render the examples as.")
@click.option("--n", type=click.IntRange(min=1), default=8, show_default=True, help="Number of examples.")
@_app_common_options
def transfer_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int, to_label: int,
                     n: int, out: str, device: str) -> None:
    """Re-render examples of DATA as class --to-label with a conditional MODEL, keeping their style (PNG: originals above).

    Example: vaezoo transfer cvae.fmnist --data fashion-mnist --to-label 7 -o sneakers.png
    """
    result = run_transfer(model_source, data_name, out, to_label, n=n, split=split, data_dir=data_dir,
                          split_seed=split_seed, device=device)
    accuracy = result["classifier_accuracy"]
    read_as = "" if accuracy is None else f"; the dataset's classifier reads {accuracy:.0%} as class {to_label}"
    click.echo(f"wrote {result['n']} examples as class {to_label} to {result['out']}{read_as}")


@main.command("explore")
@click.argument("model_source", metavar="MODEL")
@_app_data_options
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True, help="2-D map of the latent means.")
@click.option("--traverse", is_flag=True, help="Draw a latent traversal grid instead: one row per latent dim.")
@click.option("--n", type=click.IntRange(min=1), default=2000, show_default=True, help="Use the first N examples.")
@click.option("--rows", type=click.IntRange(min=1), default=10, show_default=True, help="Traversal: the most active dims.")
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True, help="Traversal: images per row.")
@click.option("--span", type=float, default=3.0, show_default=True, help="Traversal: +- this many standard deviations.")
@click.option("--seed", type=int, default=0, show_default=True)
@_app_common_options
def explore_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int, method: str,
                    traverse: bool, n: int, rows: int, steps: int, span: float, seed: int, out: str, device: str) -> None:
    """Map MODEL's latent means of DATA to 2-D coloured by class (.png, .csv, .npy), or draw a traversal (--traverse).

    Example: vaezoo explore vae-mlp.fmnist --data fashion-mnist --method tsne -o latent.png
    """
    result = run_explore(model_source, data_name, out, method=method, traverse=traverse, n=n, rows=rows, steps=steps,
                         span=span, split=split, data_dir=data_dir, split_seed=split_seed, seed=seed, device=device)
    if traverse:
        click.echo(f"wrote a traversal of latent dims {result['dims']} (spread {result['spread']}) to {result['out']}")
    else:
        click.echo(f"wrote a {method} map of {result['examples']} examples to {result['out']}")


@main.command("augment")
@click.argument("model_source", metavar="MODEL")
@click.option("--n", type=click.IntRange(min=1), required=True, help="Examples to write (per class with --per-class).")
@click.option("--per-class", is_flag=True, help="N examples of every class (conditional models such as cvae).")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_app_common_options
def augment_command(model_source: str, n: int, per_class: bool, temperature: float, seed: int, out: str, device: str) -> None:
    """Write synthetic training examples (with labels from a conditional model) as .npz (x, y), .npy or a PNG grid.

    Example: vaezoo augment cvae.digits --n 100 --per-class -o synth.npz
    """
    result = run_augment(model_source, out, n, per_class=per_class, temperature=temperature, seed=seed, device=device)
    labelled = " with labels" if result["labelled"] else ""
    click.echo(f"wrote {result['examples']} synthetic examples{labelled} to {result['out']}")


if __name__ == "__main__":
    main()
