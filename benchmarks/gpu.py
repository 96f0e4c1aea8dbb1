"""GPU speed of vae-mlp, hvae and vdvae: samples/s, peak memory, time to the seed's quality, and a torchrun run.

    python benchmarks/gpu.py --json runs/gpu.json                    # on a CUDA GPU, within --budget-seconds (300)
    python benchmarks/gpu.py --data-dir runs/fmnist --budget-seconds 200 --models vae-mlp --ttq-recipe batch_size=512,lr=3e-3

On one CUDA GPU, with the data on the GPU and no DataLoader, it measures:

1. training and evaluation samples/s of each model's default config at 28x28x1 (Fashion-MNIST's shape) in
   fp32 (TF32 off), tf32 and bf16 autocast (the trainer's ``bf16=True``); vae-mlp also at batches of 8192-65536,
   where its tiny step stops being launch-bound, and with its whole step (forward, backward, fused Adam)
   captured in one CUDA graph; then torch.compile (default and ``mode="reduce-overhead"``, CUDA graphs
   through Inductor) while the budget lasts. Each figure is timed steps / seconds between two
   ``torch.cuda.synchronize()`` calls, warm-up (and compilation) excluded; the peak memory is
   ``torch.cuda.max_memory_allocated`` of that configuration, the data on the GPU included;
2. the time vaezoo's trainer (vae-mlp's defaults, then each ``--ttq-recipe``) needs to reach the test -ELBO of
   the seed tutorial's loop after 10 epochs on this GPU, the reference quality of benchmarks/throughput.py,
   whose seed code it reuses;
3. a ``torchrun --nproc_per_node 1`` run of vaezoo's trainer as launched (vaezoo engages DDP for two processes
   or more only), then once more through its DDP path in an NCCL process group of one, with their samples/s.

The step timed is the trainer's (vaezoo.training.loop: ``StageStep``, ``make_optimizer``, autocast); the KL
warm-up of hvae and vdvae is taken as finished, so a compiled step sees a constant KL weight. The data is
Fashion-MNIST when vaezoo.data finds it (``--data-dir``, $VAEZOO_DATA or /usr/share/datasets), else uniform
random images (``--data synthetic``), for which the time-to-quality figures mean nothing. It prints a table
and, with ``--json``, writes every figure after each measurement, so a run cut short keeps what it measured.
Without CUDA it exits with one line. The measurement functions take a ``device`` and run on the CPU too
(tests/test_gpu_and_scaling.py).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
import throughput  # noqa: E402  (the seed's loop: the quality target)
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.core.config import parse_override  # noqa: E402
from vaezoo.core.distributed import exit_now  # noqa: E402
from vaezoo.data import DataSplits, TensorData, load_data  # noqa: E402
from vaezoo.errors import ConfigError, DataError  # noqa: E402
from vaezoo.training.config import resolve_train_config  # noqa: E402
from vaezoo.training.loop import StageStep, make_optimizer  # noqa: E402
from vaezoo.training.trainer import Trainer  # noqa: E402

MODELS = ("vae-mlp", "hvae", "vdvae")
PRECISIONS = ("fp32", "tf32", "bf16")
SPEEDUPS = ("eager", "compile", "compile:reduce-overhead", "cuda-graph")
NO_CUDA = ("benchmarks/gpu.py needs a CUDA GPU; torch.cuda.is_available() is False on this machine "
           "(run it where `nvidia-smi` lists a GPU; benchmarks/throughput.py and benchmarks/scaling.py run on CPUs)")


@dataclass
class Measurement:
    """One configuration's throughput: ``samples`` over ``seconds`` of timed steps, warm-up excluded."""

    what: str  # "train" (optimizer steps) or "eval" (forward passes, no gradients)
    model: str
    batch_size: int
    precision: str
    speedup: str
    steps: int  # timed steps
    seconds: float  # between the two synchronizations around the timed steps
    warmup_steps: int  # untimed: warm-up, compilation or graph capture, then the steps that sized the timed run
    warmup_seconds: float
    peak_memory_bytes: int | None  # torch.cuda.max_memory_allocated; None on a CPU

    @property
    def samples(self) -> int:
        return self.steps * self.batch_size

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


