"""The shared trainer: run folders, schedules, SIGKILL + resume, NaN stops, EMA, early stopping, DDP."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ddp_ranks import free_port, rank_env
from safetensors.torch import load_file

import vaezoo
from vaezoo.core.distributed import exit_leaving_process_group
from vaezoo.data import load_data
from vaezoo.errors import TrainingDivergedError
from vaezoo.eval.evaluate import evaluate
from vaezoo.io.cards import read_card_metadata
from vaezoo.training.trainer import TrainConfig, lr_at

DIGITS_TINY = {"input_shape": (1, 8, 8), "num_classes": 10}


def tiny(name: str, **overrides) -> vaezoo.VAE:
    return vaezoo.create_model(name, preset="tiny", **{**DIGITS_TINY, **overrides})


def test_run_folder_holds_everything_and_the_loss_falls(tmp_path, digits_splits) -> None:
    result = vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path / "run", epochs=8, lr=3e-3, progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "checkpoints/last.safetensors", "metrics.jsonl",
                 "samples.png", "loss_curve.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert {"loss", "recon", "kl"} <= set(records[0]["train"]) and "neg_elbo" in records[0]["val"]
    assert all(r["samples_per_s"] > 0 and r["lr"] > 0 and r["wall_time_s"] > 0 for r in records)
    assert records[-1]["val"]["neg_elbo"] < 0.9 * records[0]["val"]["neg_elbo"]
    assert result.val_metrics == records[-1]["val"]
    reloaded = vaezoo.load_model_dir(run)
    x = digits_splits.test.x[:8]
    torch.testing.assert_close(reloaded.reconstruct(x), result_model_reconstruct(run, x))


def result_model_reconstruct(run: Path, x: torch.Tensor) -> torch.Tensor:
    return vaezoo.load_model_dir(run).reconstruct(x)


def test_lr_schedule_warms_up_then_decays() -> None:
    config = TrainConfig(lr=1.0, lr_warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, config) == pytest.approx(0.1)
    assert lr_at(9, 100, config) == pytest.approx(1.0)
    assert lr_at(10, 100, config) == pytest.approx(1.0)
    assert lr_at(55, 100, config) == pytest.approx(0.55, abs=0.01)
    assert lr_at(100, 100, config) == pytest.approx(0.1)


def test_an_existing_run_is_never_overwritten(tmp_path, digits_splits) -> None:
    vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path, epochs=1, progress=False)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(vaezoo.ConfigError, match="already holds a run; pass --resume"):
        vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path, epochs=1, progress=False)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_bad_training_options_are_clear_errors(digits_splits) -> None:
    with pytest.raises(vaezoo.ConfigError, match="batch_size=0 must be a positive integer"):
        vaezoo.train(tiny("vae-mlp"), digits_splits, batch_size=0)
    with pytest.raises(vaezoo.ConfigError, match="unknown config field 'epoch'.*did you mean 'epochs'"):
        vaezoo.train(tiny("vae-mlp"), digits_splits, epoch=3)
    with pytest.raises(vaezoo.ConfigError, match=r"shape \(1, 8, 8\) but the model takes \(1, 28, 28\)"):
        vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny"), digits_splits, epochs=1)


class ExplodingVAE(vaezoo.get_model_class("vae-mlp")):
    """Returns a NaN loss from training step 15 on (the second epoch on digits at batch 128)."""

    def forward(self, x, y=None):
        out = super().forward(x, y)
        if self.training and self.train_step >= 15:
            out.loss = out.loss * float("nan")
        return out


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, digits_splits) -> None:
    vaezoo.register_model(ExplodingVAE, "exploding-vae")
    model = vaezoo.create_model("exploding-vae", preset="tiny", **DIGITS_TINY)
    with pytest.raises(TrainingDivergedError, match=r"training diverged .* epoch 2.*loss=nan.*last good checkpoint is kept"):
        vaezoo.train(model, digits_splits, out_dir=tmp_path, epochs=5, progress=False, log_every=1)
    state = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert state["epochs_done"] == 1
    weights = load_file(tmp_path / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(v).all() for k, v in weights.items() if k.startswith("model."))


class SometimesNaNVAE(vaezoo.get_model_class("vae-mlp")):
    """Every fifth training step's loss is NaN: a rare bad batch, as VDVAE's update skipping is for."""

    def forward(self, x, y=None):
        out = super().forward(x, y)
        if self.training and self.train_step % 5 == 4:
            out.loss = out.loss * float("nan")
        return out


def test_updates_with_a_bad_gradient_are_skipped_and_counted(tmp_path, digits_splits) -> None:
    vaezoo.register_model(SometimesNaNVAE, "sometimes-nan-vae")
    steps = len(digits_splits.train) // 128  # full batches per epoch
    model = vaezoo.create_model("sometimes-nan-vae", preset="tiny", **DIGITS_TINY)
    vaezoo.train(model, digits_splits, out_dir=tmp_path / "skip", epochs=2, progress=False, log_every=1,
                 grad_skip_threshold=1e6)
    records = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    expected = [sum(1 for s in range(e * steps, (e + 1) * steps) if s % 5 == 4) for e in range(2)]
    assert [r["train"]["skipped_updates"] for r in records] == expected
    assert all(math.isfinite(v) for r in records for v in r["train"].values())  # the NaN batches' terms stay out
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(TrainingDivergedError, match="loss=nan"):  # without skipping the run stops, as before
        vaezoo.train(vaezoo.create_model("sometimes-nan-vae", preset="tiny", **DIGITS_TINY), digits_splits,
                     out_dir=tmp_path / "plain", epochs=2, progress=False, log_every=1)


def test_a_threshold_no_gradient_reaches_changes_nothing_and_one_all_reach_stops_the_run(tmp_path, digits_splits) -> None:
    weights = []
    for name, extra in (("plain", {}), ("loose", {"grad_skip_threshold": 1e12})):
        torch.manual_seed(0)
        model = tiny("vae-mlp")
        vaezoo.train(model, digits_splits, out_dir=tmp_path / name, epochs=1, progress=False, **extra)
        weights.append(load_file(tmp_path / name / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(TrainingDivergedError, match=r"every update of epoch 1 .* was skipped.*grad_skip_threshold=1e-09"):
        vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path / "tight", epochs=1, progress=False,
                     grad_skip_threshold=1e-9)


def test_ema_weights_are_exported(tmp_path, digits_splits) -> None:
    model = tiny("vae-mlp")
    vaezoo.train(model, digits_splits, out_dir=tmp_path, epochs=2, ema_decay=0.9, progress=False)
    exported = load_file(tmp_path / "model.safetensors")
    raw = load_file(tmp_path / "checkpoints" / "last.safetensors")
    name = "decoder.net.1.weight"
    torch.testing.assert_close(exported[name], raw[f"ema.{name}"])
    assert not torch.equal(exported[name], raw[f"model.{name}"])


def test_early_stopping_restores_the_best_weights(tmp_path, digits_splits) -> None:
    # With a vanishing learning rate the validation -ELBO only jitters (it is a one-sample estimate).
    result = vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path, epochs=60, lr=1e-9,
                          lr_schedule="constant", early_stopping=2, progress=False)
    assert result.stopped_early and len(result.history) < 60
    torch.testing.assert_close(load_file(tmp_path / "model.safetensors"), load_file(tmp_path / "checkpoints" / "best.safetensors"))


def test_two_stage_variant_trains_both_stages(tmp_path, digits_splits) -> None:
    result = vaezoo.train(tiny("vq-vae"), digits_splits, out_dir=tmp_path, stage_epochs=(3, 3), lr=3e-3, progress=False)
    stages = [r["stage"] for r in result.history]
    assert stages == ["autoencoder"] * 3 + ["prior"] * 3
    prior = [r for r in result.history if r["stage"] == "prior"]
    assert prior[-1]["train"]["loss"] < prior[0]["train"]["loss"]
    with pytest.raises(vaezoo.ConfigError, match="names 1 stages but VQVAE trains in 2"):
        vaezoo.train(tiny("vq-vae"), digits_splits, stage_epochs=(3,), progress=False)
    # The result and the card report the final model's -ELBO, as `vaezoo eval` does, not the prior stage's loss.
    assert "prior_nll" not in result.val_metrics
    expected = evaluate(result_model := vaezoo.load_model_dir(tmp_path), digits_splits.val.x)["neg_elbo"]
    assert result.val_metrics["neg_elbo"] == pytest.approx(expected, rel=1e-5) and result_model.model_name == "vq-vae"
    assert read_card_metadata(tmp_path)["validation_metrics"]["neg_elbo"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(vaezoo.ConfigError, match="both epochs=2 and stage_epochs=\\[3, 3\\] given in train\\(\\)"):
        vaezoo.train(tiny("vq-vae"), digits_splits, epochs=2, stage_epochs=(3, 3), progress=False)
    with pytest.raises(vaezoo.ConfigError, match="must hold positive integers"):
        vaezoo.train(tiny("vq-vae"), digits_splits, stage_epochs=(0, 0), progress=False)


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaezoo.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    args = ["train", "vae-mlp", "--data", "digits", "--epochs", "6", "--batch-size", "16", "--seed", "3", "--quiet",
            "--set", "hidden_dims=[512,512]"]
    reference = cli(*args, "--out", str(tmp_path / "reference"))
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    victim = cli(*args, "--out", str(tmp_path / "victim"))
    metrics = tmp_path / "victim" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # well inside epoch 3
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = json.loads((tmp_path / "victim" / "checkpoints" / "last.json").read_text())["epochs_done"]
    assert 2 <= done < 6

    resumed = cli("train", "vae-mlp", "--resume", "--quiet", "--out", str(tmp_path / "victim"))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    expected = load_file(tmp_path / "reference" / "model.safetensors")
    actual = load_file(tmp_path / "victim" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    lines = (tmp_path / "victim" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_resume_without_a_checkpoint_is_a_clear_cli_error(tmp_path) -> None:
    process = cli("train", "vae-mlp", "--resume", "--out", str(tmp_path / "none"))
    assert process.wait(timeout=120) == 1
    assert process.stderr.read().strip().startswith("error: nothing to resume")


class NoiselessVAE(vaezoo.get_model_class("vae-mlp")):
    """Decodes the posterior mean: deterministic, so data-parallel and single runs must agree exactly."""

    def forward(self, x, y=None):
        posterior = self.encode(x)
        params = self.decode(posterior.mean)
        recon = -self.likelihood.log_prob(params, x)
        kl = posterior.kl()
        return vaezoo.VAEOutput(loss=(recon + kl).mean(), recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params)


def _ddp_worker(rank: int, world_size: int, port: int, out: str, name: str) -> None:
    os.environ.update(rank_env(rank, world_size, port))
    torch.set_num_threads(1)
    _train_for_ddp_test(name, Path(out) / f"rank{rank}.safetensors")
    exit_leaving_process_group(0)  # not a plain return: gloo's threads could abort the rank at exit (see there)


def _train_for_ddp_test(name: str, weights_path: Path) -> None:
    from safetensors.torch import save_file

    vaezoo.register_model(NoiselessVAE, "noiseless-vae")
    torch.manual_seed(0)
    model = vaezoo.create_model(name, preset="tiny", **DIGITS_TINY)
    vaezoo.train(model, load_data("digits"), epochs=3, batch_size=64, lr=3e-3, progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noiseless-vae", "vae-mlp"])
def test_ddp_on_two_gloo_ranks_matches_a_single_process(tmp_path, name) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path), name), nprocs=2, join=True)
    torch.set_num_threads(1)
    _train_for_ddp_test(name, tmp_path / "single.safetensors")
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    single = load_file(tmp_path / "single.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "ranks ended with different weights"
    if name == "noiseless-vae":  # same global batches, averaged gradients: equal up to float summation order
        for key in single:
            torch.testing.assert_close(rank0[key], single[key], rtol=1e-3, atol=1e-4)
    else:  # the reparameterization noise differs per rank, so only the learned function must agree
        data = load_data("digits")
        scores = []
        for weights in (rank0, single):
            model = vaezoo.create_model("vae-mlp", preset="tiny", **DIGITS_TINY)
            model.load_state_dict(weights)
            torch.manual_seed(0)
            scores.append(evaluate(model, data.test.x)["neg_elbo"])
        assert math.isclose(scores[0], scores[1], rel_tol=0.02), scores


@pytest.mark.slow
def test_two_ranks_of_the_train_command_both_exit_0_and_the_main_rank_writes_the_run(tmp_path) -> None:
    """`vaezoo train` under torchrun on gloo: a rank that had finished and written everything could abort at exit
    (SIGABRT, "terminate called without an active exception"; see benchmarks/gloo_exit_abort.py for the odds) as
    gloo's threads dropped their last collective during the interpreter's shutdown; the command line now ends
    the process through exit_leaving_process_group. A race: this run checks the path end to end, not the odds."""
    port, out = free_port(), tmp_path / "run"
    ranks = [cli("train", "vae-mlp", "--data", "digits", "--epochs", "1", "--seed", "0", "--quiet", "--no-compile",
                 "--set", "hidden_dims=[32]", "--out", str(out),
                 env={**os.environ, **rank_env(rank, 2, port), "OMP_NUM_THREADS": "1"})
             for rank in (0, 1)]
    try:
        codes = [rank.wait(timeout=300) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    errors = [rank.stderr.read() for rank in ranks]
    assert codes == [0, 0], errors
    assert not any("terminate called" in error for error in errors), errors
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    assert (out / "model.safetensors").exists()


def test_leaving_the_process_group_outside_torchrun_does_nothing() -> None:
    assert not torch.distributed.is_initialized()
    assert exit_leaving_process_group(0) is None  # the process goes on: nothing to leave


def test_a_run_folder_in_use_refuses_a_second_run_naming_the_live_process(tmp_path, digits_splits) -> None:
    """Two trainings into one --out overwrote each other's checkpoints and metrics, both exiting 0."""
    from vaezoo.io.lock import hold_folder_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from vaezoo.io.lock import hold_folder_lock\n"
        f"with hold_folder_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(vaezoo.FolderInUseError, match=rf"in use by another vaezoo process \(pid {holder.pid}\)"):
            vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path, epochs=1, progress=False)
        run = subprocess.run([sys.executable, "-m", "vaezoo.cli", "train", "vae-mlp", "--data", "digits", "--epochs", "1",
                              "--quiet", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 1 and f"pid {holder.pid}" in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "config.json").exists()  # nothing was written into the folder in use
    finally:
        holder.kill()
        holder.wait()
    result = vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path, epochs=1, progress=False)  # freed by the kill
    assert (result.out_dir / "model.safetensors").is_file()
    with hold_folder_lock(tmp_path / "other"):  # and a lock is released when its block ends
        pass
    vaezoo.train(tiny("vae-mlp"), digits_splits, out_dir=tmp_path / "other", epochs=1, progress=False)


