"""The pure parts of the scripts in benchmarks/: what a model card states and how the leaderboard ranks."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def script(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their sibling common.py
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # a dataclass in the script looks its module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_a_card_states_the_kl_of_every_latent_group() -> None:
    metrics = {"neg_elbo": 24.4, "recon": 20.1, "kl": 4.3, "nll": 23.6, "iw_samples": 1000, "samples_per_s": 900.0,
               **{f"kl_{g}": 0.5 + g for g in range(5)}, "kl_per_group": {"kl_0": 0.5}, "kl_warmup": 1.0}
    card = script("train_zoo").headline_metrics(metrics)
    assert card == {"neg_elbo": 24.4, "recon": 20.1, "kl": 4.3, "nll": 23.6, "iw_samples": 1000,
                    **{f"kl_{g}": 0.5 + g for g in range(5)}}


def test_the_leaderboard_ranks_by_nll_and_leaves_out_variants_without_a_tag() -> None:
    results = {
        "settings": {"command": "vaezoo bench --pretrained", "iw_samples": 1000, "data": "fashion-mnist"},
        "models": {
            "worse": {"status": "ok", "nll": 236.8, "neg_elbo": 239.5, "nll_examples": 1000},
            "better": {"status": "ok", "nll": 221.3, "neg_elbo": 226.0, "nll_examples": 1000,
                       "kl_per_group": {f"kl_{g}": g + 0.5 for g in (10, 0, 2, 1, 3, 4, 5, 6, 7, 8, 9)}},
            "bound-only": {"status": "ok", "neg_elbo": 309.3},
            "untagged": {"status": "n/a: vq-vae has no pretrained tag for data 'fashion-mnist'"},
        },
    }
    table = script("leaderboard").leaderboard_markdown(results)
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["better", "worse", "bound-only"]
    assert "| 221.30 | 226.00 |" in table
    assert "Not listed (no pretrained tag for fashion-mnist): untagged." in table
    # every group's KL, bottom first (kl_10 after kl_9, not after kl_1); none for the single-latent models
    groups = " / ".join(f"{g + 0.5:.2f}" for g in range(11))
    assert f"KL per latent layer or group, bottom first (nats): better {groups}." in table


def results_of(models: dict[str, float], command: str, **settings: object) -> dict:
    protocol = {"data": "fashion-mnist", "iw_samples": 1000, "iw_examples": 1000, "seed": 0, "pretrained": True,
                "epochs": None, "minutes": None, "overrides": {}, **settings}
    return {"settings": {"command": command, "models": sorted(models), **protocol}, "machine": {"cores": 2},
            "models": {name: {"status": "ok", "nll": nll} for name, nll in models.items()},
            "notes": {name: {"nll": f"note of {name}"} for name in models}}


def test_the_leaderboard_merges_models_measured_again_and_keeps_the_others() -> None:
    merge = script("leaderboard").merge_results
    previous = results_of({"vae-mlp": 236.8, "wae": 300.0}, "vaezoo bench vae-mlp wae --data fashion-mnist --pretrained")
    fresh = results_of({"wae": 250.0, "info-vae": 240.0},
                       "vaezoo bench info-vae wae --data fashion-mnist --iw-samples 1000 --pretrained")
    merged = merge(previous, fresh)
    assert {name: record["nll"] for name, record in merged["models"].items()} == {
        "info-vae": 240.0, "vae-mlp": 236.8, "wae": 250.0}
    assert merged["settings"]["models"] == ["info-vae", "vae-mlp", "wae"]
    assert merged["settings"]["command"] == (
        "vaezoo bench info-vae vae-mlp wae --data fashion-mnist --iw-samples 1000 --pretrained")
    assert merged["notes"]["vae-mlp"] == {"nll": "note of vae-mlp"}
    table = script("leaderboard").leaderboard_markdown(merged)
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["vae-mlp", "info-vae", "wae"]


def test_the_leaderboard_refuses_to_merge_rows_measured_under_another_protocol() -> None:
    import pytest

    merge = script("leaderboard").merge_results
    previous = results_of({"vae-mlp": 236.8}, "vaezoo bench vae-mlp --data fashion-mnist", iw_samples=100)
    fresh = results_of({"wae": 250.0}, "vaezoo bench wae --data fashion-mnist")
    with pytest.raises(SystemExit, match="other iw_samples .*iw_samples=100.*rerun without --models"):
        merge(previous, fresh)


def _leaderboard_folder(tmp_path: Path, **protocol) -> tuple[ModuleType, Path]:
    """A leaderboard folder on digits with the rows of vae-mlp and beta-vae, each with a figure folder."""
    import json

    from vaezoo.bench.report import write_results
    from vaezoo.bench.settings import resolve_settings

    leaderboard = script("leaderboard")
    out = tmp_path / "board"
    settings = resolve_settings(["beta-vae", "vae-mlp"], "digits", pretrained=True, out_dir=str(out),
                                **{"iw_samples": 1000, "iw_examples": 1000, **protocol})
    records = {name: {"status": "ok", "nll": nll} for name, nll in (("beta-vae", 30.0), ("vae-mlp", 25.0))}
    write_results({"settings": settings, "machine": {}, "models": records, "notes": {n: {} for n in records}}, out)
    for name in records:
        (out / name).mkdir()
        (out / name / "old.png").write_bytes(b"old")
    assert json.loads((out / "results.json").read_text())["models"] == records
    return leaderboard, out


def _fake_benchmark(calls: list, during=None):
    """run_benchmark's stand-in: writes the fresh rows and figure folders into its out_dir as the real one does."""
    from vaezoo.bench.report import write_results
    from vaezoo.bench.settings import resolve_settings

    def run_benchmark(names, data, *, pretrained, out_dir, iw_samples, iw_examples):
        calls.append(out_dir)
        out = Path(out_dir)
        settings = resolve_settings(names, data, pretrained=pretrained, out_dir=out_dir, iw_samples=iw_samples,
                                    iw_examples=iw_examples)
        results = {"settings": settings, "machine": {}, "models": {n: {"status": "ok", "nll": 20.0} for n in names},
                   "notes": {n: {} for n in names}}
        for name in names:
            (out / name).mkdir(parents=True)
            (out / name / "new.png").write_bytes(b"new")
        write_results(results, out)
        if during is not None:
            during()
        return results
    return run_benchmark


