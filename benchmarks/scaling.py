"""How training cost grows with batch size, model width and dataset size for vae-mlp, hvae and vdvae: a table and a PNG.

    python benchmarks/scaling.py                              # CPU, 2 threads, 28x28 images: 27 points; docs/scaling/
    python benchmarks/scaling.py --threads 1 --models vae-mlp hvae --out runs/scaling
    python benchmarks/scaling.py --device cuda --out runs/scaling-gpu
    python benchmarks/scaling.py --quick --out /tmp/scaling   # tiny models on 8x8 images, for the tests

Each axis varies one thing from a reference point (the model's default config at a batch and dataset size
that suit the device) and measures the trainer's step (benchmarks/gpu.py's ``train_throughput``: timed
steps between two synchronizations, warm-up excluded) on uniform random 28x28 images held in memory, as the
trainer holds its data. Each point runs in a fresh Python process, so that its peak memory is its own:

- on a CPU: the process's peak resident set minus its resident set once Python, torch and vaezoo are imported
  and a first optimizer made (which imports torch._dynamo and sympy, about 140 MiB in torch 2.14), i.e. the
  data, weights, optimizer state and activations at the peak. The peak is Linux's VmHWM, restarted at that
  moment by writing 5 to /proc/self/clear_refs: ``getrusage``'s ``ru_maxrss`` cannot be restarted, and a
  transient peak of the imports (higher once torch.compile has run in the parent) hid whole points behind it.
  ``tracemalloc`` cannot be used: it traces Python's allocator, and torch allocates tensors in C++. One
  process for every point cannot be either: its peak never goes down, and glibc keeps freed memory.
  ``torch.profiler``'s memory profile sees tensors only, not the allocator's overhead, and slows the steps;
- on CUDA: ``torch.cuda.max_memory_allocated`` in that process.

The table gives, between neighbouring points, the exponent k of cost ~ x^k: k = 1 is linear (a batch twice
as large takes twice as long per step: the device is busy); k < 1, per-step overhead still dominates;
k = 2, quadratic (a dense layer's width).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

MODELS = ("vae-mlp", "hvae", "vdvae")
AXES = ("batch_size", "width", "examples")
AXIS_LABELS = {"batch_size": "batch size", "width": "width / default width", "examples": "training examples"}


@dataclass(frozen=True)
class Sweep:
    """One model's axes, each varying one of batch size, width and dataset size from the reference point."""

    batch_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    examples: tuple[int, ...]
    reference: tuple[int, int, int]  # (batch size, width, examples): the point the other two axes keep
    input_shape: tuple[int, ...] = (1, 28, 28)
    preset: str | None = None


# CPU sizes, for a run of at most ten minutes on two threads: on this project's 2-core machine, busy with other jobs,
# --threads 1 took 590 s for the 27 points (275 s vae-mlp, 315 s hvae and vdvae), 4.4 minutes of CPU time.
CPU = {
    "vae-mlp": Sweep((32, 128, 512, 2048), (128, 256, 512, 1024), (2048, 16384, 131072), (128, 512, 2048)),
    "hvae": Sweep((8, 16, 32, 64), (128, 256, 512, 1024), (2048, 16384, 131072), (16, 512, 2048)),
    "vdvae": Sweep((4, 8, 16, 32), (16, 32, 64, 128), (2048, 16384, 131072), (8, 64, 2048)),
}
CUDA = {
    "vae-mlp": Sweep((128, 1024, 8192, 65536), (256, 512, 1024, 2048, 4096), (60000, 240000, 960000), (8192, 512, 60000)),
    "hvae": Sweep((32, 128, 512, 2048), (128, 256, 512, 1024, 2048), (60000, 240000, 960000), (512, 512, 60000)),
    "vdvae": Sweep((32, 128, 512, 1024), (32, 64, 128, 256), (60000, 240000, 960000), (128, 64, 60000)),
}
QUICK = {  # the tiny presets on 8x8 images: seconds, for the tests
    "vae-mlp": Sweep((8, 32), (16, 32), (256, 1024), (32, 32, 256), (1, 8, 8), "tiny"),
    "hvae": Sweep((8, 32), (16, 32), (256, 1024), (32, 32, 256), (1, 8, 8), "tiny"),
    "vdvae": Sweep((8, 32), (8, 16), (256, 1024), (32, 16, 256), (1, 8, 8), "tiny"),
}


@dataclass(frozen=True)
class Point:
    model: str
    batch_size: int
    width: int
    examples: int


def axis_points(name: str, sweep: Sweep) -> dict[str, list[Point]]:
    """The points of each axis, in order; the reference point is on all three (and measured once)."""
    batch, width, examples = sweep.reference
    return {"batch_size": [Point(name, b, width, examples) for b in sweep.batch_sizes],
            "width": [Point(name, batch, w, examples) for w in sweep.widths],
            "examples": [Point(name, batch, width, n) for n in sweep.examples]}


