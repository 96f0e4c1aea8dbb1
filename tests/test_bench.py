"""The benchmark: the math of its metrics, and one quick end-to-end run on digits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vaezoo
from vaezoo.bench import (
    METRIC_KEYS,
    active_units,
    bottom_half_mask,
    feature_frechet_distance,
    frechet_distance,
    impute,
    run_benchmark,
)


def test_active_units_counts_dims_whose_mean_varies_above_threshold():
    generator = torch.Generator().manual_seed(0)
    stds = torch.tensor([1.0, 0.5, 0.2, 0.05, 0.0, 0.001])  # variances 1, .25, .04, .0025, 0, 1e-6
    means = torch.randn(20_000, 6, generator=generator) * stds + 3.0
    assert active_units(means) == 3
    assert active_units(means, threshold=0.001) == 4


def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + np.eye(5)
    assert frechet_distance(np.ones(5), cov, np.ones(5), cov) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0])
def test_frechet_distance_matches_closed_form_for_diagonal_gaussians(shift):
    var_a, var_b = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 4.0])
    mean_a, mean_b = np.zeros(3), np.full(3, shift)
    closed_form = ((mean_a - mean_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b)) == pytest.approx(closed_form, rel=1e-9)


def test_feature_frechet_distance_grows_with_a_mean_shift():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4000, 4, generator=generator)
    same = feature_frechet_distance(features, features)
    shifted = [feature_frechet_distance(features, features + d) for d in (0.5, 1.0, 2.0)]
    assert same == pytest.approx(0.0, abs=1e-8)
    assert shifted == pytest.approx([4 * d**2 for d in (0.5, 1.0, 2.0)], rel=1e-6)  # |shift|^2 in 4 dims


def test_imputation_keeps_observed_pixels_exactly():
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    x = torch.rand(16, 1, 8, 8)
    hidden = bottom_half_mask((1, 8, 8))
    imputed = impute(model, x, hidden, torch.full((1, 1, 8, 8), 0.5), iterations=3)
    observed = ~hidden.expand_as(x)
    assert torch.equal(imputed[observed], x[observed])
    assert not torch.equal(imputed[~observed], x[~observed])
    assert hidden.sum() == 32 and hidden[0, 0, 4:].all() and not hidden[0, 0, :4].any()


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(vaezoo.UnknownModelError, match="did you mean"):
        run_benchmark(["vae-mpl"], "digits", epochs=1, out_dir=str(tmp_path))
    with pytest.raises(vaezoo.ConfigError, match="choose one budget"):
        run_benchmark(["vae-mlp"], "digits", epochs=1, minutes=1.0, out_dir=str(tmp_path))
    with pytest.raises(vaezoo.ConfigError, match="latent_dim"):
        run_benchmark(["vae-mlp"], "digits", epochs=1, out_dir=str(tmp_path), overrides={"latnt_dim": 3})


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_benchmark_on_digits(tmp_path, one_thread):
    # A small prior and encoder keep vq-vae fast (vae-mlp's MLP ignores conv_channels).
    results = run_benchmark(["vae-mlp", "vq-vae"], "digits", epochs=15, out_dir=str(tmp_path), iw_samples=20,
                            overrides={"prior_dim": 32, "prior_layers": 1, "conv_channels": [32]})
    for name in ("results.json", "results.md", "summary.png"):
        assert (tmp_path / name).is_file()
    for model in ("vae-mlp", "vq-vae"):
        for figure in ("samples.png", "reconstructions.png", "latents_pca.png", "loss_curve.png"):
            assert (tmp_path / model / figure).is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["models"] == results["models"]
    models = saved["models"]
    n_a = {
        "vae-mlp": {"kl_per_layer", "perplexity", "code_usage", "conditional_sample_accuracy"},
        "vq-vae": {"nll", "nll_examples", "active_units", "latent_dims", "kl_per_layer", "conditional_sample_accuracy"},
    }
    for name, record in models.items():
        assert record["status"] == "ok"
        assert set(METRIC_KEYS) <= set(record)
        assert {key for key in METRIC_KEYS if record[key] is None} == n_a[name], name
        assert 0.0 <= record["anomaly_auroc"] <= 1.0
        assert record["probe_accuracy"] > 0.5  # chance is 0.1
        assert record["frechet_distance"] >= 0
        assert record["imputation_mse_mean_fill"] > 0
    mlp, vq = models["vae-mlp"], models["vq-vae"]
    assert mlp["imputation_mse"] < mlp["imputation_mse_mean_fill"]
    assert 0 < mlp["active_units"] <= mlp["latent_dims"] == 8
    assert mlp["nll"] <= mlp["neg_elbo"] + 1.0  # the IWAE bound is tighter than the ELBO (up to noise)
    assert 1.0 <= vq["perplexity"] and 0.0 < vq["code_usage"] <= 1.0
    assert "n/a" in (tmp_path / "results.md").read_text()


def test_pretrained_benchmark_measures_the_shipped_tags(tmp_path, one_thread):
    results = run_benchmark(["cvae", "vae-mlp"], "digits", pretrained=True, out_dir=str(tmp_path), iw_samples=50,
                            iw_examples=40)
    cvae, mlp = results["models"]["cvae"], results["models"]["vae-mlp"]
    assert mlp["nll_examples"] == cvae["nll_examples"] == 40
    assert mlp["epochs"] is None and mlp["train_samples_per_s"] is None  # loaded, not trained
    card = vaezoo.model_info("vae-mlp.digits")["pretrained"]["test_metrics"]  # measured by the same seeded code
    assert mlp["neg_elbo"] == pytest.approx(card["neg_elbo"], rel=1e-3)
    assert cvae["conditional_sample_accuracy"] > 0.9  # samples of each asked digit are read as that digit
    assert mlp["anomaly_auroc"] is None and "held-out class" in results["notes"]["vae-mlp"]["anomaly_auroc"]
    assert "--pretrained" in results["settings"]["command"] and "--iw-examples 40" in results["settings"]["command"]


def test_iw_examples_must_be_positive(tmp_path):
    with pytest.raises(vaezoo.ConfigError, match="iw_examples=0"):
        run_benchmark(["vae-mlp"], "digits", pretrained=True, out_dir=str(tmp_path), iw_examples=0)


@pytest.mark.parametrize("hidden", [0, 16])
def test_classifier_round_trips_through_safetensors(tmp_path, hidden):
    from vaezoo.eval.classifier import SmallCNN, load_classifier, save_classifier

    model = SmallCNN((1, 8, 8), 10, channels=(4, 8), hidden=hidden).eval()
    save_classifier(model, "toy", {"test_accuracy": 0.5}, directory=tmp_path)
    if not hidden:  # files written before the dense feature layer have no "hidden" key and still load
        config = json.loads((tmp_path / "toy.json").read_text())
        del config["hidden"]
        (tmp_path / "toy.json").write_text(json.dumps(config))
    loaded = load_classifier("toy", tmp_path)
    x = torch.rand(5, 1, 8, 8)
    assert loaded.features(x).shape == (5, hidden or 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
