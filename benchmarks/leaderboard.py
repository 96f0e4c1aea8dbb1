"""Reproduce README's leaderboard: every pretrained tag of a dataset measured by `vaezoo bench --pretrained`.

    python benchmarks/leaderboard.py                               # Fashion-MNIST (.fmnist tags)
    python benchmarks/leaderboard.py --data digits                 # the .digits tags
    python benchmarks/leaderboard.py --data shapes2d               # the .shapes2d tags: disentanglement scores
    python benchmarks/leaderboard.py --update-readme               # also rewrite README's table
    python benchmarks/leaderboard.py --models wae,info-vae         # measure two again, keep the other rows

Runs ``vaezoo bench --pretrained --data DATA --iw-samples K --iw-examples N --out docs/leaderboard/DATA``
(the same shared code as every other benchmark: results.json, results.md and figures per model), then
prints one leaderboard row per model and writes it to ``leaderboard.md`` in that folder. With
``--update-readme`` the table between README's ``<!-- leaderboard:DATA -->`` markers is replaced. With
``--models`` only those variants are measured (again), in a folder of their own beside the others
(OUT/.measuring-PID), and then merged into the folder's results.json, whose protocol (data, K, examples, seed)
must be the same (checked before measuring); the rows of the others are kept as they were measured. Until the
merge the folder is untouched, so a kill loses no row (the next run removes a killed run's staging folder), and
``--models`` runs of different variants into one folder can go side by side: each merges into results.json as it
is at its end, under the folder's lock.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

from vaezoo.bench import run_benchmark  # noqa: E402
from vaezoo.bench.report import comparison_lines, write_results  # noqa: E402
from vaezoo.bench.settings import resolve_settings  # noqa: E402
from vaezoo.errors import FolderInUseError  # noqa: E402
from vaezoo.io.lock import hold_folder_lock  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (  # (results.json key, header, format)
    ("nll", "NLL", "{:.2f}"), ("neg_elbo", "-ELBO", "{:.2f}"), ("recon", "recon", "{:.2f}"), ("kl", "KL", "{:.2f}"),
    ("active_units", "active units", "{}"), ("frechet_distance", "FD (classifier features)", "{:.1f}"),
    ("frechet_distance_gmm", "FD, GMM sampler", "{:.1f}"),
    ("conditional_sample_accuracy", "class acc. of samples", "{:.3f}"), ("probe_accuracy", "linear probe", "{:.3f}"),
    ("imputation_mse", "impute MSE", "{:.4f}"), ("perplexity", "perplexity", "{:.1f}"), ("parameters", "params", "{:,}"),
    ("eval_samples_per_s", "eval samples/s", "{:,.0f}"),
)
# On data with known factors (shapes2d) the table is about disentanglement: the five scores of disentanglement_lib
# (vaezoo/eval/disentanglement.py), best MIG first, beside the likelihood.
DISENTANGLEMENT_COLUMNS = (
    ("mig", "MIG", "{:.3f}"), ("beta_vae_score", "BetaVAE", "{:.3f}"), ("factor_vae_score", "FactorVAE", "{:.3f}"),
    ("sap", "SAP", "{:.3f}"), ("dci_disentanglement", "DCI disent.", "{:.3f}"),
    ("dci_completeness", "DCI compl.", "{:.3f}"), ("dci_informativeness", "DCI inform.", "{:.3f}"),
    ("nll", "NLL", "{:.2f}"), ("neg_elbo", "-ELBO", "{:.2f}"), ("kl", "KL", "{:.2f}"),
    ("active_units", "active units", "{}"), ("parameters", "params", "{:,}"),
)


def cell(record: dict[str, Any], key: str, fmt: str) -> str:
    value = record.get(key)
    if value is None:
        return "n/a"
    if key == "active_units" and record.get("latent_dims"):
        return f"{value}/{record['latent_dims']}"
    if key == "perplexity" and record.get("code_usage") is not None:
        return f"{fmt.format(value)} ({record['code_usage']:.0%} used)"
    return fmt.format(value)


def kl_by_layer(record: dict[str, Any]) -> str:
    """A hierarchy's KL per layer (hvae) or group (vdvae), bottom first, as "0.98 / 0.72 / 2.76"; "" for one latent."""
    layers = record.get("kl_per_group") or record.get("kl_per_layer") or {}
    ordered = sorted(layers.items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))  # kl_0, kl_1, ..., kl_10
    return " / ".join(f"{value:.2f}" for _, value in ordered)


