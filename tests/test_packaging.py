"""`pip install .` (not editable) ships the framework, the data layer, the plugins and their weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pip_install_to

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_regular_install_lists_and_builds_every_builtin(tmp_path) -> None:
    target = pip_install_to(REPO, tmp_path / "site")
    code = (
        "import vaezoo, vaezoo.data, vaezoo_plugins.hvae as h; "
        "print(vaezoo.__file__); print(h.__file__); print(' '.join(vaezoo.list_models())); "
        "[vaezoo.create_model(n, preset='tiny', input_shape=(1, 8, 8), num_classes=10) for n in vaezoo.list_models()]; "
        "print(vaezoo.data.load_data('digits').train.x.shape[0]); "
        "m = vaezoo.create_model('hvae.digits', pretrained=True); "
        "from vaezoo.eval.classifier import has_classifier; print(has_classifier('digits')); "
        "from vaezoo.scaffold import TEMPLATE_DIR; print(len(list(TEMPLATE_DIR.glob('*.tmpl'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    module_file, plugin_file, names, train_rows, classifier, templates = out.stdout.split("\n")[:6]
    assert module_file.startswith(str(target)) and plugin_file.startswith(str(target))
    assert names.split() == ["autoencoder-kl", "beta-tcvae", "beta-vae", "cvae", "dip-vae", "factor-vae", "hvae", "iaf-vae", "info-vae", "iwae",
                             "miwae", "vae-mlp", "vamp-vae", "vdvae", "vq-vae", "wae"]
    assert int(train_rows) > 1000
    assert classifier == "True"  # package data: the zoo's weights loaded above, and the bench classifiers
    assert templates == "5"  # and `vaezoo new-plugin`'s templates