def test_a_models_run_measures_aside_and_merges_into_the_rows_as_they_are_at_its_end(tmp_path, monkeypatch) -> None:
    """--models: the fresh row and its figures replace the old, the other rows stay, and a row another run merged
    meanwhile (a parallel --models run of another variant) is kept; the staging folder is gone."""
    import json

    leaderboard, out = _leaderboard_folder(tmp_path)
    calls: list = []

    def another_run_merges_a_row() -> None:
        results = json.loads((out / "results.json").read_text())
        results["models"]["dip-vae"], results["notes"]["dip-vae"] = {"status": "ok", "nll": 27.0}, {}
        (out / "results.json").write_text(json.dumps(results))

    monkeypatch.setattr(leaderboard, "run_benchmark", _fake_benchmark(calls, during=another_run_merges_a_row))
    results = leaderboard.measure_and_merge(["beta-vae"], "digits", out, 1000, 1000)
    assert Path(calls[0]).parent == out and Path(calls[0]).name.startswith(".measuring-")
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results, default=str))
    assert {name: row["nll"] for name, row in written["models"].items()} == {"beta-vae": 20.0, "dip-vae": 27.0,
                                                                              "vae-mlp": 25.0}
    assert f"--out {out}" in written["settings"]["command"] and ".measuring" not in written["settings"]["command"]
    assert sorted(p.name for p in (out / "beta-vae").iterdir()) == ["new.png"]
    assert (out / "vae-mlp" / "old.png").is_file()
    assert not list(out.glob(".measuring-*"))


def test_a_models_run_under_another_protocol_is_refused_before_measuring_and_a_kill_loses_no_row(tmp_path, monkeypatch) -> None:
    import pytest

    leaderboard, out = _leaderboard_folder(tmp_path, iw_samples=100)
    before = (out / "results.json").read_bytes()
    calls: list = []
    monkeypatch.setattr(leaderboard, "run_benchmark", _fake_benchmark(calls))
    with pytest.raises(SystemExit, match="other iw_samples .*iw_samples=100"):
        leaderboard.measure_and_merge(["beta-vae"], "digits", out, 1000, 1000)
    assert calls == [] and (out / "results.json").read_bytes() == before

    def killed() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(leaderboard, "run_benchmark", _fake_benchmark(calls, during=killed))
    with pytest.raises(KeyboardInterrupt):
        leaderboard.measure_and_merge(["beta-vae"], "digits", out, 100, 1000)
    assert (out / "results.json").read_bytes() == before and (out / "beta-vae" / "old.png").is_file()
    # The killed run's staging folder is cleared by the next run once its process is gone; a live run's is kept.
    import os
    import subprocess
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    os.replace(out / f".measuring-{os.getpid()}", out / f".measuring-{dead}")
    (out / f".measuring-{os.getppid()}").mkdir()  # a parallel run, still measuring
    monkeypatch.setattr(leaderboard, "run_benchmark", _fake_benchmark(calls))
    leaderboard.measure_and_merge(["beta-vae"], "digits", out, 100, 1000)
    assert sorted(p.name for p in out.glob(".measuring-*")) == [f".measuring-{os.getppid()}"]
    with pytest.raises(SystemExit, match="does not exist; run once without --models first"):
        leaderboard.measure_and_merge(["beta-vae"], "digits", tmp_path / "empty", 1000, 1000)


