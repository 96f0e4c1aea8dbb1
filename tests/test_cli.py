"""The command line: listing, info, and one-line errors with a non-zero exit."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from vaezoo.cli import main


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


def test_unknown_name_is_one_line_and_exit_1() -> None:
    result = subprocess.run([sys.executable, "-m", "vaezoo.cli", "info", "vq-vea"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'vq-vea' (did you mean 'vq-vae'?); run `vaezoo list` to see every name"
    ]
    assert "Traceback" not in result.stderr
