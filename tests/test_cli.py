"""The command line: listing, info and its contract lines, eval's printing, and one-line errors with a non-zero exit."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields

import pytest
from click.testing import CliRunner

from vaezoo.cli import main
from vaezoo.core.contract import Capabilities
from vaezoo_plugins.vq_vae import VQVAE


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_list_shows_the_five_builtins() -> None:
    result = run("list")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == ["beta-vae", "cvae", "hvae", "vae-mlp", "vq-vae"]


def test_list_pretrained_and_pattern() -> None:
    result = run("list", "*.digits", "--pretrained")
    assert result.exit_code == 0 and "vae-mlp.digits" in result.output and ".fmnist" not in result.output


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
        "error: unknown model 'vq-vea' (did you mean 'vq-vae'?); run `vaezoo list` to see every name"
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
