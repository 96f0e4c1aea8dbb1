"""The ``vaezoo`` application commands: sample, fit-sampler, reconstruct, interpolate, anomaly, impute, transfer, explore, ...

Each calls one function of vaezoo.apps.runs and prints what it wrote:

    vaezoo sample cvae.fmnist --n 64 --label 7 -o sevens.png
    vaezoo fit-sampler vae-mlp.digits --data digits --components 10 --out vae-gmm
    vaezoo sample vae-gmm --sampler gmm -o gmm.png
    vaezoo anomaly runs/no-zeros --data digits --normal-classes 1,2,3,4,5,6,7,8,9 -o scores.csv
"""
from __future__ import annotations

import click

from vaezoo.apps.runs import (
    run_anomaly,
    run_augment,
    run_explore,
    run_fit_sampler,
    run_impute,
    run_interpolate,
    run_reconstruct,
    run_sample,
    run_transfer,
)
from vaezoo.apps.samplers import FIT_ON
from vaezoo.cli.options import data_dir_option, data_options, device_option, output_options, split_seed_option
from vaezoo.core.samplers import LATENT_SAMPLERS


@click.command("sample")
@click.argument("model_source", metavar="MODEL")
@click.option("--n", type=click.IntRange(min=1), default=64, show_default=True, help="Number of samples.")
@click.option("--label", type=int, help="Class to draw (conditional models such as cvae; default: every class in turn).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Scale of the prior's noise (< 1: typical samples).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sampler", type=click.Choice(LATENT_SAMPLERS),
              help="Draw the latents from the sampler `vaezoo fit-sampler` fitted (gmm: a Gaussian mixture on the "
                   "training codes) instead of the prior.")
@output_options("a .png grid, .npy, or .npz (x, and y for a conditional model)")
def sample_command(model_source: str, n: int, label: int | None, temperature: float, seed: int, sampler: str | None,
                   out: str, device: str) -> None:
    """Generate samples from MODEL's prior (vq-vae: its learned prior) or fitted --sampler, to a PNG grid, .npy or .npz (x, y).

    Example: vaezoo sample cvae.fmnist --n 64 --label 7 -o sevens.png
    """
    result = run_sample(model_source, out, n=n, label=label, temperature=temperature, seed=seed, device=device,
                        sampler=sampler)
    click.echo(f"wrote {result['n']} samples{' from the ' + sampler + ' sampler' if sampler else ''} to {result['out']}")


@click.command("fit-sampler")
@click.argument("model_source", metavar="MODEL")
@click.option("--data", "data_name", required=True, help="The data MODEL was trained on, as for train (e.g. digits).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="Split whose posterior means the sampler is fitted on.")
@data_dir_option
@split_seed_option
@click.option("--sampler", "kind", type=click.Choice(LATENT_SAMPLERS), default=LATENT_SAMPLERS[0], show_default=True,
              help="gmm: a Gaussian mixture with full covariances (Ghosh et al. 2020, section 4).")
@click.option("--components", type=click.IntRange(min=1), default=10, show_default=True, help="Mixture components.")
@click.option("--fit-on", type=click.Choice(FIT_ON), default=FIT_ON[0], show_default=True,
              help="Codes to fit: one z ~ q(z | x) per example (the aggregate posterior), or the posterior means.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the codes drawn and of the mixture's initialisation.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Model folder to write (MODEL with the sampler).")
@device_option
def fit_sampler_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int, kind: str,
                        components: int, fit_on: str, seed: int, out_dir: str, device: str) -> None:
    """Fit a density to MODEL's latent codes of DATA, to sample from instead of the prior; write MODEL with it to --out.

    Example: vaezoo fit-sampler vae-mlp.digits --data digits --out vae-gmm && vaezoo sample vae-gmm --sampler gmm -o gmm.png
    """
    result = run_fit_sampler(model_source, data_name, out_dir, components=components, kind=kind, split=split,
                             data_dir=data_dir, split_seed=split_seed, seed=seed, device=device, fit_on=fit_on)
    click.echo(f"fitted a {result['components']}-component {result['kind']} sampler on {result['examples']} {split} "
               f"examples; wrote {result['out']} (sample it with `vaezoo sample {result['out']} --sampler {result['kind']}`)")


@click.command("reconstruct")
@click.argument("model_source", metavar="MODEL")
@data_options
@click.option("--n", type=click.IntRange(min=1), default=32, show_default=True, help="Reconstruct the first N examples.")
@output_options("a .png grid, .npy or .npz; for a model of any image size (autoencoder-kl) and a folder of images, "
                "also a folder: one PNG per image at its own size")
@click.option("--tile", type=click.IntRange(min=1), help="Code images with a side over this many pixels in overlapping "
              "tiles (autoencoder-kl's enable_tiling): memory bounded by one tile, for large photos.")
def reconstruct_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int, n: int,
                        out: str, device: str, tile: int | None) -> None:
    """Reconstruct examples of DATA through MODEL (PNG: each row of originals above its reconstructions).

    Example: vaezoo reconstruct vae-mlp.fmnist --data fashion-mnist --n 32 -o recon.png
    """
    result = run_reconstruct(model_source, data_name, out, n=n, split=split, data_dir=data_dir, split_seed=split_seed,
                             device=device, tile=tile)
    psnr = f", mean PSNR {result['psnr']:.2f} dB" if "psnr" in result else ""
    click.echo(f"wrote {result['n']} reconstructions to {result['out']} (mean squared error {result['mse']:.4f}{psnr})")


@click.command("interpolate")
@click.argument("model_source", metavar="MODEL")
@data_options
@click.option("--from", "index_from", type=int, required=True, help="Index of the first example in the split.")
@click.option("--to", "index_to", type=int, required=True, help="Index of the last example in the split.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Images on the path, ends included.")
@click.option("--method", type=click.Choice(["lerp", "slerp"]), default="lerp", show_default=True)
@output_options("a .png row, .npy or .npz")
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