# --- devices, precision, memory ----------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def free_memory() -> None:
    """Drop what the last configuration left (compiled graphs, their CUDA graph pools), so the next peak is its own."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def precision_mode(precision: str, device: torch.device, cache_enabled: bool = True) -> Iterator[None]:
    """fp32: float32 everywhere, TF32 off for matmuls and convolutions; tf32: float32 storage, TF32 matmuls and
    convolutions (CUDA only); bf16: bfloat16 autocast, what the trainer does with ``bf16=True``. A CUDA graph
    capture needs ``cache_enabled=False`` (torch.cuda.graph's notes on autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=cache_enabled):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --- data and models -----------------------------------------------------------------------------------
def load_images(data: str, device: torch.device, data_dir: str | None = None,
                examples: tuple[int, int] = (60_000, 10_000)) -> tuple[Tensor, Tensor, str]:
    """(train, test, source): Fashion-MNIST's training and test images ("fashion-mnist"), uniform random images of
    its shape ("synthetic", ``examples`` of each), or the first that works ("auto"); on ``device``."""
    if data in ("auto", "fashion-mnist"):
        try:
            splits = load_data("fashion-mnist", data_dir=data_dir)
            return splits.train.x.to(device), splits.test.x.to(device), f"fashion-mnist ({splits.source})"
        except DataError:
            if data == "fashion-mnist":
                raise
    generator = torch.Generator().manual_seed(0)
    train, test = (torch.rand(n, 1, 28, 28, generator=generator).to(device) for n in examples)
    return train, test, "synthetic: uniform random 28x28 images (time-to-quality figures are meaningless on it)"


def build_model(name: str, device: torch.device | str, input_shape: tuple[int, ...] = (1, 28, 28),
                preset: str | None = None, **overrides: Any) -> vaezoo.VAE:
    """The registered model on ``device``, its KL warm-up taken as finished (constant weight: no recompiles)."""
    torch.manual_seed(0)
    model = vaezoo.create_model(name, preset=preset, input_shape=input_shape, **overrides).to(device)
    model.train_step = model.config.kl_warmup_steps
    return model


def random_batches(x: Tensor, batch_size: int) -> Callable[[], Tensor]:
    """Each call: ``batch_size`` rows of ``x`` drawn on its device (with replacement, so a batch may exceed the data)."""
    return lambda: x[torch.randint(x.shape[0], (batch_size,), device=x.device)]


# --- steps -----------------------------------------------------------------------------------------------
def train_step(model: vaezoo.VAE, x: Tensor, batch_size: int, precision: str = "fp32",
               speedup: str = "eager") -> Callable[[], None]:
    """One optimizer step of the model's first stage as the trainer takes it, as a call with no arguments."""
    if speedup not in SPEEDUPS:
        raise ValueError(f"speedup={speedup!r} is unknown; use one of {', '.join(SPEEDUPS)}")
    device, stage = model.device, model.stages()[0]
    config = resolve_train_config(model, "gpu.py")
    next_batch = random_batches(x, batch_size)
    module: torch.nn.Module = StageStep(model, stage)
    if speedup == "cuda-graph":
        return graphed_train_step(module, stage, config.lr, next_batch, precision, device)
    optimizer = make_optimizer(stage, config, device)
    mode = speedup.partition(":")[2] or None
    if speedup.startswith("compile"):
        module = torch.compile(module, mode=mode)

    def step() -> None:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last step's graph outputs are done with
        with precision_mode(precision, device):
            out = module(next_batch(), None)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return step


def graphed_train_step(module: torch.nn.Module, stage: Any, lr: float, next_batch: Callable[[], Tensor],
                       precision: str, device: torch.device) -> Callable[[], None]:
    """The whole step (forward, backward, fused capturable Adam) captured once in a CUDA graph, replayed per batch:
    one launch instead of a hundred or so (PyTorch's CUDA graphs notes, "whole network capture")."""
    if device.type != "cuda":
        raise ValueError(f"speedup='cuda-graph' needs a CUDA device, not {device.type!r}")
    optimizer = torch.optim.Adam(stage.optimizer_groups(), lr=lr, fused=True, capturable=True)
    static_x = next_batch().clone()

    def eager_step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with precision_mode(precision, device, cache_enabled=False):
            out = module(static_x, None)
        out.loss.backward()
        optimizer.step()
        return out.loss

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires; it also creates Adam's state
        for _ in range(3):
            eager_step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # the captured backward then allocates the gradients in the graph's pool
    with torch.cuda.graph(graph, stream=side):  # the stream that warmed up (its cuBLAS handle and workspace)
        eager_step()

    def step() -> None:
        static_x.copy_(next_batch())
        graph.replay()

    return step


def eval_step(model: vaezoo.VAE, x: Tensor, batch_size: int, precision: str = "fp32") -> Callable[[], None]:
    """One evaluation forward pass (eval mode: the model checks the batch's values, one host sync, as in evaluate())."""
    device, next_batch = model.device, random_batches(x, batch_size)
    model.eval()

    def step() -> None:
        with torch.inference_mode(), precision_mode(precision, device):
            model(next_batch()).neg_elbo.sum()

    return step


# --- timing ----------------------------------------------------------------------------------------------
def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds ``steps`` calls of ``step`` take, from a synchronized start to a synchronized end."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def measure(step: Callable[[], None], device: torch.device, target_seconds: float = 1.0, warmup_steps: int = 3,
            probe_steps: int = 2, min_steps: int = 3, max_steps: int = 100_000) -> tuple[int, float, int, float]:
    """(timed steps, their seconds, untimed steps, their seconds): ``warmup_steps`` and ``probe_steps`` untimed (the
    probe sizes the timed run to about ``target_seconds``), then the timed steps."""
    warmup_seconds = timed(step, warmup_steps, device)
    probe_seconds = timed(step, probe_steps, device)
    per_step = probe_seconds / max(probe_steps, 1)
    steps = min(max_steps, max(min_steps, math.ceil(target_seconds / max(per_step, 1e-9))))
    return steps, timed(step, steps, device), warmup_steps + probe_steps, warmup_seconds + probe_seconds


