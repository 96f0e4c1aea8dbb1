"""The command line: listing, info and its contract lines, eval's printing, and one-line errors with a non-zero exit;
what a user expects of the commands: recorded data, overlap refusals, cards, devices, help texts."""
from __future__ import annotations

import io
import json
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import fields
from pathlib import Path

import click
import numpy as np
import pytest
import tomllib
import torch
from click.testing import CliRunner

import vaezoo
from vaezoo.apps import IMPORTANCE_ROUNDS, IMPUTATION_ITERATIONS, MWG_ITERATIONS
from vaezoo.bench import FULL_DEFAULTS, QUICK_DEFAULTS
from vaezoo.cli import main
from vaezoo.core.contract import Capabilities
from vaezoo.core.distributed import resolve_device
from vaezoo.data import DataSplits, TensorData, load_data
from vaezoo.errors import ConfigError
from vaezoo.eval.evaluate import evaluate
from vaezoo.eval.overlap import check_no_overlap
from vaezoo.training.config import TrainConfig
from vaezoo_plugins.vq_vae import VQVAE


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_list_shows_the_builtins() -> None:
    result = run("list")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names == ["autoencoder-kl", "beta-tcvae", "beta-vae", "cvae", "dip-vae", "factor-vae", "hvae", "iaf-vae", "info-vae", "iwae", "miwae",
                     "vae-mlp", "vamp-vae", "vdvae", "vq-vae", "wae"]


def test_list_pretrained_and_pattern() -> None:
    result = run("list", "*.digits", "--pretrained")
    assert result.exit_code == 0 and "vae-mlp.digits" in result.output and ".fmnist" not in result.output


def test_list_pretrained_keeps_its_columns_aligned_for_long_tag_names() -> None:
    """`vdvae.fmnist-binarized fashion-mnist-binarized` overflowed the fixed 20/14-wide columns."""
    header, *rows = run("list", "vae-mlp.*", "--pretrained").output.splitlines()  # vae-mlp.fmnist-binarized: 24 chars
    assert any("fmnist-binarized" in row for row in rows)
    dataset_column, nll_end = header.index("dataset"), header.index("test NLL") + len("test NLL")
    for row in rows:
        tag, dataset, nll = row.split()[:3]
        assert row.index(dataset, len(tag)) == dataset_column, row
        assert row.index(nll, dataset_column + len(dataset)) + len(nll) == nll_end, row