@click.command("anomaly")
@click.argument("model_source", metavar="MODEL")
@data_options
@click.option("--normal-classes", metavar="C1,C2,...", help="Classes that are normal; the rest are anomalies (gives AUROC).")
@click.option("--method", type=click.Choice(["elbo", "iwae"]), default="elbo", show_default=True,
              help="Score by -ELBO, or by the importance-weighted -log p(x).")
@click.option("--quantile", type=float, default=0.95, show_default=True,
              help="Threshold: this quantile of the scores of the validation split's normal examples.")
@click.option("--iw-samples", type=click.IntRange(min=1), default=100, show_default=True, help="Samples for --method iwae.")
@click.option("--seed", type=int, default=0, show_default=True)
@output_options("a .csv table of scores")
def anomaly_command(model_source: str, data_name: str, split: str, data_dir: str | None, split_seed: int,
                    normal_classes: str | None, method: str, quantile: float, iw_samples: int, seed: int, out: str,
                    device: str) -> None:
    """Score each example of DATA by how unlikely MODEL finds it, flag those above a validation quantile (CSV).

    Example: vaezoo anomaly runs/no-zeros --data digits --normal-classes 1,2,3,4,5,6,7,8,9 -o scores.csv
    """
    report = run_anomaly(model_source, data_name, out, normal_classes=normal_classes, method=method, quantile=quantile,
                         iw_samples=iw_samples, split=split, data_dir=data_dir, split_seed=split_seed, seed=seed, device=device)
    click.echo(report.summary())
    click.echo(f"wrote {out}")


@click.command("impute")
@click.argument("model_source", metavar="MODEL")
@click.option("--input", "input_path", required=True, type=click.Path(), help=".npy array; NaN marks missing values.")
@click.option("--mask", "mask_path", type=click.Path(), help=".npy of bools, the input's shape: True = missing.")
@click.option("--labels", "labels_path", type=click.Path(), help=".npy of class ids, for a conditional model.")
@click.option("--method", type=click.Choice(["importance", "iterate", "mwg"]),
              help="importance: E[missing | observed] by importance weighting (default where the model has a likelihood "
                   "bound); iterate: iterated reconstruction (default otherwise); mwg: Metropolis-within-Gibbs.")
@click.option("--iterations", type=click.IntRange(min=1),
              help="Rounds or steps (default 40 for importance, 20 for iterate, 300 for mwg).")
@click.option("--iw-samples", type=click.IntRange(min=1), default=50, show_default=True,
              help="Importance samples per round (importance only).")
@click.option("--seed", type=int, default=0, show_default=True)
@output_options("the filled array as .npy, .npz (with the mask) or a .png grid")
def impute_command(model_source: str, input_path: str, mask_path: str | None, labels_path: str | None, method: str | None,
                   iterations: int | None, iw_samples: int, seed: int, out: str, device: str) -> None:
    """Fill the missing values of an array with MODEL; observed values are kept exactly.

    Example: vaezoo impute vae-mlp.digits --input x.npy --mask m.npy -o filled.npy
    """
    result = run_impute(model_source, input_path, out, mask_path=mask_path, labels_path=labels_path, method=method,
                        iterations=iterations, iw_samples=iw_samples, seed=seed, device=device)
    click.echo(f"filled {result['missing']} missing values in {result['examples']} examples ({result['method']}); "
               f"wrote {result['out']}")


@click.command("transfer")
@click.argument("model_source", metavar="MODEL")
@data_options
@click.option("--to-label", type=int, required=True, help="Class to re-render the examples as.")
@click.option("--n", type=click.IntRange(min=1), default=8, show_default=True, help="Number of examples.")
@output_options("a .png grid, .npy or .npz")
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


@click.command("explore")
@click.argument("model_source", metavar="MODEL")
@data_options
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True, help="2-D map of the latent means.")
@click.option("--traverse", is_flag=True, help="Draw a latent traversal grid instead: one row per latent dim.")
@click.option("--n", type=click.IntRange(min=1), default=2000, show_default=True, help="Use the first N examples.")
@click.option("--rows", type=click.IntRange(min=1), default=10, show_default=True, help="Traversal: the most active dims.")
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True, help="Traversal: images per row.")
@click.option("--span", type=float, default=3.0, show_default=True, help="Traversal: +- this many standard deviations.")
@click.option("--seed", type=int, default=0, show_default=True)
@output_options("a map as .png, .csv or .npy; a traversal (--traverse) as .png, .npy or .npz")
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


@click.command("augment")
@click.argument("model_source", metavar="MODEL")
@click.option("--n", type=click.IntRange(min=1), required=True, help="Examples to write (per class with --per-class).")
@click.option("--per-class", is_flag=True, help="N examples of every class (conditional models such as cvae).")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@output_options(".npz (x, and y for a conditional model), .npy or a .png grid")
def augment_command(model_source: str, n: int, per_class: bool, temperature: float, seed: int, out: str, device: str) -> None:
    """Write synthetic training examples (with labels from a conditional model) as .npz (x, y), .npy or a PNG grid.

    Example: vaezoo augment cvae.digits --n 100 --per-class -o synth.npz
    """
    result = run_augment(model_source, out, n, per_class=per_class, temperature=temperature, seed=seed, device=device)
    labelled = " with labels" if result["labelled"] else ""
    click.echo(f"wrote {result['examples']} synthetic examples{labelled} to {result['out']}")


COMMANDS = (sample_command, fit_sampler_command, reconstruct_command, interpolate_command, anomaly_command, impute_command,
            transfer_command, explore_command, augment_command)