def test_resume_accepts_the_same_command_refuses_changes_and_extends_with_more_epochs(tmp_path) -> None:
    """`--resume` was refused unless every option was dropped; now the run's own command works with it added."""
    from vaezoo.training.runs import train_run

    out = tmp_path / "run"
    command = {"overrides": {"latent_dim": 4}, "train_flags": {"epochs": 2, "lr": 3e-3}, "progress": False}
    first = train_run("vae-mlp", "digits", out, **command)
    again = train_run("vae-mlp", "digits", out, resume=True, **command)  # the same command, --resume added
    assert again.val_metrics == first.val_metrics and len(again.history) == 2
    with pytest.raises(vaezoo.ConfigError, match="latent_dim: 4 in the run, 5 given; lr: 0.003 in the run, 0.01 given"):
        train_run("vae-mlp", "digits", out, resume=True, overrides={"latent_dim": 5},
                  train_flags={"epochs": 2, "lr": 0.01}, progress=False)
    with pytest.raises(vaezoo.ConfigError, match="not shorten it"):
        train_run("vae-mlp", "digits", out, resume=True, train_flags={"epochs": 1}, progress=False)
    with pytest.raises(vaezoo.ConfigError, match="trained on --data digits, not fashion-mnist"):
        train_run("vae-mlp", "fashion-mnist", out, resume=True, progress=False)
    extended = train_run("vae-mlp", "digits", out, resume=True, train_flags={"epochs": 4}, progress=False)
    assert [r["epoch"] for r in extended.history] == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 4
    assert extended.history[1] == first.history[1]  # the first two epochs are the original run's
    assert extended.history[-1]["train"]["loss"] < extended.history[1]["train"]["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)], ids=["ctrl-c twice", "sigterm"])
def test_an_interrupted_run_says_which_checkpoint_it_kept_and_how_to_resume(tmp_path, signals) -> None:
    """Ctrl-C said only "interrupted" (and a second one killed the process); SIGTERM ended it without a word."""
    out = tmp_path / "run"
    run = cli("train", "vae-mlp", "--data", "digits", "--epochs", "30", "--batch-size", "16", "--quiet", "--out", str(out))
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "last.json").is_file():
        time.sleep(0.2)
    for sent in signals:
        run.send_signal(sent)
        time.sleep(0.05)
    assert run.wait(timeout=120) == 130
    lines = run.stderr.read().strip().splitlines()
    assert len(lines) == 1 and ("interrupted" if signals[0] == signal.SIGINT else "terminated (SIGTERM)") in lines[0], lines
    assert f"{out / 'checkpoints' / 'last.safetensors'} is kept (stage 1, " in lines[0]
    command = lines[0].split("resume with: ")[1]
    assert command == f"vaezoo train vae-mlp --resume --out {out}"
    done = json.loads((out / "checkpoints" / "last.json").read_text())["epochs_done"]
    assert 1 <= done < 30
    resumed = subprocess.run([sys.executable, "-m", "vaezoo.cli", *command.split()[1:], "--quiet"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr  # the printed command works
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 30


class Terminal(io.StringIO):
    """stderr as a terminal: progress bars draw on it."""

    def isatty(self) -> bool:
        return True


def screen_lines(drawn: str) -> list[str]:
    """What stays on a terminal: each line as its last carriage return left it."""
    return [line.split("\r")[-1].strip() for line in drawn.split("\n") if line.split("\r")[-1].strip()]


def test_the_progress_bar_leaves_one_line_per_epoch_with_its_validation_figure(digits_splits, monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    vaezoo.train(tiny("vae-mlp"), digits_splits, epochs=3, lr=3e-3, progress=True)
    lines = screen_lines(terminal.getvalue())
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], lines
    assert all("11/11" in line and re.search(r"val neg_elbo=\d+\.\d\d\]$", line) for line in lines), lines


def test_a_compiled_step_is_not_compiled_again_at_every_step_of_the_kl_warm_up(tmp_path, digits_splits, monkeypatch):
    """kl_weight reads model.train_step, a Python int that changes each step; dynamo used to specialise on it and
    build a new graph per step (8 for 12 steps, then its recompile limit). The eager backend stands in for
    Inductor: the number of graphs is decided by dynamo's tracing, not by the backend."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **options: real_compile(module, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    vaezoo.train(tiny("vae-mlp", kl_warmup_steps=1000), digits_splits,
                 out_dir=tmp_path / "run", epochs=1, batch_size=128, compile=True, progress=False)
    steps = len(digits_splits.train.x) // 128
    assert steps >= 10
    assert counters["stats"]["unique_graphs"] <= 3  # the first step's, then one for every later step (+ validation)
    torch._dynamo.reset()


def test_compile_by_default_only_where_it_was_measured_to_pay(digits_splits) -> None:
    """compile=None (the default) compiles a CPU stage at least as long as the variant's measured break-even;
    an explicit True/False wins; GPUs and torchrun have no measurement and stay eager."""
    from vaezoo.training.config import TrainConfig, compile_this_stage

    class Pays(vaezoo.VAE):
        compile_pays_after_steps = 100

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = TrainConfig()
    assert auto.compile is None
    assert [compile_this_stage(auto, Pays, steps, cpu, False) for steps in (99, 100)] == [False, True]
    assert not compile_this_stage(auto, Pays, 10**6, cuda, False) and not compile_this_stage(auto, Pays, 10**6, cpu, True)
    assert not compile_this_stage(auto, vaezoo.VAE, 10**6, cpu, False)  # not measured to pay: eager
    assert compile_this_stage(TrainConfig(compile=True), vaezoo.VAE, 1, cpu, False)
    assert not compile_this_stage(TrainConfig(compile=False), Pays, 10**6, cpu, False)
    with pytest.raises(vaezoo.ConfigError, match="compile='yes' must be true, false or null"):
        TrainConfig(compile="yes")


def test_a_default_compile_that_cannot_run_here_falls_back_to_eager(digits_splits, monkeypatch) -> None:
    """No C++ compiler for inductor, say: the compile the user did not ask for warns and trains eagerly to the same
    figures as an eager run; one the user asked for (compile=True) fails with torch's error."""
    class NoBackend(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args):  # fails as Inductor does at the first backward: the forward runs, its gradient not
            out = self.module(*args)
            loss = out.loss.clone()
            loss.register_hook(no_compiler)
            return dataclasses.replace(out, loss=loss)

    def no_compiler(grad):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **options: NoBackend(module))
    torch.manual_seed(0)
    model = tiny("vae-mlp")
    monkeypatch.setattr(type(model), "compile_pays_after_steps", 1)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*InvalidCxxCompiler.*training eagerly instead"):
        fallen_back = vaezoo.train(model, digits_splits, epochs=2, lr=3e-3, seed=0, progress=False)
    torch.manual_seed(0)
    eager = vaezoo.train(tiny("vae-mlp"), digits_splits, epochs=2, lr=3e-3, seed=0, progress=False, compile=False)
    assert fallen_back.history[-1]["val"]["neg_elbo"] == eager.history[-1]["val"]["neg_elbo"]
    with pytest.raises(RuntimeError, match="InvalidCxxCompiler"):
        vaezoo.train(tiny("vae-mlp"), digits_splits, epochs=1, progress=False, compile=True)