def test_on_data_with_factors_the_leaderboard_ranks_by_mig_and_shows_the_five_scores() -> None:
    scores = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
              "dci_informativeness")
    results = {
        "settings": {"command": "vaezoo bench --pretrained --data shapes2d", "iw_samples": 1000, "data": "shapes2d"},
        "models": {
            "entangled": {"status": "ok", "nll": 60.0, **dict.fromkeys(scores, 0.1)},
            "disentangled": {"status": "ok", "nll": 70.0, **dict.fromkeys(scores, 0.4), "mig": 0.35},
            "conditional": {"status": "ok", "nll": 50.0, **dict.fromkeys(scores)},
        },
    }
    table = script("leaderboard").leaderboard_markdown(results)
    header, *rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["disentangled", "entangled", "conditional"]
    assert header.startswith("| model | MIG | BetaVAE | FactorVAE | SAP | DCI disent. | DCI compl. | DCI inform. |")
    assert rows[0].startswith("| disentangled | 0.350 | 0.400 | 0.400 | 0.400 | 0.400 | 0.400 | 0.400 | 70.00 |")
    assert rows[2].startswith("| conditional | n/a | n/a |")


def test_the_matmul_ceiling_replays_exactly_the_matmuls_a_training_step_runs() -> None:
    """The ceiling's shapes, counted as matmul FLOPs (2 m n k, three products per linear layer but the first), equal
    what torch's FlopCounterMode counts for the whole step of the seed's 784-256-10 MLP: nothing left out."""
    import torch

    import vaezoo

    throughput = script("throughput")
    model = vaezoo.create_model("vae-mlp", preset="seed", input_shape=(1, 28, 28))
    batch = torch.rand(128, 1, 28, 28)
    shapes = throughput.linear_shapes(model.train(), batch)
    assert [(fan_in, fan_out) for _, fan_in, fan_out, _ in shapes][0] == (784, 256) and shapes[0][3] is False
    replayed = sum(2 * rows * fan_in * fan_out * (3 if grad else 2) for rows, fan_in, fan_out, grad in shapes)
    assert replayed == throughput.training_step_flops(model, batch)
    assert 0 < throughput.matmul_ceiling_seconds(shapes, repeats=2, rounds=1) < 1


def test_the_time_to_quality_why_splits_the_ratio_into_epochs_and_cost_per_epoch() -> None:
    """21.5 s for 6 epochs against the seed's 34.8 s for 10: the ratio 0.618 is 0.60 epochs x 1.03 cost, and a third
    of the seed's time (11.6 s) buys 3.2 of vaezoo's 3.58 s epochs."""
    import re

    line = script("throughput").epochs_needed_line(21.5 / 6, 34.8 / 10, 6, 10)
    epochs, cost, allowed = map(float, re.search(r"ratio = ([\d.]+) x ([\d.]+)\); the target allows ([\d.]+)", line).groups())
    assert epochs * cost == pytest.approx(21.5 / 34.8, abs=0.01)
    assert allowed * 21.5 / 6 == pytest.approx(34.8 / 3, abs=0.2)
    assert line.startswith("why: 6 vaezoo epochs of 3.58 s against 10 seed epochs of 3.48 s")


def test_the_step_profile_counts_each_matmul_of_a_step_once_and_its_parts_sum_to_the_step(digits_splits, capsys) -> None:
    """Section (4) of throughput.py: per step it finds the matrix multiplies linear_shapes replays (a forward and a
    weight gradient per linear layer, an input gradient where the input needs one), Adam's update, and parts that
    add up to the profiled step's wall time."""
    import torch

    import vaezoo
    from vaezoo.training.trainer import TrainConfig

    throughput = script("throughput")
    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", input_shape=(1, 8, 8), hidden_dims=(32,), latent_dim=4)
    shapes = throughput.linear_shapes(model.train(), digits_splits.train.x[:16])
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, lr_schedule="constant", progress=False, compile=False)
    profile = throughput.step_profile(model, digits_splits, config, steps=12)
    assert profile["steps"] == 11
    assert profile["matmul_calls"] == 2 * len(shapes) + sum(grad for *_, grad in shapes)
    assert profile["parts"]["matrix multiplies"] > 0 and profile["parts"]["optimizer update"] > 0
    assert sum(profile["parts"].values()) == pytest.approx(profile["step_s"])
    assert all(seconds >= 0 for name, seconds in profile["parts"].items() if not name.startswith("outside"))
    throughput.print_step_profile(profile, rows=3)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("## 4.") and printed[-1].startswith(f"{2 * len(shapes) + 3} matrix multiplies per step")
    with pytest.raises(ValueError, match="steps=1 gave 1 optimizer steps"):
        throughput.step_profile(model, digits_splits, config, steps=1)