def test_info_prints_config_and_size() -> None:
    result = run("info", "hvae", "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["parameters"] > 0 and info["distribution"] == "vaezoo" and "latent_dim" in info["config"]


def test_info_shows_the_declared_contract() -> None:
    vq = run("info", "vq-vae")
    assert vq.exit_code == 0, vq.output
    assert "capabilities  conditional=no, log_likelihood=no, temperature=yes, mwg_imputation=no" in vq.output
    for metric, meaning in VQVAE.reported_metrics.items():
        assert any(line.split(None, 1) == [metric, meaning] for line in vq.output.splitlines()), metric
    assert {"perplexity", "code_usage"} <= set(VQVAE.reported_metrics)
    assert "conditional=yes" in run("info", "cvae").output
    info = json.loads(run("info", "vq-vae", "--json").output)
    assert set(info["capabilities"]) == {field.name for field in fields(Capabilities)}
    assert info["reported_metrics"] == VQVAE.reported_metrics
    assert info["log_likelihood"] is False and info["conditional"] is False  # the keys callers read before


def test_eval_prints_named_metrics_on_one_line_and_valid_json() -> None:
    args = ("eval", "hvae.digits", "--data", "digits", "--iw-samples", "0")
    text = run(*args)
    assert text.exit_code == 0, text.output
    lines = dict(line.split(None, 1) for line in text.output.splitlines())
    assert re.fullmatch(r"kl_0=\d+\.\d{4}, kl_1=\d+\.\d{4}, kl_2=\d+\.\d{4}", lines["kl_per_layer"])
    assert re.fullmatch(r"\d+\.\d{4}", lines["neg_elbo"]) and lines["examples"] == "180"
    metrics = json.loads(run(*args, "--json").output)
    assert set(metrics["kl_per_layer"]) == {"kl_0", "kl_1", "kl_2"}
    assert abs(sum(metrics["kl_per_layer"].values()) - metrics["kl"]) < 1e-3


def test_unknown_name_is_one_line_and_exit_1() -> None:
    result = subprocess.run([sys.executable, "-m", "vaezoo.cli", "info", "vq-vea"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'vq-vea' (did you mean 'vq-vae', 'vamp-vae', 'vdvae'?); run `vaezoo list` to see every name"
    ]
    assert "Traceback" not in result.stderr


def vaezoo_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaezoo.cli", *args], capture_output=True, text=True, timeout=600)


def test_train_then_eval_from_the_command_line(tmp_path) -> None:
    run = tmp_path / "run"
    trained = vaezoo_cli("train", "cvae", "--data", "digits", "--epochs", "3", "--lr", "3e-3", "--quiet",
                         "--set", "latent_dim=4", "--set", "hidden_dims=[64]",
                         "--set", "grad_clip=5.0", "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.startswith(f"done: {run} (val neg_elbo ")
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "cvae" and config["config"]["num_classes"] == 10
    assert config["config"]["input_shape"] == [1, 8, 8] and config["train"]["grad_clip"] == 5.0
    evaluated = vaezoo_cli("eval", str(run), "--data", "digits", "--iw-samples", "50", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert {"neg_elbo", "recon", "kl", "nll", "samples_per_s"} <= set(metrics)
    assert metrics["nll"] <= metrics["neg_elbo"] + 0.5 and metrics["examples"] == 180


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:
    cases = [
        (("train", "vae-mlp", "--data", "digits", "--set", "latent_dim=ten", "--out", str(tmp_path / "a")),
         "error: latent_dim='ten' has the wrong type; expected an integer"),
        (("train", "vae-mlp", "--data", "digits", "--set", "hidden_dims", "--out", str(tmp_path / "b")),
         "error: --set 'hidden_dims' is not of the form key=value"),
        (("train", "beta-vae", "--data", "digits", "--set", "beta=-2", "--out", str(tmp_path / "c")),
         "error: beta=-2.0 must be >= 0"),
        (("eval", str(tmp_path / "missing"), "--data", "digits"),
         f"error: model source '{tmp_path / 'missing'}' is not a model directory, an hf-hub:ORG/NAME id or a registry tag"),
        (("eval", "vae-mlp.fmnst", "--data", "fashion-mnist"),
         "error: unknown pretrained tag 'vae-mlp.fmnst' (did you mean 'vae-mlp.fmnist'"),
        (("eval", "vae-mlp.digits", "--data", "fashion-mnist"),
         "error: 'fashion-mnist' has examples of shape (1, 28, 28) but the model takes (1, 8, 8)"),
    ]
    for args, message in cases:
        result = vaezoo_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (args, lines)
        assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_compiled_training_matches_eager_quality(tmp_path) -> None:
    eager = vaezoo_cli("train", "vae-mlp", "--data", "digits", "--epochs", "2", "--quiet", "--out", str(tmp_path / "e"))
    compiled = vaezoo_cli("train", "vae-mlp", "--data", "digits", "--epochs", "2", "--quiet", "--compile",
                          "--out", str(tmp_path / "c"))
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    last = [json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])["val"]["neg_elbo"]
            for name in ("e", "c")]
    assert abs(last[0] - last[1]) < 0.05 * last[0]


# --- Ctrl-C: one line and exit code 130 at any moment, the imports included ----------------------------
def console_script() -> tuple[str, str]:
    """(module, function) of the `vaezoo` command, as pyproject.toml declares it to pip."""
    target = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]["vaezoo"]
    module, _, function = target.partition(":")
    return module, function


def console_script_child() -> str:
    """What pip's `vaezoo` script runs, plus an audit hook that prints "ready" when vaezoo's import begins."""
    module, function = console_script()
    return textwrap.dedent(f"""
        import os, sys
        def ready(event, args):
            if event == "import" and args[0] == "vaezoo":
                os.write(1, b"ready\\n")
        sys.addaudithook(ready)
        sys.argv[0] = "vaezoo"
        from {module} import {function}
        sys.exit({function}())
    """)


def test_the_console_script_starts_without_importing_torch() -> None:
    code = f"import sys; import {console_script()[0]}; print(sorted(m for m in ('torch', 'vaezoo', 'click') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("delay", [0.0, 0.4, *(pytest.param(d, marks=pytest.mark.slow) for d in (0.02, 0.1, 0.8, 1.5))])
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_the_command_line_imports_is_one_line_and_exit_130(tmp_path, delay: float, presses: int) -> None:
    """A Ctrl-C (or two) while torch imports printed a KeyboardInterrupt traceback and died of the signal."""
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", console_script_child(), "train", "vae-mlp", "--data", "digits",
                              "--epochs", "1", "--quiet", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline() == "ready\n"  # the interpreter is up and about to import vaezoo
    time.sleep(delay)
    for _ in range(presses):
        child.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), lines
    if lines[0] == "error: interrupted before training started; nothing was written":
        assert not out.exists()


def test_ctrl_c_inside_a_command_is_one_line_and_exit_130(monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vaezoo.cli.models.list_models", interrupted)
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 130 and result.stderr.strip().splitlines() == ["error: interrupted"]


# --- what a user expects of the commands -------------------------------------------------------------
def one_error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], lines
    return lines[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A one-epoch vae-mlp run on digits with split seed 3 and two model overrides."""
    folder = tmp_path_factory.mktemp("small") / "run"
    result = run("train", "vae-mlp", "--data", "digits", "--epochs", "1", "--quiet", "--split-seed", "3", "--lr", "3e-3",
                 "--set", "latent_dim=2", "--set", "hidden_dims=[16]", "--out", str(folder))
    assert result.exit_code == 0, result.output
    return folder


def test_eval_without_data_uses_what_the_run_recorded(small_run: Path) -> None:
    metrics = json.loads(run("eval", str(small_run), "--iw-samples", "0", "--json").stdout)
    assert (metrics["data"], metrics["split"], metrics["split_seed"], metrics["examples"]) == ("digits", "test", 3, 180)
    explicit = json.loads(run("eval", str(small_run), "--data", "digits", "--split-seed", "3", "--iw-samples", "0",
                              "--json").stdout)
    assert explicit["neg_elbo"] == metrics["neg_elbo"]
    tag = json.loads(run("eval", "vae-mlp.digits", "--iw-samples", "0", "--json").stdout)  # a tag records its dataset
    assert (tag["data"], tag["split_seed"], tag["examples"]) == ("digits", 0, 180)


def test_eval_refuses_a_split_that_holds_training_rows(small_run: Path) -> None:
    train_split = run("eval", str(small_run), "--split", "train", "--iw-samples", "0")
    assert train_split.exit_code == 1
    assert one_error_line(train_split).startswith(f"error: the train split of digits is what {small_run} was trained on")
    reshuffled = run("eval", str(small_run), "--split-seed", "0", "--iw-samples", "0")
    message = one_error_line(reshuffled)
    assert re.match(r"error: --split-seed 0 reshuffles digits: \d+ of the 180 rows of its test split were in the train "
                    rf"split of {re.escape(str(small_run))} \(trained with split seed 3\); evaluate with --split-seed 3",
                    message), message
    assert one_error_line(run("eval", "vae-mlp.digits", "--split", "train")).startswith(
        "error: the train split of digits is what vae-mlp.digits was trained on")
    allowed = run("eval", str(small_run), "--split", "train", "--allow-overlap", "--iw-samples", "0", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["examples"] == 1437


def test_a_split_every_seed_draws_alike_is_no_overlap_and_a_rescaled_reshuffle_is(tmp_path) -> None:
    rows = TensorData(torch.arange(160, dtype=torch.float32).reshape(40, 4) / 160)

    def splits(train: list[int], val: list[int]) -> DataSplits:
        return DataSplits(rows[torch.tensor(train)], rows[torch.tensor(val)], rows[35:], "toy", (4,), 0, None, "toy")
    trained = splits(list(range(30)), list(range(30, 35)))
    other = splits(list(range(25)) + list(range(30, 35)), list(range(25, 30)))  # a fixed test set, val reshuffled
    recorded = {"data": "toy", "split_seed": 0}
    check_no_overlap("m", "toy", "test", 1, recorded, other, lambda: trained)
    with pytest.raises(ConfigError, match=r"5 of the 5 rows of its val split were in the train split of m"):
        check_no_overlap("m", "toy", "val", 1, recorded, other, lambda: trained)
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).uniform(0, 255, (60, 3)))  # min-max scaled per split
    scaled = {seed: load_data(str(tmp_path / "wide.npy"), seed=seed) for seed in (0, 1)}
    with pytest.raises(ConfigError, match=r"its test split is drawn \(and scaled\) otherwise"):
        check_no_overlap("m", "wide", "test", 1, {"data": "wide", "split_seed": 0}, scaled[1], lambda: scaled[0])


def test_the_card_loads_the_run_and_its_command_repeats_it(small_run: Path, tmp_path: Path) -> None:
    card = (small_run / "README.md").read_text()
    assert f'model = vaezoo.from_pretrained("{small_run}")' in card
    assert f"vaezoo sample {small_run} --n 16 -o samples.png" in card and f"vaezoo eval {small_run}\n" in card
    command = next(line for line in card.splitlines() if line.startswith("vaezoo train "))
    assert "--set latent_dim=2" in command and "--set 'hidden_dims=[16]'" in command and "--split-seed 3" in command
    args = shlex.split(command)[1:]
    args[args.index("--out") + 1] = str(tmp_path / "again")
    assert run(*args, "--quiet").exit_code == 0
    first, again = (json.loads((folder / "config.json").read_text()) for folder in (small_run, tmp_path / "again"))
    assert first["config"] == again["config"] and first["data"] == again["data"]
    assert first["train"] == again["train"]  # both trained with --quiet


def test_info_takes_a_run_folder_like_the_other_commands(small_run: Path) -> None:
    text = run("info", str(small_run))
    assert text.exit_code == 0, text.output
    assert f"  folder        {small_run}" in text.stdout and "  trained on    digits (split seed 3)" in text.stdout
    assert "latent_dim               2" in text.stdout and f'vaezoo.from_pretrained("{small_run}")' in text.stdout
    info = json.loads(run("info", str(small_run), "--json").stdout)
    assert info["config"]["hidden_dims"] == [16] and info["data"]["split_seed"] == 3 and info["train"]["epochs"] == 1
    assert info["parameters"] == vaezoo.from_pretrained(str(small_run)).num_parameters()
    assert json.loads(run("info", "vae-mlp.digits", "--json").stdout)["data"]["data"] == "digits"


def test_devices_take_cuda_n_and_mps_and_an_absent_one_names_those_there_are(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"^device 'cuda:2' is not available here; this machine has cpu, cuda:0, cuda:1"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match=r"device 'mps' is not available here"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps") and TrainConfig(device="mps").device == "mps"
    with pytest.raises(ConfigError, match=r"device='cuda:x' is unknown; use auto, cpu, cuda, cuda:N or mps"):
        TrainConfig(device="cuda:x")
    bad = run("eval", "vae-mlp.digits", "--device", "tpu")
    assert bad.exit_code == 2 and "Invalid value for '--device': 'tpu' is unknown" in one_error_line(bad)


APP_ARGS = {"sample": [], "reconstruct": ["--data", "digits"], "interpolate": ["--data", "digits", "--from", "0", "--to", "1"],
            "anomaly": ["--data", "digits"], "impute": ["--input", "x.npy"], "transfer": ["--data", "digits", "--to-label", "1"],
            "explore": ["--data", "digits"], "augment": ["--n", "2"]}


def formats(text: str) -> set[str]:
    return set(re.findall(r"\.(png|npy|npz|csv|json|txt|jpg)\b", text))


@pytest.mark.parametrize("command", sorted(APP_ARGS))
def test_output_help_lists_exactly_the_formats_the_command_writes(command: str, tmp_path: Path) -> None:
    out = next(p for p in main.commands[command].params if p.name == "out")
    written = set()
    for extra in ([], ["--traverse"]) if command == "explore" else ([],):
        refused = run(command, "vae-mlp.digits", *APP_ARGS[command], *extra, "-o", str(tmp_path / "x.bogus"))
        written |= formats(one_error_line(refused).split(" writes ")[1].split("(e.g.")[0])
    assert formats(out.help) == written, out.help


def test_every_default_a_help_text_states_is_the_real_one() -> None:
    stated = {  # options whose default depends on other options or on the variant, so the help says it in words
        ("train", "epochs"): {TrainConfig.epochs}, ("train", "batch_size"): {TrainConfig.batch_size},
        ("train", "lr"): {TrainConfig.lr}, ("train", "seed"): {TrainConfig.seed},
        ("bench", "epochs"): {FULL_DEFAULTS["epochs"], QUICK_DEFAULTS["epochs"]},
        ("bench", "iw_samples"): {FULL_DEFAULTS["iw_samples"], QUICK_DEFAULTS["iw_samples"], 0},
        ("impute", "iterations"): {IMPORTANCE_ROUNDS, IMPUTATION_ITERATIONS, MWG_ITERATIONS},
    }
    for command in main.commands.values():
        for option in (p for p in command.params if isinstance(p, click.Option)):
            where, text = f"vaezoo {command.name} {option.opts[0]}", option.help or ""
            if command.name == "train" and option.name in ("epochs", "batch_size", "lr"):
                assert "variant" in text, f"{where}: a variant's train_defaults can change it; the help must say so"
            if (command.name, option.name) in stated:
                numbers = {float(n) for n in re.findall(r"(?<![\w.-])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w])", text)}
                assert numbers == {float(v) for v in stated[command.name, option.name]}, (where, text)
                continue
            assert not re.search(r"default:? \d", text), f"{where} states a default of its own: {text}"
            if isinstance(option.default, (int, float, str)) and not option.is_flag and not option.multiple:
                assert option.show_default, f"{where} has the default {option.default!r} but does not show it"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eval_draws_progress_on_a_terminal_and_nothing_when_quiet(monkeypatch) -> None:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,))
    for progress in (True, False):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        evaluate(model, torch.rand(64, 16), iw_samples=10, batch_size=16, progress=progress)
        drawn = terminal.getvalue()
        if progress:
            assert "-ELBO:" in drawn and "NLL (10 importance samples):" in drawn and "/8 [" in drawn, drawn
        else:
            assert drawn == ""


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly() -> None:
    """`vaezoo list --pretrained | head -1` ended in "internal error: BrokenPipeError"."""
    child = subprocess.Popen([sys.executable, "-m", "vaezoo.cli", "list", "--pretrained"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # the reader is gone before the first line
    assert child.wait(timeout=120) == 141 and child.stderr.read() == ""


def test_train_takes_a_label_column_of_text_labels_and_the_run_remembers_it(tmp_path) -> None:
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "eel"]
    rows = [f"{a:.3f},{b:.3f},{names[k]}" for a, b, k in zip(rng.random(90), rng.random(90), rng.integers(0, 3, 90))]
    (tmp_path / "pets.csv").write_text("a,b,kind\n" + "\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    result = run("train", "cvae", "--data", str(tmp_path / "pets.csv"), "--label-column", "kind", "--epochs", "1",
                 "--quiet", "--set", "hidden_dims=[16]", "--out", str(run_dir))
    assert result.exit_code == 0, result.stderr
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["data"]["label_column"] == "kind" and recorded["data"]["class_names"] == names
    assert recorded["config"]["num_classes"] == 3
    assert "--label-column kind" in (run_dir / "README.md").read_text()
    result = run("eval", str(run_dir), "--iw-samples", "2", "--json")  # the recorded data, labels read as in training
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.output)["examples"] > 0
    result = run("train", "cvae", "--data", str(tmp_path / "pets.csv"), "--label-column", "other", "--epochs", "1",
                 "--quiet", "--resume", "--out", str(run_dir))
    assert result.exit_code == 1 and "resume it with the same label column" in result.stderr


def test_a_runs_command_repeats_its_compile_choice_and_the_cli_takes_it() -> None:
    """compile defaults to None (where measured to pay); a run that chose True or False repeats it explicitly."""
    from vaezoo.training.command import run_command
    from vaezoo.training.config import TrainConfig

    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    fitted = {"input_shape": (1, 8, 8), "num_classes": 10}
    commands = {choice: run_command(model, {"data": "digits"}, Path("runs/d"), TrainConfig(compile=choice), fitted)
                for choice in (None, True, False)}
    assert "compile" not in commands[None]
    assert " --compile " in commands[True] and " --no-compile " in commands[False]
    assert "--no-compile" in run("train", "--help").stdout and "compile_default.py" in run("train", "--help").stdout