def train_throughput(model: vaezoo.VAE, x: Tensor, batch_size: int, precision: str = "fp32", speedup: str = "eager",
                     target_seconds: float = 1.0, warmup_steps: int = 3, **timing: int) -> Measurement:
    """Training samples/s of ``model`` on batches of ``x`` (moved to the model's device) and its peak memory.

    >>> train_throughput(build_model("vae-mlp", "cuda"), x, 32768, "bf16", "cuda-graph").samples_per_s  # doctest: +SKIP
    """
    device = model.device
    x = x.to(device)
    reset_peak_memory(device)
    model.train()
    steps, seconds, untimed, untimed_seconds = measure(
        train_step(model, x, batch_size, precision, speedup), device, target_seconds, warmup_steps, **timing)
    return Measurement("train", model.model_name, batch_size, precision, speedup, steps, seconds, untimed,
                       untimed_seconds, peak_memory(device))


def eval_throughput(model: vaezoo.VAE, x: Tensor, batch_size: int, precision: str = "fp32",
                    target_seconds: float = 1.0, warmup_steps: int = 3, **timing: int) -> Measurement:
    """Evaluation samples/s (forward passes to the per-example -ELBO, no gradients) and peak memory."""
    device = model.device
    x = x.to(device)
    reset_peak_memory(device)
    steps, seconds, untimed, untimed_seconds = measure(
        eval_step(model, x, batch_size, precision), device, target_seconds, warmup_steps, **timing)
    return Measurement("eval", model.model_name, batch_size, precision, "eager", steps, seconds, untimed,
                       untimed_seconds, peak_memory(device))


# --- quality and distributed runs ------------------------------------------------------------------------
def seed_reference(train_x: Tensor, test_x: Tensor, epochs: int = 10) -> dict[str, float]:
    """The seed tutorial's loop (benchmarks/throughput.py: MLP 784-256-10, batch 128, Adam 1e-3) for ``epochs``
    epochs on the data's device, batches gathered from a shuffled order as a DataLoader would; its test -ELBO
    is the quality target."""
    torch.manual_seed(0)
    device = train_x.device
    vae = throughput.SeedVAE(train_x[0].numel(), 10).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    seconds = 0.0
    for _ in range(epochs):
        order = torch.randperm(train_x.shape[0], generator=generator).to(device)
        seconds += throughput.seed_epoch(vae, optimizer, ((train_x[index], None) for index in order.split(128)))
    return {"epochs": epochs, "train_seconds": seconds, "test_neg_elbo": throughput.seed_test_neg_elbo(vae, test_x)}


