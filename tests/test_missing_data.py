"""benchmarks/missing_data.py: the mask, the baselines, the figures it prints and writes, and miwae against the
mean fill at a short budget. The figures are recomputed here from the imputations, independently of the script.

    OMP_NUM_THREADS=1 python -m pytest tests/test_missing_data.py -q
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import vaezoo
from vaezoo.data import load_data

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "missing_data.py"
SHORT_EPOCHS = 20  # enough for miwae to pull clear of the mean fill (measured: 0.79 of its MSE at seed 0)


def load_script() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its sibling common.py
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_missing_data", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


md = load_script()


@pytest.fixture(scope="module")
def complete():
    return load_data("digits")


def table_rows(output: str) -> dict[str, list[str]]:
    """The printed table's rows: method label -> [training rows, MSE, ratio] as printed."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "method":
            rows[cells[0]] = cells[1:]
    return rows


# --- the mask --------------------------------------------------------------------------------------------
def test_the_digits_come_scaled_to_the_unit_interval(complete) -> None:
    for part in (complete.train, complete.val, complete.test):
        assert float(part.x.min()) == 0.0 and float(part.x.max()) == 1.0 and not part.x.isnan().any()


@pytest.mark.parametrize("rate", [0.5, 0.2, 0.01])
def test_the_mask_hides_the_asked_share_of_every_split_at_random(complete, rate: float) -> None:
    holed = md.with_missing_values(complete, rate, seed=0)
    for name in ("train", "val", "test"):
        x, original = getattr(holed, name).x, getattr(complete, name).x
        hidden = torch.isnan(x)
        assert int(hidden.sum()) == math.floor(rate * x.numel())  # the share asked, to one value
        assert torch.equal(x[~hidden], original[~hidden])  # the rest untouched
        assert torch.equal(getattr(holed, name).y, getattr(complete, name).y)
    # completely at random: no feature is spared or singled out (1437 rows: a share's sd is at most 0.013)
    per_feature = torch.isnan(holed.train.x).flatten(1).float().mean(0)
    assert float((per_feature - rate).abs().max()) < 0.06, per_feature


