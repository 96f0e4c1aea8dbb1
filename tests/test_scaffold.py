"""`vaezoo new-plugin`: the package it writes is a working, conforming variant, and bad names are refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import vaezoo
from vaezoo.cli import main
from vaezoo.scaffold import class_name_for, new_plugin
from vaezoo.testing import check_model


def test_the_package_holds_a_conforming_variant(tmp_path, monkeypatch) -> None:
    plugin = new_plugin("sparkle-vae", tmp_path / "sparkle")
    assert [str(p.relative_to(plugin.directory)) for p in plugin.files] == [
        "pyproject.toml", "README.md", "sparkle_vae/__init__.py", "sparkle_vae/model.py", "tests/test_sparkle_vae.py",
    ]
    pyproject = (plugin.directory / "pyproject.toml").read_text()
    assert '[project.entry-points."vaezoo.models"]\nsparkle-vae = "sparkle_vae.model:SparkleVAE"' in pyproject
    lint = subprocess.run([sys.executable, "-m", "pyflakes", str(plugin.directory)], capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout
    monkeypatch.syspath_prepend(str(plugin.directory))
    from sparkle_vae import SparkleVAE, SparkleVAEConfig

    assert SparkleVAE.config_class is SparkleVAEConfig and SparkleVAE.__module__ == "sparkle_vae.model"
    report = check_model(SparkleVAE, quick=True)
    assert "save_load" in report.passed and "log_likelihood" in report.passed
    with pytest.raises(vaezoo.ConfigError, match="beta=-1.0 must be >= 0"):
        SparkleVAEConfig(beta=-1.0)


def test_the_cli_lists_what_it_wrote(tmp_path) -> None:
    result = CliRunner().invoke(main, ["new-plugin", "glow", "--dir", str(tmp_path / "glow")])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"created {tmp_path / 'glow'} (GlowVAE in glow/model.py):")
    assert f"next: pip install -e {tmp_path / 'glow'}" in result.stdout
    assert (tmp_path / "glow" / "glow" / "model.py").is_file()


@pytest.mark.parametrize("name, message", [
    ("My_VAE", "plugin name 'My_VAE' is not valid"),
    ("my--vae", "plugin name 'my--vae' is not valid"),
    ("my.vae", "a '.' is not allowed, it separates pretrained tags"),
    ("hvae", "model name 'hvae' is already registered by distribution 'vaezoo'"),
    ("import", "would make the Python package 'import', a keyword"),
    ("json", "a Python module named 'json' is already importable here"),
])
def test_bad_names_are_refused(tmp_path, name: str, message: str) -> None:
    with pytest.raises(vaezoo.ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        new_plugin(name, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_an_existing_folder_must_be_empty(tmp_path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(vaezoo.ConfigError, match="is not empty"):
        new_plugin("fresh-vae", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    new_plugin("fresh-vae", tmp_path / "empty-but-there")  # an empty folder is fine
    assert class_name_for("vq2-vae") == "Vq2VAE" and class_name_for("glow") == "GlowVAE"


@pytest.mark.slow
def test_scaffold_install_list_train_bench_and_its_own_tests(tmp_path) -> None:
    """The whole path of an outside contributor, each step in a fresh process that only sees the installed package."""
    from conftest import pip_install_to

    plugin = new_plugin("shimmer-vae", tmp_path / "shimmer")
    site = pip_install_to(plugin.directory, tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}

    def vaezoo_cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "vaezoo.cli", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        return done

    listed = vaezoo_cli("list").stdout.splitlines()
    assert "shimmer-vae              vaezoo-shimmer-vae" in listed
    vaezoo_cli("train", "shimmer-vae", "--data", "digits", "--epochs", "2", "--quiet", "--out", str(tmp_path / "run"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["val"]["neg_elbo"] < records[0]["val"]["neg_elbo"]
    vaezoo_cli("bench", "shimmer-vae", "--quick", "--epochs", "2", "--iw-samples", "10", "--out", str(tmp_path / "bench"))
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    row = results["models"]["shimmer-vae"]
    assert row["status"] == "ok" and 0 < row["nll"] <= row["neg_elbo"] + 1.0
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin.directory / "tests")],
                           capture_output=True, text=True, env=env, cwd=plugin.directory, timeout=600)
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert "2 passed" in tests.stdout