def trainer_splits(train_x: Tensor, test_x: Tensor) -> DataSplits:
    """The trainer's data: ``train_x`` to train on and ``test_x`` to validate on each epoch (as throughput.py does)."""
    test = TensorData(test_x)
    return DataSplits(TensorData(train_x), test, test, "benchmark", tuple(train_x.shape[1:]), 0, None, "benchmarks/gpu.py")


def time_to_quality(train_x: Tensor, test_x: Tensor, target: float, preset: str | None = None,
                    **train_overrides: Any) -> dict[str, Any]:
    """Train vae-mlp with vaezoo's trainer (its defaults, then ``train_overrides``) on the data's device, validating on
    ``test_x`` each epoch; when its test -ELBO first reaches ``target``: after which epoch and how many seconds of
    training (validation excluded, as benchmarks/throughput.py counts), and with validation."""
    shape = tuple(train_x.shape[1:])
    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", preset=preset, input_shape=shape)
    config = resolve_train_config(model, "gpu.py", device=str(train_x.device), progress=False, **train_overrides)
    history = Trainer(model, trainer_splits(train_x, test_x), config).fit().history
    curve, train_seconds, wall_seconds = [], 0.0, 0.0
    for record in history:
        train_seconds += record["train_time_s"]
        wall_seconds += record["wall_time_s"]
        curve.append({"epoch": record["epoch"], "test_neg_elbo": record["val"]["neg_elbo"],
                      "train_seconds": train_seconds, "wall_seconds": wall_seconds})
    reached = next((point for point in curve if point["test_neg_elbo"] <= target), None)
    recipe = {key: getattr(config, key) for key in ("batch_size", "lr", "lr_schedule", "epochs", "bf16", "compile")}
    return {"target": target, "recipe": recipe, "reached": reached, "curve": curve,
            "samples_per_s": statistics.median(record["samples_per_s"] for record in history)}