def test_the_same_seed_hides_the_same_values_and_another_seed_others(complete) -> None:
    masks = [[torch.isnan(getattr(md.with_missing_values(complete, 0.5, seed), name).x) for name in ("train", "val", "test")]
             for seed in (0, 0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(masks[0], masks[1]))
    assert not any(torch.equal(a, b) for a, b in zip(masks[0], masks[2]))
    # one generator runs through the splits in turn: val's mask is not train's first values again
    assert not torch.equal(masks[0][1].flatten()[:1000], masks[0][0].flatten()[:1000])


# --- the baselines ---------------------------------------------------------------------------------------
def test_the_mean_fill_and_its_mse_are_a_hand_computation(complete) -> None:
    holed = md.with_missing_values(complete, 0.5, seed=3)
    train = holed.train.x.numpy().reshape(len(holed.train), -1).astype(np.float64)
    means = np.nanmean(train, axis=0)  # each feature's mean over its observed training values
    test = holed.test.x.numpy().reshape(len(holed.test), -1)
    truth = complete.test.x.numpy().reshape(len(holed.test), -1).astype(np.float64)
    hidden = np.isnan(test)
    expected = float(np.mean((np.broadcast_to(means, test.shape) - truth)[hidden] ** 2))
    script_means = md.observed_means(holed.train.x)
    np.testing.assert_allclose(script_means.numpy().reshape(-1), means, rtol=1e-6)
    filled = md.mean_filled(holed.test.x, script_means)
    assert md.hidden_mse(filled, complete.test.x, torch.isnan(holed.test.x)) == pytest.approx(expected, rel=1e-6)
    assert torch.equal(filled[~torch.isnan(holed.test.x)], complete.test.x[~torch.isnan(holed.test.x)])


def test_hidden_mse_averages_over_the_hidden_values_only() -> None:
    imputed, truth = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    assert md.hidden_mse(imputed, truth, torch.tensor([[True, False], [False, True]])) == (1 + 16) / 2


def test_at_half_missing_no_row_is_complete_and_vae_mlp_gets_the_mean_filled_rows(complete) -> None:
    holed = md.with_missing_values(complete, 0.5, seed=0)
    means = md.observed_means(holed.train.x)
    splits, label, count = md.baseline_splits(holed, means)
    assert count == 0 and label == "mean-filled rows"
    assert len(splits.train) == len(holed.train) and not any(torch.isnan(getattr(splits, n).x).any()
                                                              for n in ("train", "val", "test"))
    hidden = torch.isnan(holed.train.x)
    assert torch.equal(splits.train.x[hidden], means.expand_as(holed.train.x)[hidden])
    assert torch.equal(splits.train.x[~hidden], complete.train.x[~hidden])


def test_at_a_small_rate_vae_mlp_gets_exactly_the_complete_rows(complete) -> None:
    holed = md.with_missing_values(complete, 0.01, seed=0)
    rows = ~np.isnan(holed.train.x.numpy()).reshape(len(holed.train), -1).any(axis=1)
    splits, label, count = md.baseline_splits(holed, md.observed_means(holed.train.x))
    assert label == "complete-case rows" and count == int(rows.sum()) > 0
    assert torch.equal(splits.train.x, complete.train.x[torch.from_numpy(rows)])
    assert torch.equal(splits.train.y, complete.train.y[torch.from_numpy(rows)])


def test_both_models_start_from_the_same_weights_with_the_same_seed() -> None:
    states = []
    for name in md.MODEL_NAMES:
        torch.manual_seed(0)
        model = vaezoo.create_model(name, input_shape=(1, 8, 8), hidden_dims=md.HIDDEN_DIMS, latent_dim=md.LATENT_DIM)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_one_imputation_method_for_all_the_models() -> None:
    def tiny(name: str) -> vaezoo.VAE:
        return vaezoo.create_model(name, preset="tiny", input_shape=(1, 8, 8))

    assert md.imputation_method([tiny("miwae"), tiny("vae-mlp")]) == "importance"
    assert md.imputation_method([tiny("miwae"), tiny("wae")]) == "iterate"  # wae has no importance weights


# --- the script end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[object, str, dict]:
    """main() at 50% missing and a short budget: (the result run() returned, what it printed, the JSON it wrote)."""
    returned = []
    real_run = md.run

    def keep(*args, **kwargs):
        returned.append(real_run(*args, **kwargs))
        return returned[-1]

    path = tmp_path_factory.mktemp("missing") / "figures.json"
    md.run = keep
    try:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            status = md.main(["--epochs", str(SHORT_EPOCHS), "--json", str(path)])
    finally:
        md.run = real_run
    assert status == 0
    return returned[0], printed.getvalue(), json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_printed_and_written_mses_are_those_of_the_returned_imputations(short_run, complete) -> None:
    result, printed, written = short_run
    truth = complete.test.x.numpy().astype(np.float64)
    hidden = np.isnan(md.with_missing_values(complete, 0.5, seed=0).test.x.numpy())
    assert np.array_equal(result.hidden.numpy(), hidden)
    rows = table_rows(printed)
    labels = {"miwae": "miwae", "vae-mlp": "vae-mlp (mean-filled rows)", "mean fill": "mean fill"}
    recomputed = {}
    for name, label in labels.items():
        imputed = result.imputed[name].numpy().astype(np.float64)
        assert not np.isnan(imputed).any() and np.array_equal(imputed[~hidden], truth[~hidden])
        recomputed[name] = float(np.mean((imputed - truth)[hidden] ** 2))
    for name, label in labels.items():
        ratio = recomputed[name] / recomputed["mean fill"]
        assert rows[label][1:] == [f"{recomputed[name]:.4f}", f"{ratio:.3f}"], (label, rows[label])
        figures = written["methods"][name]
        assert figures["mse"] == pytest.approx(recomputed[name], rel=1e-9, abs=1e-12)
        assert figures["ratio_to_mean_fill"] == pytest.approx(ratio, rel=1e-9)
        assert figures["training_rows"] == int(rows[label][0]) == result.training_rows[name]
    assert written["hidden_test_values"] == int(hidden.sum())
    assert written["settings"]["epochs"] == SHORT_EPOCHS and written["settings"]["imputation_method"] == "importance"


@pytest.mark.slow
def test_at_half_missing_the_script_says_there_are_no_complete_rows_and_labels_the_fallback(short_run) -> None:
    _, printed, written = short_run
    assert written["complete_train_rows"] == 0 and written["baseline"] == "mean-filled rows"
    assert "complete-case training rows (no value missing): 0 of 1437" in printed
    assert "none, so vae-mlp trains on every training row with its missing values mean-filled" in printed
    assert table_rows(printed)["vae-mlp (mean-filled rows)"][0] == "1437"
    assert "vaezoo.apps.impute(method='importance') for both" in printed
    for line in ("command:", "commit:", "machine:", "versions:"):
        assert line in printed


@pytest.mark.slow
def test_at_a_short_budget_miwae_imputes_better_than_the_mean_fill(short_run) -> None:
    result, _, _ = short_run
    assert result.mse["miwae"] < 0.9 * result.mse["mean fill"], result.mse


@pytest.mark.slow
def test_at_a_small_rate_the_complete_rows_train_vae_mlp(monkeypatch) -> None:
    seen = {}
    real_trained = md.trained

    def spy(name, splits, *args, **kwargs):
        seen[name] = splits.train.x
        return real_trained(name, splits, *args, **kwargs)

    monkeypatch.setattr(md, "trained", spy)
    result = md.run(missing_rate=0.01, epochs=1, seed=0)
    holed = md.with_missing_values(load_data("digits"), 0.01, seed=0)
    rows = ~torch.isnan(holed.train.x).flatten(1).any(1)
    assert result.baseline == "complete-case rows" and result.complete_train_rows == int(rows.sum()) > 0
    assert result.training_rows["vae-mlp"] == int(rows.sum())
    assert torch.equal(seen["vae-mlp"], holed.train.x[rows])
    assert torch.equal(seen["miwae"].isnan(), holed.train.x.isnan())  # miwae gets every row, NaN and all
    assert f"vae-mlp trains on those {int(rows.sum())} complete rows only" in md.report(result)
    assert "| vae-mlp (complete-case rows) |" in md.report(result)


# --- bad arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, named", [
    (["--missing-rate", "1.5"], "--missing-rate 1.5"),
    (["--missing-rate", "0"], "--missing-rate 0.0"),
    (["--missing-rate", "nan"], "--missing-rate nan"),
    (["--epochs", "0"], "--epochs 0"),
    (["--epochs", "two"], "'two'"),
    (["--json", "/no/such/folder/x.json"], "/no/such/folder"),
])
def test_a_bad_argument_is_one_line_and_exit_status_2(argv: list[str], named: str, capsys) -> None:
    try:
        status = md.main(argv)
    except SystemExit as stop:  # argparse's own checks (a value that is not a number)
        status = stop.code
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""  # refused before the header and before any training
    message = captured.err.strip()
    assert message.startswith("error: ") and "\n" not in message and named in message, message


@pytest.mark.slow  # a fresh interpreter importing torch: about 10 s on a busy 2-core machine
def test_the_script_itself_exits_2_without_a_traceback() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "-3"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "--epochs -3" in done.stderr and "Traceback" not in done.stderr