def width_overrides(name: str, width: int) -> dict[str, Any]:
    """The config fields that set ``name``'s width: vae-mlp's hidden layer, hvae's ladder features, vdvae's residual
    stream (its bottleneck kept at half, the default ratio)."""
    if name == "vae-mlp":
        return {"hidden_dims": (width,)}
    if name == "hvae":
        return {"hidden_dim": width}
    return {"width": width, "bottleneck": max(1, width // 2)}


def status_bytes(field: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now; VmHWM: its high-water mark), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # kB
    raise OSError(f"/proc/self/status has no {field}")


def start_peak_memory() -> tuple[int, Callable[[], int]]:
    """(resident bytes now, a function giving the peak since): Linux's clear_refs restarts the high-water mark here,
    so that a transient peak of the imports cannot hide the point's own; elsewhere, ru_maxrss from the start."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return status_bytes("VmRSS"), lambda: status_bytes("VmHWM")
    except OSError:
        def peak() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

        return peak(), peak


def run_point(point: Point, sweep: Sweep, device: str = "cpu", seconds: float = 2.0) -> dict[str, Any]:
    """Train one point in this process: samples/s, seconds per step, and memory (see the module docstring).

    >>> run_point(Point("vae-mlp", 128, 512, 2048), CPU["vae-mlp"])["samples_per_s"]  # doctest: +SKIP
    """
    import torch
    from gpu import build_model, train_throughput  # the trainer's step, timed

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # the first optimizer imports torch._dynamo: ~140 MiB
    baseline, peak_rss = start_peak_memory()  # after the imports, before any data or model
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(point.examples, *sweep.input_shape, generator=generator).to(device)
    model = build_model(point.model, device, sweep.input_shape, sweep.preset, **width_overrides(point.model, point.width))
    m = train_throughput(model, x, point.batch_size, target_seconds=seconds, warmup_steps=1, probe_steps=1, min_steps=2)
    peak, baseline = (peak_rss(), baseline) if device == "cpu" else (m.peak_memory_bytes, 0)
    return {**asdict(point), "samples_per_s": m.samples_per_s, "step_seconds": m.seconds / m.steps, "steps": m.steps,
            "peak_bytes": peak, "added_bytes": peak - baseline, "data_bytes": x.nbytes,
            "parameters": sum(p.numel() for p in model.parameters())}


def run_point_in_subprocess(point: Point, quick: bool, device: str, threads: int, seconds: float) -> dict[str, Any]:
    """:func:`run_point` in a fresh Python process (this script with ``--point``), so its peak memory is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--point", json.dumps(asdict(point)), "--device", device,
               "--threads", str(threads), "--seconds-per-point", str(seconds)] + (["--quick"] if quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"{point}: {(run.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def exponents(xs: list[float], ys: list[float]) -> list[float | None]:
    """k between each point and the one before it (cost ~ x^k); None for the first point."""
    slopes: list[float | None] = [None]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        slopes.append(math.log(y1 / y0) / math.log(x1 / x0) if min(x0, x1, y0, y1) > 0 and x0 != x1 else None)
    return slopes


def axis_rows(measured: dict[Point, dict[str, Any]], points: list[Point], axis: str) -> list[dict[str, Any]]:
    """Each point of one axis with its exponents: of the seconds per step and of the memory added."""
    results = [measured[p] for p in points]
    xs = [getattr(p, axis) for p in points]
    time_k = exponents(xs, [r["step_seconds"] for r in results])
    memory_k = exponents(xs, [r["added_bytes"] for r in results])
    return [{**r, "axis": axis, "value": x, "time_exponent": tk, "memory_exponent": mk}
            for r, x, tk, mk in zip(results, xs, time_k, memory_k)]


def print_table(rows: list[dict[str, Any]], memory_label: str) -> None:
    print(f"{'model':<9}{'axis':<12}{'batch':>7}{'width':>7}{'examples':>10}{'samples/s':>12}{'ms/step':>10}{'k time':>8}"
          f"{memory_label:>12}{'k memory':>10}")
    for r in rows:
        k_time = "" if r["time_exponent"] is None else f"{r['time_exponent']:.2f}"
        k_memory = "" if r["memory_exponent"] is None else f"{r['memory_exponent']:.2f}"
        print(f"{r['model']:<9}{r['axis']:<12}{r['batch_size']:>7}{r['width']:>7}{r['examples']:>10}"
              f"{r['samples_per_s']:>12,.0f}{1000 * r['step_seconds']:>10.1f}{k_time:>8}"
              f"{r['added_bytes'] / 2**20:>12,.1f}{k_memory:>10}")


def plot(rows: list[dict[str, Any]], sweeps: dict[str, Sweep], path: Path, title: str, memory_label: str) -> None:
    """Samples/s (top) and memory (bottom) against each axis, log-log, one line per model."""
    import matplotlib  # here: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:,.6g}")  # 512, 0.25, 3,000: not 2^9 or 3x10^3

    figure, grid = plt.subplots(2, len(AXES), figsize=(4.2 * len(AXES), 7), squeeze=False)
    for column, axis in enumerate(AXES):
        ticks: set[float] = set()
        for name, sweep in sweeps.items():
            mine = [r for r in rows if r["model"] == name and r["axis"] == axis]
            scale = sweep.reference[1] if axis == "width" else 1  # widths relative to the default: one shared axis
            xs = [r["value"] / scale for r in mine]
            ticks.update(xs)
            grid[0][column].plot(xs, [r["samples_per_s"] for r in mine], marker="o", label=name)
            grid[1][column].plot(xs, [r["added_bytes"] / 2**20 for r in mine], marker="o", label=name)
        for row, ylabel in ((0, "training samples/s"), (1, memory_label)):
            panel = grid[row][column]
            panel.set(xscale="log", yscale="log", xlabel=AXIS_LABELS[axis], ylabel=ylabel)
            panel.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, ...
            panel.set_xticks(sorted(ticks))  # the values measured
            for scale_axis in (panel.xaxis, panel.yaxis):
                scale_axis.set_major_formatter(plain)
                scale_axis.set_minor_formatter(NullFormatter())
            panel.tick_params(axis="x", labelrotation=30)
            low, high = panel.get_ylim()
            if high < 4 * low:  # at least a factor of 4 in view, so that noise does not look like a trend
                middle = math.sqrt(low * high)
                panel.set_ylim(middle / 2, middle * 2)
            panel.grid(True, which="both", alpha=0.3)
    grid[0][0].legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per point on a CPU")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"any of {', '.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="tiny models on 8x8 images (seconds)")
    parser.add_argument("--seconds-per-point", type=float, default=None, help="timed seconds per point (2; --quick 0.1)")
    parser.add_argument("--out", default="docs/scaling", help="folder for scaling.png and scaling.json")
    parser.add_argument("--point", default=None, help=argparse.SUPPRESS)  # one point, in the child process
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The first bad option, as one line naming it and the fix; None when all are good."""
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        return f"--models {' '.join(unknown)}: unknown; choose from {', '.join(MODELS)}"
    if args.device not in ("cpu", "cuda"):
        return f"--device {args.device}: unknown; use cpu or cuda"
    if args.threads < 1:
        return f"--threads {args.threads}: must be at least 1"
    if args.seconds_per_point is not None and not args.seconds_per_point > 0:
        return f"--seconds-per-point {args.seconds_per_point}: must be positive"
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda: torch.cuda.is_available() is False on this machine; leave --device out to measure the CPU"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"benchmarks/scaling.py: {problem}", file=sys.stderr)
        return 2
    table = QUICK if args.quick else CUDA if args.device == "cuda" else CPU
    seconds = args.seconds_per_point or (0.1 if args.quick else 2.0)
    if args.point:  # the child: one point, its figures as the last line of stdout
        import torch

        torch.set_num_threads(args.threads)
        point = Point(**json.loads(args.point))
        print(json.dumps(run_point(point, table[point.model], args.device, seconds)))
        return 0
    import time

    from common import print_header

    print_header("vaezoo training cost against batch size, width and dataset size")
    sweeps = {name: table[name] for name in args.models}
    memory_label = "added MiB" if args.device == "cpu" else "peak MiB"
    measured: dict[Point, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for name, sweep in sweeps.items():
        for axis, points in axis_points(name, sweep).items():
            for point in points:
                if point not in measured:
                    measured[point] = run_point_in_subprocess(point, args.quick, args.device, args.threads, seconds)
                    print(f"  {point}: {measured[point]['samples_per_s']:,.0f} samples/s", file=sys.stderr, flush=True)
            rows += axis_rows(measured, points, axis)
    elapsed = time.perf_counter() - start
    print_table(rows, memory_label)
    out = Path(args.out)
    title = (f"vaezoo training cost on {args.device}" + (f", {args.threads} thread(s)" if args.device == "cpu" else "")
             + (" (--quick: tiny models, 8x8 images)" if args.quick else "") + f"; {len(measured)} points in {elapsed:.0f} s")
    plot(rows, sweeps, out / "scaling.png", title, memory_label)
    (out / "scaling.json").write_text(json.dumps({"title": title, "seconds": elapsed, "rows": rows}, indent=2))
    print(f"\n{len(measured)} points in {elapsed:.0f} s; wrote {out / 'scaling.png'} and {out / 'scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