def torchrun_training(device: str, data: str = "auto", data_dir: str | None = None, epochs: int = 3,
                      examples: int = 60_000, preset: str | None = None, timeout: float = 600) -> dict[str, Any]:
    """vaezoo's trainer under ``torchrun --standalone --nproc_per_node 1`` (this script's ``--ddp-worker``):
    what the worker reported, with the command."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "ddp.json"
        worker = [str(Path(__file__).resolve()), "--ddp-worker", "--device", device, "--data", data, "--json", str(report),
                  "--ddp-epochs", str(epochs), "--ddp-examples", str(examples)]
        worker += (["--data-dir", data_dir] if data_dir else []) + (["--ddp-preset", preset] if preset else [])
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
        run = subprocess.run([sys.executable, *launcher, *worker], capture_output=True, text=True, timeout=timeout)
        if not report.exists():
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"torchrun exited with {run.returncode}: {last}")
        shown = " ".join(["torchrun", *launcher[2:], *worker]).replace(str(report), "REPORT.json")
        shown = shown.replace(str(Path(__file__).resolve()), "benchmarks/gpu.py")
        return {**json.loads(report.read_text()), "exit_code": run.returncode, "command": shown}


def ddp_worker(args: argparse.Namespace) -> None:
    """One torchrun process: vaezoo's trainer on vae-mlp as a user gets it, then, alone in the world, once more
    through its DDP path in a process group of one (NCCL on a GPU, gloo on a CPU). Writes ``--json`` after each,
    so that a failure in the second keeps the first."""
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if args.device == "cuda" else torch.device(args.device)
    train_x, test_x, source = load_images(args.data, device, args.data_dir, (args.ddp_examples, args.ddp_examples // 6))
    backend = "nccl" if device.type == "cuda" else "gloo"
    report: dict[str, Any] = {"ran": True, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "backend": backend,
                              "data": source, "runs": {}}
    report["runs"]["as launched"] = trainer_run(train_x, test_x, device, args.ddp_epochs, args.ddp_preset)
    if dist.is_initialized():  # several processes: the run above was already data-parallel; rank 0 reports it
        if dist.get_rank() == 0:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return
    Path(args.json).write_text(json.dumps(report, indent=2))
    try:
        with ddp_of_one(backend, local_rank):  # one process: vaezoo joined no group (core/distributed.py)
            report["runs"]["DDP, one rank"] = trainer_run(train_x, test_x, device, args.ddp_epochs, args.ddp_preset)
            total = torch.ones(1, device=device)
            dist.all_reduce(total)
            report["all_reduce_ok"] = float(total) == 1.0
    except Exception as error:  # noqa: BLE001 (reported; the first run's figures stand)
        report["runs"]["DDP, one rank"] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
    Path(args.json).write_text(json.dumps(report, indent=2))


def trainer_run(train_x: Tensor, test_x: Tensor, device: torch.device, epochs: int, preset: str | None) -> dict[str, Any]:
    """vaezoo's trainer on vae-mlp with its defaults for ``epochs`` epochs: training samples/s (the median after the
    first epoch) and whether it trained through DDP."""
    shape = tuple(train_x.shape[1:])
    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", preset=preset, input_shape=shape)
    config = resolve_train_config(model, "gpu.py --ddp-worker", device=str(device), epochs=epochs, progress=False)
    trainer = Trainer(model, trainer_splits(train_x, test_x), config)
    history = trainer.fit().history
    return {"ddp_engaged": trainer.context.enabled, "world_size": trainer.context.world_size, "epochs": len(history),
            "batch_size": config.batch_size,
            "samples_per_s": statistics.median(r["samples_per_s"] for r in history[1:] or history),
            "test_neg_elbo": history[-1]["val"]["neg_elbo"]}


@contextlib.contextmanager
def ddp_of_one(backend: str, local_rank: int) -> Iterator[None]:
    """Make vaezoo's trainer take its DDP path in a process group of one. vaezoo itself skips DDP for one process
    (``DistributedContext.enabled`` is ``world_size > 1``), so one GPU could never exercise it; here the trainer's
    ``init_distributed`` is swapped for one that joins the group and says enabled."""
    import torch.distributed as dist

    import vaezoo.training.trainer as trainer_module
    from vaezoo.core.distributed import DistributedContext

    class OneRank(DistributedContext):
        @property
        def enabled(self) -> bool:
            return True

    dist.init_process_group(backend)
    saved = trainer_module.init_distributed
    trainer_module.init_distributed = lambda device_type: OneRank(dist.get_rank(), dist.get_world_size(), local_rank)
    try:
        yield
    finally:
        trainer_module.init_distributed = saved
        dist.destroy_process_group()


# --- the plan, within the budget ---------------------------------------------------------------------
TARGET_SAMPLES_PER_S = 1_000_000  # vae-mlp training on an H100/H200 (issue 16): its step is tiny, launches cost most
COMPILE_SECONDS = {"vae-mlp": 40.0, "hvae": 60.0, "vdvae": 90.0}  # rough cold-compile estimates, to skip in time
DEFAULT_RECIPE = "vaezoo defaults"  # vae-mlp's train_defaults: batch 128, lr 2e-3, cosine over 20 epochs


@dataclass
class Job:
    """One measurement of the plan, skipped when the budget has less than ``estimate_s`` left."""

    label: str
    estimate_s: float
    run: Callable[[], Any]
    section: str = "measurements"  # where the report keeps its result


@dataclass
class Report:
    header: dict[str, Any]
    measurements: list[dict[str, Any]] = field(default_factory=list)
    time_to_quality: dict[str, Any] = field(default_factory=dict)
    torchrun: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # not run: the budget had too little left
    errors: dict[str, str] = field(default_factory=dict)  # label -> the one-line error

    def add(self, job: Job, result: Any) -> None:
        if isinstance(result, Measurement):
            self.measurements.append({**asdict(result), "samples": result.samples, "samples_per_s": result.samples_per_s})
        else:
            getattr(self, job.section).update(result)

    def write(self, path: str | None) -> None:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(asdict(self), indent=2))


def throughput_job(what: str, name: str, x: Tensor, batch_size: int, precision: str, speedup: str = "eager",
                   seconds: float = 1.0) -> Job:
    def run() -> Measurement:
        model = build_model(name, x.device)
        if what == "train":
            return train_throughput(model, x, batch_size, precision, speedup, seconds, warmup_steps=5)
        return eval_throughput(model, x, batch_size, precision, seconds, warmup_steps=5)

    estimate = COMPILE_SECONDS[name] if speedup.startswith("compile") else 4 * seconds + 3
    return Job(f"{what} {name} batch {batch_size} {precision} {speedup}", estimate, run)


def parse_recipe(text: str) -> dict[str, Any]:
    """``--ttq-recipe batch_size=512,lr=3e-3``: TrainConfig fields for the trainer, checked (a ConfigError names a bad one).

    >>> parse_recipe("batch_size=512,lr=3e-3")
    {'batch_size': 512, 'lr': 0.003}
    """
    parts = [part for part in text.split(",") if part.strip()]
    if not parts or any("=" not in part for part in parts):
        raise ConfigError(f"{text!r} is not of the form key=value[,key=value] (e.g. batch_size=512,lr=3e-3)")
    recipe = dict(parse_override(part) for part in parts)
    resolve_train_config(vaezoo.get_model_class("vae-mlp"), "the recipe", **recipe)  # unknown keys, bad values
    return recipe


def quality_job(train_x: Tensor, test_x: Tensor, seed_epochs: int, recipes: dict[str, dict[str, Any]]) -> Job:
    def run() -> dict[str, Any]:
        seed = seed_reference(train_x, test_x, seed_epochs)
        runs = {label: time_to_quality(train_x, test_x, seed["test_neg_elbo"], **recipe) for label, recipe in recipes.items()}
        return {"seed": seed, "vaezoo": runs}

    return Job(f"time to the seed's {seed_epochs}-epoch test -ELBO", 10.0 + 40.0 * len(recipes), run, "time_to_quality")


def plan(models: list[str], train_x: Tensor, test_x: Tensor, seconds: float, seed_epochs: int, data: str,
         data_dir: str | None, recipes: dict[str, dict[str, Any]] | None = None) -> list[Job]:
    """The measurements in the order they run: cheap and essential first, compilation (the costliest) last."""
    jobs = []
    for name in models:  # every model at the trainer's batch (128) and evaluate()'s (1000)
        for precision in ("fp32", "bf16"):
            jobs.append(throughput_job("train", name, train_x, 128, precision, seconds=seconds))
            jobs.append(throughput_job("eval", name, train_x, 1000, precision, seconds=seconds))
    if "vae-mlp" in models:  # its step is a few small matmuls: large batches and one graph launch per step
        jobs.append(throughput_job("train", "vae-mlp", train_x, 128, "bf16", "cuda-graph", seconds))
        for batch in (8192, 32768, 65536):
            jobs += [throughput_job("train", "vae-mlp", train_x, batch, precision, seconds=seconds) for precision in PRECISIONS]
            jobs.append(throughput_job("train", "vae-mlp", train_x, batch, "bf16", "cuda-graph", seconds))
            jobs.append(throughput_job("eval", "vae-mlp", train_x, batch, "bf16", seconds=seconds))
    jobs += [throughput_job("train", name, train_x, 1024, "bf16", seconds=seconds) for name in models if name != "vae-mlp"]
    if "vae-mlp" in models:
        jobs.append(quality_job(train_x, test_x, seed_epochs, recipes or {DEFAULT_RECIPE: {}}))
        jobs.append(Job("torchrun --nproc_per_node 1 (vaezoo trainer)", 60.0,
                        lambda: torchrun_training("cuda", data, data_dir), "torchrun"))
        jobs.append(throughput_job("train", "vae-mlp", train_x, 32768, "bf16", "compile:reduce-overhead", seconds))
        jobs.append(throughput_job("train", "vae-mlp", train_x, 128, "bf16", "compile:reduce-overhead", seconds))
    jobs += [throughput_job("train", name, train_x, 128, "bf16", "compile", seconds) for name in models if name != "vae-mlp"]
    return jobs


def run_jobs(jobs: list[Job], budget_seconds: float, report: Report, json_path: str | None) -> None:
    """Run each job the budget still has room for; a failure is recorded in one line and the rest go on."""
    deadline = time.perf_counter() + budget_seconds
    for job in jobs:
        left = deadline - time.perf_counter()
        if left < job.estimate_s:
            report.skipped.append(job.label)
            print(f"skipped (budget: {left:.0f} s left, needs about {job.estimate_s:.0f} s): {job.label}", flush=True)
            continue
        start = time.perf_counter()
        try:
            result = job.run()
            report.add(job, result)
            print(f"[{time.perf_counter() - start:5.1f} s] {job.label}: {summary(result)}", flush=True)
        except Exception as error:  # noqa: BLE001 (one configuration failing must not lose the others)
            report.errors[job.label] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(f"[{time.perf_counter() - start:5.1f} s] {job.label}: FAILED {report.errors[job.label]}", flush=True)
        finally:
            free_memory()
        report.write(json_path)


# --- printing -------------------------------------------------------------------------------------------
def mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:,.0f}"


def summary(result: Any) -> str:
    if isinstance(result, Measurement):
        return f"{result.samples_per_s:,.0f} samples/s, peak {mib(result.peak_memory_bytes)} MiB"
    if "seed" in result:
        runs = "; ".join(f"{label}: {quality_line(run)}" for label, run in result["vaezoo"].items())
        return f"seed {result['seed']['test_neg_elbo']:.2f} nats in {result['seed']['train_seconds']:.1f} s; {runs}"
    return f"ran, world size {result['world_size']}; " + "; ".join(
        f"{label}: " + (run["error"] if "error" in run else f"DDP {run['ddp_engaged']}, {run['samples_per_s']:,.0f} samples/s")
        for label, run in result["runs"].items())


def quality_line(run: dict[str, Any]) -> str:
    reached = run["reached"]
    if reached is None:
        return f"not reached in {len(run['curve'])} epochs (best {min(p['test_neg_elbo'] for p in run['curve']):.2f})"
    return (f"{reached['test_neg_elbo']:.2f} after epoch {reached['epoch']}: {reached['train_seconds']:.1f} s of training, "
            f"{reached['wall_seconds']:.1f} s with validation")


def print_table(report: Report) -> None:
    print("\n## samples/s (timed steps between two synchronizations, warm-up excluded) and peak memory")
    print(f"{'what':<6}{'model':<9}{'batch':>7}  {'precision':<10}{'speed-up':<25}{'samples/s':>13}{'peak MiB':>10}"
          f"{'steps':>8}{'warm-up s':>11}")
    for m in report.measurements:
        print(f"{m['what']:<6}{m['model']:<9}{m['batch_size']:>7}  {m['precision']:<10}{m['speedup']:<25}"
              f"{m['samples_per_s']:>13,.0f}{mib(m['peak_memory_bytes']):>10}{m['steps']:>8}{m['warmup_seconds']:>11.1f}")
    trained = [m for m in report.measurements if m["what"] == "train" and m["model"] == "vae-mlp"]
    if trained:
        best = max(trained, key=lambda m: m["samples_per_s"])
        verdict = "met" if best["samples_per_s"] >= TARGET_SAMPLES_PER_S else "NOT met"
        print(f"fastest vae-mlp training: {best['samples_per_s']:,.0f} samples/s (batch {best['batch_size']}, "
              f"{best['precision']}, {best['speedup']}); target >= {TARGET_SAMPLES_PER_S:,}: {verdict}")
    quality = report.time_to_quality
    if quality:
        seed = quality["seed"]
        print(f"\n## time to the seed's {seed['epochs']}-epoch test -ELBO ({seed['test_neg_elbo']:.2f} nats; the seed's "
              f"loop took {seed['train_seconds']:.1f} s on this GPU)")
        for label, run in quality["vaezoo"].items():
            print(f"{label} {run['recipe']}: {quality_line(run)}; {run['samples_per_s']:,.0f} samples/s")
    if report.torchrun:
        run = report.torchrun
        print(f"\n## {run['command']}\nran: {run['ran']}, exit code {run['exit_code']}, world size {run['world_size']}, "
              f"backend {run['backend']} (all-reduce ok: {run.get('all_reduce_ok')})")
        for label, trained in run["runs"].items():
            if "error" in trained:
                print(f"{label:<16} failed: {trained['error']}")
                continue
            print(f"{label:<16} DDP engaged: {trained['ddp_engaged']!s:<6} {trained['samples_per_s']:>11,.0f} samples/s at "
                  f"batch {trained['batch_size']}, test -ELBO {trained['test_neg_elbo']:.2f} after {trained['epochs']} epochs")
    for label in report.skipped:
        print(f"skipped for the budget: {label}")
    for label, error in report.errors.items():
        print(f"failed: {label}: {error}")


# --- the command line -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=300.0, help="bound on the whole run (jobs that would "
                        "not fit are skipped; a compilation already started runs to its end)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"any of {', '.join(MODELS)}")
    parser.add_argument("--data", default="auto", help="auto (Fashion-MNIST if found, else synthetic), fashion-mnist "
                        "or synthetic")
    parser.add_argument("--data-dir", default=None, help="folder holding Fashion-MNIST's IDX files")
    parser.add_argument("--seconds-per-measurement", type=float, default=1.0, help="timed seconds per configuration")
    parser.add_argument("--seed-epochs", type=int, default=10, help="epochs of the seed's loop for the quality target")
    parser.add_argument("--ttq-recipe", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="train vae-mlp to the seed's quality with these TrainConfig fields too, after its defaults "
                        "(repeatable; e.g. batch_size=512,lr=3e-3)")
    parser.add_argument("--json", default=None, help="write every figure here (after each measurement)")
    worker = parser.add_argument_group("the torchrun worker this script starts (not for direct use)")
    worker.add_argument("--ddp-worker", action="store_true")
    worker.add_argument("--device", default="cuda")
    worker.add_argument("--ddp-epochs", type=int, default=3)
    worker.add_argument("--ddp-examples", type=int, default=60_000, help="synthetic training images")
    worker.add_argument("--ddp-preset", default=None)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The first bad option, as one line naming it and the fix; None when all are good."""
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        return f"--models {' '.join(unknown)}: unknown; choose from {', '.join(MODELS)}"
    if args.data not in ("auto", "fashion-mnist", "synthetic"):
        return f"--data {args.data}: unknown; use auto, fashion-mnist or synthetic"
    for option in ("budget_seconds", "seconds_per_measurement", "seed_epochs"):
        if not getattr(args, option) > 0:
            return f"--{option.replace('_', '-')} {getattr(args, option)}: must be positive"
    for text in args.ttq_recipe:
        try:
            parse_recipe(text)
        except ConfigError as error:
            return f"--ttq-recipe {text}: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args)
        exit_now(0)  # DDP used gloo or NCCL here: its threads could abort a plain exit (core/distributed.py)
    problem = check_args(args)
    if problem:
        print(f"benchmarks/gpu.py: {problem}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 1
    print_header("vaezoo on one GPU: samples/s, peak memory, time to the seed's quality, torchrun")
    device = torch.device("cuda")
    try:
        train_x, test_x, source = load_images(args.data, device, args.data_dir)
    except DataError as error:
        print(f"benchmarks/gpu.py: {error}", file=sys.stderr)
        return 1
    print(f"data: {source}; {train_x.shape[0]:,} training images on the GPU "
          f"({mib(train_x.nbytes + test_x.nbytes)} MiB with the test images, included in every peak)\n", flush=True)
    header = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "gpu": torch.cuda.get_device_name(),
              "torch": torch.__version__, "vaezoo": vaezoo.__version__, "data": source, "budget_seconds": args.budget_seconds}
    report = Report(header)
    recipes = {DEFAULT_RECIPE: {}, **{text: parse_recipe(text) for text in args.ttq_recipe}}
    jobs = plan(args.models, train_x, test_x, args.seconds_per_measurement, args.seed_epochs, args.data, args.data_dir, recipes)
    run_jobs(jobs, args.budget_seconds, report, args.json)
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