def leaderboard_markdown(results: dict[str, Any]) -> str:
    """One row per model, best NLL first (a model without an NLL sorts by its -ELBO bound, last among equals); on
    data with known factors, best MIG first with the disentanglement scores."""
    settings = results["settings"]
    models = {name: record for name, record in results["models"].items() if record.get("status", "ok") == "ok"}
    without = sorted(set(results["models"]) - set(models))  # variants without a tag for this data
    factors = any(record.get("mig") is not None for record in models.values())
    columns = DISENTANGLEMENT_COLUMNS if factors else COLUMNS

    def rank(name: str) -> float:
        record = models[name]
        if factors:
            return -(record.get("mig") if record.get("mig") is not None else -float("inf"))
        return record.get("nll") or record.get("neg_elbo") or float("inf")

    lines = ["| model | " + " | ".join(header for _, header, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name in sorted(models, key=rank):
        lines.append(f"| {name} | " + " | ".join(cell(models[name], key, fmt) for key, _, fmt in columns) + " |")
    counts = sorted({record["nll_examples"] for record in models.values() if record.get("nll_examples")})
    lines += ["", f"`{settings['command']}`: nats per test example; NLL by importance sampling with K="
              f"{settings['iw_samples']} on the first {'/'.join(map(str, counts)) or 'n/a'} test images; "
              "-ELBO/recon/KL and the rest on the whole test split. Per-model notes and figures are in results.md."]
    if without:
        lines[-1] += f" Not listed (no pretrained tag for {settings['data']}): {', '.join(without)}."
    lines += comparison_lines(models)
    per_layer = [f"{name} {kl_by_layer(models[name])}" for name in sorted(models, key=rank) if kl_by_layer(models[name])]
    if per_layer:
        lines += ["", "KL per latent layer or group, bottom first (nats): " + "; ".join(per_layer) + "."]

    return "\n".join(lines) + "\n"


PROTOCOL = ("data", "iw_samples", "iw_examples", "seed", "pretrained", "epochs", "minutes", "overrides")


def check_same_protocol(previous: dict[str, Any], fresh: dict[str, Any]) -> None:
    """SystemExit unless the settings ``fresh`` measure under the protocol ``previous`` were measured under."""
    changed = [key for key in PROTOCOL if previous.get(key) != fresh.get(key)]
    if changed:
        was = ", ".join(f"{key}={previous.get(key)!r}" for key in changed)
        raise SystemExit(f"error: the models in results.json were measured with other {', '.join(changed)} ({was}); "
                         "rerun without --models to measure them all again")


def merge_results(previous: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """``previous`` results with ``fresh``'s models added or measured again; the rest are kept. Refused (SystemExit)
    when the two were measured under another protocol, since their rows would not be comparable."""
    check_same_protocol(previous["settings"], fresh["settings"])
    names = sorted(set(previous["models"]) | set(fresh["models"]))
    command = shlex.split(fresh["settings"]["command"])
    start, end = command.index("bench") + 1, command.index("--data")
    settings = dict(fresh["settings"], models=names, command=shlex.join(command[:start] + names + command[end:]))
    merged = {**previous, "settings": settings, "machine": fresh["machine"]}
    for part in ("models", "notes"):
        both = {**previous.get(part, {}), **fresh.get(part, {})}
        merged[part] = {name: both[name] for name in names if name in both}
    return merged


def measure_and_merge(names: list[str], data: str, out: Path, iw_samples: int, iw_examples: int | None,
                      lock_wait_s: float = 600.0) -> dict[str, Any]:
    """``--models``: measure ``names`` in OUT/.measuring-PID, then, under OUT's lock, merge their rows into
    OUT/results.json as it is by then and move their figure folders in. OUT is not written before the merge."""
    results_path = out / "results.json"
    if not results_path.is_file():
        raise SystemExit(f"error: --models merges into {results_path}, which does not exist; run once without --models first")
    settings = resolve_settings(names, data, pretrained=True, out_dir=str(out), iw_samples=iw_samples,
                                iw_examples=iw_examples)
    check_same_protocol(json.loads(results_path.read_text())["settings"], settings)  # before hours of measuring
    _remove_staging_of_dead_runs(out)
    staging = out / f".measuring-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    fresh = run_benchmark(names, data, pretrained=True, out_dir=str(staging), iw_samples=iw_samples,
                          iw_examples=iw_examples)
    fresh["settings"]["command"] = settings["command"]  # the command that reruns it writes to OUT, not the staging
    with contextlib.ExitStack() as held:
        _wait_for_lock(held, out, lock_wait_s)
        results = merge_results(json.loads(results_path.read_text()), fresh)
        for name in fresh["models"]:
            if (staging / name).is_dir():
                if (out / name).exists():
                    os.replace(out / name, staging / f"{name}.replaced")  # kept until the merge is written
                os.replace(staging / name, out / name)
        write_results(results, out)
    shutil.rmtree(staging, ignore_errors=True)
    return results


def _remove_staging_of_dead_runs(out: Path) -> None:
    """Remove the OUT/.measuring-PID folders that killed --models runs left (their process is gone); a live
    run's folder is left alone."""
    for staging in out.glob(".measuring-*"):
        pid = staging.name.removeprefix(".measuring-")
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 checks that the process exists and sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _wait_for_lock(held: contextlib.ExitStack, folder: Path, wait_s: float) -> None:
    """Enter ``folder``'s lock into ``held``, waiting while another leaderboard run merges (a merge takes seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            held.enter_context(hold_folder_lock(folder, "merging leaderboard rows into it"))
            return
        except FolderInUseError as error:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {error}") from None
            time.sleep(1.0)


def update_readme(readme: Path, data: str, table: str) -> None:
    text = readme.read_text()
    start, end = f"<!-- leaderboard:{data} -->", f"<!-- /leaderboard:{data} -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {readme} has no {start} ... {end} markers; add them where the table goes")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{table}{end}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits", "shapes2d"])
    parser.add_argument("--iw-samples", type=int, default=1000, help="importance samples K for the test NLL")
    parser.add_argument("--iw-examples", type=int, default=1000, help="test examples the NLL is estimated on; 0 = all")
    parser.add_argument("--out", default=None, help="report folder (default docs/leaderboard/DATA)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--update-readme", action="store_true", help="rewrite README's table for DATA")
    parser.add_argument("--models", default=None,
                        help="comma-separated variants to measure again, merged into OUT/results.json (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header(f"vaezoo leaderboard on {args.data}")
    out = Path(os.path.relpath(args.out or ROOT / "docs" / "leaderboard" / args.data))  # relative: it is printed
    names = [name.strip() for name in args.models.split(",") if name.strip()] if args.models else None
    if names:
        results = measure_and_merge(names, args.data, out, args.iw_samples, args.iw_examples or None)
    else:
        results = run_benchmark(None, args.data, pretrained=True, out_dir=str(out), iw_samples=args.iw_samples,
                                iw_examples=args.iw_examples or None)
    table = leaderboard_markdown(results)
    (out / "leaderboard.md").write_text(table)
    print(table)
    print(f"wrote {out}/leaderboard.md, results.json, results.md and figures")
    if args.update_readme:
        update_readme(ROOT / "README.md", args.data, table)
        print(f"updated README.md between <!-- leaderboard:{args.data} --> markers")


if __name__ == "__main__":
    main()
