"""benchmarks/gpu.py and benchmarks/scaling.py on the CPU: what they time is what they report, bf16 autocast,
the budget, time to quality, the torchrun run, per-point memory, and one clear line where they cannot run."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

import vaezoo
from vaezoo.data import load_data

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their siblings (common.py, throughput.py, gpu.py)
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # scaling.py imports gpu by name: one module, not two
    spec.loader.exec_module(module)
    return module


gpu, scaling = script("gpu"), script("scaling")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    splits = load_data("digits")
    return splits.train.x, splits.test.x


def tiny(name: str = "vae-mlp") -> vaezoo.VAE:
    return gpu.build_model(name, "cpu", (1, 8, 8), preset="tiny")


# --- gpu.py: timing --------------------------------------------------------------------------------------
def test_training_throughput_times_exactly_the_steps_it_counts(digits) -> None:
    """Samples/s = timed samples / the seconds between the first and last timed step, warm-up left out: checked
    against when the encoder really ran (a hook's clock) and how many rows it saw."""
    model, calls = tiny(), []
    model.encoder.register_forward_hook(lambda module, args, out: calls.append((time.perf_counter(), args[0].shape[0])))
    m = gpu.train_throughput(model, digits[0], 16, target_seconds=0.05, warmup_steps=2, probe_steps=2)
    returned = time.perf_counter()
    assert len(calls) == m.warmup_steps + m.steps and m.warmup_steps == 4 and m.steps >= 3
    assert {rows for _, rows in calls} == {16} and m.samples == 16 * m.steps
    assert m.samples_per_s == m.samples / m.seconds
    times = [t for t, _ in calls]
    # the clock starts after the last untimed step and stops after the last timed one
    assert times[-1] - times[-m.steps] < m.seconds < returned - times[-m.steps - 1]
    assert m.peak_memory_bytes is None and (m.what, m.precision, m.speedup) == ("train", "fp32", "eager")


def test_measure_sizes_the_timed_run_from_the_probe() -> None:
    calls = []

    def step() -> None:  # a step of known length: 10 ms
        calls.append(1)
        time.sleep(0.01)

    steps, seconds, untimed, _ = gpu.measure(step, CPU, target_seconds=0.1, warmup_steps=1, probe_steps=2)
    assert len(calls) == untimed + steps and untimed == 3
    assert 3 <= steps <= 10  # about 0.1 s of 10 ms steps; sleep only ever overshoots
    assert seconds >= 0.01 * steps and 8 * 16 / seconds <= 16 / 0.01  # no faster than the sleep allows


def test_evaluation_throughput_runs_forward_passes_without_gradients(digits) -> None:
    model, grads = tiny(), []
    model.encoder.register_forward_hook(lambda module, args, out: grads.append(torch.is_grad_enabled()))
    m = gpu.eval_throughput(model, digits[1], 60, target_seconds=0.02, warmup_steps=1, probe_steps=1)
    assert m.what == "eval" and len(grads) == m.warmup_steps + m.steps and not any(grads)
    assert math.isclose(m.samples_per_s, 60 * m.steps / m.seconds)


@pytest.mark.parametrize("name", ["vae-mlp", "hvae", "vdvae"])
def test_bf16_autocast_runs_on_the_cpu(digits, name) -> None:
    model, dtypes = tiny(name), set()
    first_layer = next(m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    first_layer.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    bf16 = gpu.train_throughput(model, digits[0], 16, "bf16", target_seconds=0.01, warmup_steps=1, probe_steps=1)
    assert dtypes == {torch.bfloat16} and bf16.samples_per_s > 0 and bf16.precision == "bf16"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bf16 steps trained, in float32 weights
    dtypes.clear()
    gpu.train_throughput(model, digits[0], 16, "fp32", target_seconds=0.01, warmup_steps=1, probe_steps=1)
    assert dtypes == {torch.float32}


@pytest.mark.slow
def test_compiled_steps_train_and_their_compilation_is_left_out_of_the_timing(digits) -> None:
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    m = gpu.train_throughput(model, digits[0], 32, "bf16", "compile:reduce-overhead", target_seconds=0.05,
                             warmup_steps=2, probe_steps=1)
    assert m.speedup == "compile:reduce-overhead" and m.samples_per_s == 32 * m.steps / m.seconds
    assert m.warmup_seconds > 5 * m.seconds / m.steps  # the first step compiled: seconds, not milliseconds
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every weight was updated
    gpu.free_memory()


def test_bad_precisions_and_speedups_are_refused_by_name(digits) -> None:
    with pytest.raises(ValueError, match="precision='fp16' is unknown"):
        gpu.train_throughput(tiny(), digits[0], 8, "fp16")
    with pytest.raises(ValueError, match="speedup='jit' is unknown"):
        gpu.train_throughput(tiny(), digits[0], 8, speedup="jit")
    with pytest.raises(ValueError, match="cuda-graph' needs a CUDA device, not 'cpu'"):
        gpu.train_throughput(tiny(), digits[0], 8, speedup="cuda-graph")


def test_random_batches_may_exceed_the_data_and_stay_on_its_rows() -> None:
    x = torch.arange(10.0).view(10, 1)
    batch = gpu.random_batches(x, 64)()
    assert batch.shape == (64, 1) and set(batch.flatten().tolist()) <= set(range(10))


# --- gpu.py: quality, budget, command line -------------------------------------------------------------
def test_time_to_quality_reports_the_first_epoch_at_the_target(digits, capsys) -> None:
    train_x, test_x = digits
    seed = gpu.seed_reference(train_x, test_x, epochs=1)
    assert seed["epochs"] == 1 and seed["train_seconds"] > 0 and 0 < seed["test_neg_elbo"] < 64 * math.log(2) * 2
    run = gpu.time_to_quality(train_x, test_x, math.inf, preset="tiny", epochs=3, batch_size=64)
    curve = run["curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3] and run["reached"] == curve[0]
    assert all(a["train_seconds"] < b["train_seconds"] for a, b in zip(curve, curve[1:]))
    assert all(p["wall_seconds"] >= p["train_seconds"] for p in curve)
    assert run["recipe"]["batch_size"] == 64 and run["recipe"]["lr"] == 2e-3  # vae-mlp's train_defaults, then ours
    target = curve[1]["test_neg_elbo"]
    again = gpu.time_to_quality(train_x, test_x, target, preset="tiny", epochs=3, batch_size=64)
    assert [p["test_neg_elbo"] for p in again["curve"]] == [p["test_neg_elbo"] for p in curve]  # seeded: the same run
    first = next(p["epoch"] for p in curve if p["test_neg_elbo"] <= target)
    assert again["reached"]["epoch"] == first <= 2
    never = gpu.time_to_quality(train_x, test_x, -math.inf, preset="tiny", epochs=1)
    assert never["reached"] is None
    report = gpu.Report({}, time_to_quality={"seed": seed, "vaezoo": {"defaults": run, "never": never}})
    gpu.print_table(report)
    out = capsys.readouterr().out
    assert f"{curve[0]['test_neg_elbo']:.2f} after epoch 1: {curve[0]['train_seconds']:.1f} s of training" in out
    assert "never {'batch_size': 128" in out and "not reached in 1 epochs" in out


def test_the_budget_skips_what_would_not_fit_and_a_failure_stops_nothing(tmp_path, digits, capsys) -> None:
    measured = gpu.Job("measured", 0.0, lambda: gpu.train_throughput(tiny(), digits[0], 8, target_seconds=0.01))

    def broken() -> None:
        raise RuntimeError("CUDA graph capture failed\nsecond line")

    jobs = [gpu.Job("broken", 0.0, broken), measured, gpu.Job("too long", 1e6, lambda: pytest.fail("ran"))]
    report = gpu.Report({"command": "test"})
    gpu.run_jobs(jobs, 60.0, report, str(tmp_path / "gpu.json"))
    assert report.errors == {"broken": "RuntimeError: CUDA graph capture failed"} and report.skipped == ["too long"]
    written = json.loads((tmp_path / "gpu.json").read_text())
    (row,) = written["measurements"]
    assert row["samples_per_s"] == row["samples"] / row["seconds"] and row["samples"] == 8 * row["steps"]
    gpu.print_table(report)
    out = capsys.readouterr().out
    assert f"{row['samples_per_s']:,.0f}" in out and "skipped for the budget: too long" in out


def test_a_time_to_quality_recipe_is_read_as_trainconfig_fields() -> None:
    assert gpu.parse_recipe("batch_size=512,lr=3e-3") == {"batch_size": 512, "lr": 0.003}
    assert gpu.parse_recipe("bf16=false,epochs=30") == {"bf16": False, "epochs": 30}


def test_the_plan_puts_compilation_last_and_knows_every_model() -> None:
    x = torch.zeros(4, 1, 28, 28)
    jobs = gpu.plan(list(gpu.MODELS), x, x, 1.0, 10, "synthetic", None)
    labels = [job.label for job in jobs]
    first_compile = next(i for i, label in enumerate(labels) if "compile" in label)
    assert all("compile" in label for label in labels[first_compile:])
    assert any("cuda-graph" in label and "65536" in label for label in labels)
    assert {"time_to_quality", "torchrun"} <= {job.section for job in jobs}
    assert {label.split()[1] for label in labels if label.startswith("train")} == set(gpu.MODELS)


def test_gpu_script_without_cuda_exits_with_one_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
    assert run.stderr.startswith("benchmarks/gpu.py needs a CUDA GPU; torch.cuda.is_available() is False")
    assert len(run.stderr.strip().splitlines()) == 1 and run.stdout == ""


@pytest.mark.parametrize("argv, named", [(["--models", "vae-mlp", "wae"], "--models wae"),
                                         (["--budget-seconds", "0"], "--budget-seconds 0.0"),
                                         (["--data", "mnist"], "--data mnist"),
                                         (["--ttq-recipe", "batch=512"], "--ttq-recipe batch=512: unknown config field 'batch'"),
                                         (["--ttq-recipe", "lr=-1"], "--ttq-recipe lr=-1: lr=-1.0 must be a positive number"),
                                         (["--ttq-recipe", "lr"], "--ttq-recipe lr: 'lr' is not of the form key=value")])
def test_gpu_script_refuses_a_bad_option_in_one_line(capsys, argv, named) -> None:
    assert gpu.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"benchmarks/gpu.py: {named}") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_torchrun_trains_with_vaezoo_as_launched_and_through_its_ddp_path(capsys) -> None:
    result = gpu.torchrun_training("cpu", "synthetic", epochs=2, examples=600, preset="tiny", timeout=240)
    assert result["ran"] and result["world_size"] == 1 and result["backend"] == "gloo" and result["all_reduce_ok"]
    plain, ddp = result["runs"]["as launched"], result["runs"]["DDP, one rank"]
    assert plain["ddp_engaged"] is False and ddp["ddp_engaged"] is True  # vaezoo skips DDP for one process
    assert plain["samples_per_s"] > 0 and ddp["samples_per_s"] > 0 and plain["epochs"] == ddp["epochs"] == 2
    assert math.isclose(plain["test_neg_elbo"], ddp["test_neg_elbo"], rel_tol=1e-5)  # one rank: nothing to average
    assert result["exit_code"] == 0
    gpu.print_table(gpu.Report({}, torchrun=result))
    out = capsys.readouterr().out
    assert re.search(r"as launched +DDP engaged: False", out) and re.search(r"DDP, one rank +DDP engaged: True", out)
    assert result["command"].startswith("torchrun --standalone --nproc_per_node 1 benchmarks/gpu.py --ddp-worker --device cpu")


# --- scaling.py ----------------------------------------------------------------------------------------
def test_exponents_are_the_log_log_slopes() -> None:
    assert scaling.exponents([1, 2, 4, 8], [3.0, 6.0, 24.0, 24.0]) == [None, 1.0, 2.0, 0.0]


def test_each_axis_varies_one_thing_from_the_reference_point() -> None:
    sweep = scaling.CPU["hvae"]
    axes = scaling.axis_points("hvae", sweep)
    reference = scaling.Point("hvae", *sweep.reference)
    assert all(reference in points for points in axes.values())
    assert [p.batch_size for p in axes["batch_size"]] == list(sweep.batch_sizes)
    assert {(p.width, p.examples) for p in axes["batch_size"]} == {sweep.reference[1:]}
    assert {(p.batch_size, p.width) for p in axes["examples"]} == {sweep.reference[:2]}


@pytest.mark.parametrize("name", ["vae-mlp", "hvae", "vdvae"])
def test_the_width_knob_sets_each_models_width(name) -> None:
    small, large = (vaezoo.create_model(name, input_shape=(1, 8, 8), preset="tiny", **scaling.width_overrides(name, w))
                    for w in (8, 16))
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(large) > count(small)
    config = large.config
    assert {"vae-mlp": lambda: config.hidden_dims == (16,), "hvae": lambda: config.hidden_dim == 16,
            "vdvae": lambda: (config.width, config.bottleneck) == (16, 8)}[name]()


def test_scaling_script_refuses_a_bad_option_in_one_line(capsys) -> None:
    assert scaling.main(["--models", "vq-vae"]) == 2
    assert scaling.main(["--threads", "0"]) == 2
    if not torch.cuda.is_available():
        assert scaling.main(["--device", "cuda"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "benchmarks/scaling.py: --models vq-vae: unknown; choose from vae-mlp, hvae, vdvae"
    assert lines[1].startswith("benchmarks/scaling.py: --threads 0") and len(lines) == 2 + (not torch.cuda.is_available())


@pytest.mark.slow
def test_each_point_measures_its_own_memory_in_a_fresh_process() -> None:
    """Two points that differ only in their data: the memory each reports differs by the data's size."""
    small, large = (scaling.run_point_in_subprocess(scaling.Point("vae-mlp", 8, 16, n), True, "cpu", 1, 0.05)
                    for n in (1_000, 400_000))
    assert large["data_bytes"] == 400_000 * 64 * 4 and small["data_bytes"] == 1_000 * 64 * 4
    grown = large["added_bytes"] - small["added_bytes"]
    assert 0.9 < grown / (large["data_bytes"] - small["data_bytes"]) < 1.3
    assert small["added_bytes"] < 40 * 2**20  # a tiny model on 1,000 images: not the libraries' ~140 MiB
    assert math.isclose(small["samples_per_s"], 8 / small["step_seconds"])


@pytest.mark.slow
def test_scaling_quick_prints_a_table_and_writes_the_plot(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(BENCHMARKS / "scaling.py"), "--quick", "--models", "vae-mlp", "--threads", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [(r["axis"], r["value"]) for r in rows] == [("batch_size", 8), ("batch_size", 32), ("width", 16), ("width", 32),
                                                       ("examples", 256), ("examples", 1024)]
    assert "k time" in run.stdout and "4 points in" in run.stdout
