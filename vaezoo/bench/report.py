"""The benchmark's outputs: results.json, the results.md table, the summary chart, and the machine they were measured on.

>>> results = {"settings": {"command": "vaezoo bench m"}, "models": {"m": {"status": "ok", "nll": 80.0}}}
>>> results_markdown(results).splitlines()[4:6]
['| status | ok |', '| nll | 80 |']
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaezoo.bench.record import table_rows
from vaezoo.io.atomic import atomic_write, atomic_write_text

BASELINE = "vae-mlp"  # the plain VAE the other variants are measured against in the comparisons


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: platform, library versions, threads, device and how peak memory is read."""
    import sklearn  # only for its version; scikit-learn is heavy to import

    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "sklearn": sklearn.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "peak_memory": "torch.cuda.max_memory_allocated per model" if cuda
        else "process-wide peak RSS (ru_maxrss), cumulative over the whole benchmark process",
    }


def write_results(results: dict[str, Any], out: Path) -> None:
    """``out``/summary.png, results.json and results.md, each written atomically."""
    save_summary_chart(results["models"], out / "summary.png")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_json_default) + "\n")
    atomic_write_text(out / "results.md", results_markdown(results))


def save_summary_chart(models: dict[str, dict[str, Any]], path: Path) -> None:
    """Bars of -ELBO and NLL per model ("n/a" where a model has none)."""
    import matplotlib  # matplotlib is heavy; only the chart needs it

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
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))  # a kill or full disk leaves no torn PNG
    plt.close(figure)


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format(v)}" for k, v in value.items())
    if isinstance(value, int):  # bools too
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def results_markdown(results: dict[str, Any]) -> str:
    """A markdown table, one column per model and one row per metric; "n/a" where a metric does not apply.

    The rows are the shared metrics and, after the model metrics, every metric a benchmarked variant reports.
    """
    models = results["models"]
    names = list(models)
    lines = [f"`{results['settings']['command']}`", "", "| metric | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for key in table_rows(models.values()):
        lines.append(f"| {key} | " + " | ".join(_format(models[n].get(key)) for n in names) + " |")
    lines += comparison_lines(models)
    notes = results.get("notes", {})
    if any(notes.values()):
        lines += ["", "Notes:"]
        lines += [f"- {n}: {key}: {text}" for n in names for key, text in notes.get(n, {}).items()]
    return "\n".join(lines) + "\n"


def comparison_lines(models: dict[str, dict[str, Any]], baseline: str = BASELINE) -> list[str]:
    """The comparisons the literature makes, measured in this one run: each model's NLL minus the ``baseline``'s
    (negative is better), and each model's FD with the ex-post GMM sampler against its FD from the prior."""
    lines = []
    reference = models.get(baseline, {}).get("nll")
    deltas = [f"{name} {models[name]['nll'] - reference:+.2f}" for name in models
              if name != baseline and reference is not None and models[name].get("nll") is not None]
    if deltas:
        lines.append(f"- NLL minus {baseline}'s ({reference:.2f}), nats (negative: better): " + ", ".join(deltas))
    # One decimal, as the leaderboard's FD columns print them (.4g wrote 65.55 beside the table's 65.5).
    changes = [f"{name} {record['frechet_distance']:.1f} -> {record['frechet_distance_gmm']:.1f} "
               f"({record['frechet_distance_gmm'] / record['frechet_distance'] - 1:+.1%})"
               for name, record in models.items()
               if record.get("frechet_distance") and record.get("frechet_distance_gmm") is not None]
    if changes:
        lines.append("- FD from the prior -> with the GMM sampler fitted on the training codes: " + ", ".join(changes))
    return ["", "Comparisons (same data, budget and seed):", *lines] if lines else []


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (tuple, Path)):
        return list(value) if isinstance(value, tuple) else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