def test_compile_pays_after_its_cost_over_the_time_it_saves_per_step() -> None:
    verdict = script("compile_default").CompileVerdict("hvae", eager_ms=400.0, compiled_ms=300.0, compile_s=100.0,
                                                       default_steps=8420)
    assert verdict.speedup == 400 / 300 and verdict.break_even_steps == 1000 and verdict.pays
    slower = script("compile_default").CompileVerdict("vq-vae", 16.0, 22.0, 40.0, 440)
    assert slower.break_even_steps == float("inf") and not slower.pays


@pytest.mark.slow
def test_compile_default_times_the_trainers_step_both_ways_on_a_short_run() -> None:
    import torch

    from vaezoo.data import load_data

    torch.set_num_threads(1)
    digits = load_data("digits")
    verdict = script("compile_default").measure_variant("vae-mlp", digits, steps=3)
    assert verdict.eager_ms > 0 and verdict.compiled_ms > 0 and verdict.compile_s > 0  # compiling costs time up front
    assert verdict.default_steps == 20 * (len(digits.train.x) // 128)  # vae-mlp's default run: 20 epochs of batch 128


def test_a_merge_waits_for_the_folders_lock_and_gives_up_in_one_line(tmp_path) -> None:
    """While another run holds the leaderboard folder's lock the merge waits; past its wait it exits in one line."""
    import contextlib
    import threading
    import time

    from vaezoo.io.lock import hold_folder_lock

    leaderboard = script("leaderboard")
    with hold_folder_lock(tmp_path, "merging leaderboard rows into it"), contextlib.ExitStack() as held:
        # flock is per open file: a second open in this process conflicts as another process's would
        with pytest.raises(SystemExit, match=r"^error: .* is in use by another vaezoo process .* merging leaderboard rows"):
            leaderboard._wait_for_lock(held, tmp_path, wait_s=0.0)
    releaser = hold_folder_lock(tmp_path)
    releaser.__enter__()
    threading.Timer(1.5, releaser.__exit__, (None, None, None)).start()
    started = time.monotonic()
    with contextlib.ExitStack() as held:
        leaderboard._wait_for_lock(held, tmp_path, wait_s=30.0)
        assert time.monotonic() - started >= 1.0  # it waited for the release rather than failing


def test_the_spatial_broadcast_decoder_draws_from_z_and_the_pixel_coordinates() -> None:
    import torch

    step_time = script("shapes2d_step_time")
    torch.manual_seed(0)
    decoder = step_time.SpatialBroadcastDecoder(latents=3, channels=4, layers=1, kernel=1)
    z = torch.randn(2, 3)
    logits = decoder(z)
    assert logits.shape == (2, 1, 64, 64)
    assert not torch.allclose(logits[0], logits[1])  # different codes, different images
    # 1x1 convolutions see one pixel at a time: the image varies over the grid only through its x, y channels
    assert not torch.allclose(logits[0, 0, 0, 0], logits[0, 0, 63, 63])
    same_z = decoder(z[:1].expand(2, -1))
    torch.testing.assert_close(same_z[0], same_z[1])


def test_step_time_runs_the_asked_optimiser_steps_and_prints_ratios_to_the_first_row(capsys) -> None:
    import torch

    step_time = script("shapes2d_step_time")
    weight = torch.nn.Parameter(torch.ones(3))
    calls = []

    def loss() -> torch.Tensor:
        calls.append(1)
        return (weight ** 2).sum()

    assert step_time.step_ms([weight], loss, steps=4, warmup=2) > 0
    assert len(calls) == 6 and bool((weight < 1).all())  # every step moved the weight downhill
    step_time.print_table("t", {"a": 2.0, "b": 5.0})
    rows = capsys.readouterr().out.splitlines()[-2:]
    assert rows[0].split()[-2:] == ["2.0", "1.0"] and rows[1].split()[-2:] == ["5.0", "2.5"]


def test_step_time_prints_both_tables_with_every_network(capsys) -> None:
    step_time = script("shapes2d_step_time")
    step_time.main(["--batch-size", "2", "--steps", "1"])
    out = capsys.readouterr().out
    for name in [*step_time.MODELS, *step_time.DECODERS]:
        assert name in out
    assert out.count(" 1.0\n") >= 2  # each table's first row is its own reference


COUNT_FLAGS = [("shapes2d_step_time", "main", "--steps", "0"), ("shapes2d_step_time", "main", "--batch-size", "-1"),
               ("shapes2d_step_time", "main", "--steps", "two"), ("gloo_exit_abort", "main", "--pairs", "0"),
               ("gloo_exit_abort", "main", "--pairs", "-3"), ("gloo_exit_abort", "main", "--pairs", "many"),
               ("streaming", "parse_args", "--rows", "0"), ("streaming", "parse_args", "--rounds", "-2"),
               ("streaming", "parse_args", "--epochs", "1.5"), ("streaming", "parse_args", "--batch-size", "0")]


@pytest.mark.parametrize("name, entry, flag, value", COUNT_FLAGS)
def test_a_count_flag_below_one_is_a_one_line_usage_error(name, entry, flag, value, capsys) -> None:
    """The scripts share benchmarks/common.positive_int: a count below one (or not a whole number) is exit 2 and
    one line naming the flag, the value and the fix, before anything runs."""
    with pytest.raises(SystemExit) as exited:
        getattr(script(name), entry)([flag, value])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in error and value in error and ">= 1" in error


def test_step_time_refuses_to_time_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps=0"):
        script("shapes2d_step_time").step_ms([], lambda: None, steps=0)


def test_streaming_takes_a_whole_count() -> None:
    assert script("streaming").parse_args(["--batch-size", "3"]).batch_size == 3


@pytest.mark.slow
def test_gloo_exit_abort_counts_each_exit_and_vaezoo_ranks_never_abort() -> None:
    """Run as a command: its two-rank pairs are spawned, which needs the script importable as __main__."""
    import subprocess

    result = subprocess.run([sys.executable, str(BENCHMARKS / "gloo_exit_abort.py"), "--pairs", "2"],
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: [int(value) for value in line.split()[1:]] for line in result.stdout.splitlines()[-2:]}
    assert rows["vaezoo"] == [2, 0]  # ended through exit_leaving_process_group: no abort, ever
    assert rows["plain"][0] == 2 and 0 <= rows["plain"][1] <= 2  # a race: some runs abort, most do not


def test_train_zoo_reuses_only_a_run_of_the_tags_recipe_as_it_is_now(tmp_path) -> None:
    """A finished run was reused whatever it had been trained with: change a tag's recipe, forget --retrain,
    and the old weights shipped under a card stating the new recipe."""
    import json

    from vaezoo.training.runs import train_run
    from vaezoo.zoo.pretrained import pretrained_tag

    train_zoo = script("train_zoo")
    recipe = pretrained_tag("vae-mlp.digits").recipe
    run_dir = tmp_path / "vae-mlp.digits"
    train_run("vae-mlp.digits", "digits", run_dir, overrides={**recipe, "seed": 0, "epochs": 1}, progress=False)
    assert train_zoo.recipe_difference(run_dir, "vae-mlp.digits") == f"epochs=1 where the tag now says {recipe['epochs']}"
    recorded = json.loads((run_dir / "config.json").read_text())
    recorded["train"]["epochs"] = recipe["epochs"]
    (run_dir / "config.json").write_text(json.dumps(recorded))
    assert train_zoo.recipe_difference(run_dir, "vae-mlp.digits") is None  # the tag's own run: reused
    for section, key, value, shown in [("config", "latent_dim", 4, "latent_dim=4"), ("train", "seed", 3, "seed=3"),
                                       ("data", "data", "fashion-mnist", 'data="fashion-mnist"')]:
        changed = json.loads(json.dumps(recorded))
        changed[section][key] = value
        (run_dir / "config.json").write_text(json.dumps(changed))
        assert train_zoo.recipe_difference(run_dir, "vae-mlp.digits").startswith(shown + " where the tag now says")
    weights = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match=r"^error: the run in .* was trained with data=\"fashion-mnist\" .*--retrain"):
        train_zoo.build_tag("vae-mlp.digits", tmp_path, iw_samples=0, iw_examples=None, retrain=False)
    assert (run_dir / "model.safetensors").read_bytes() == weights  # refused before touching anything
