"""The benchmark: the math of its metrics, a variant's own metrics reaching its outputs, and quick end-to-end runs on digits."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor

import vaezoo
from vaezoo.bench import (
    METRIC_KEYS,
    NOT_REPORTED,
    active_units,
    bottom_half_mask,
    feature_frechet_distance,
    frechet_distance,
    impute,
    results_markdown,
    run_benchmark,
)
from vaezoo.bench.record import reported_metric_names
from vaezoo.core.contract import VAEOutput
from vaezoo.data import fixed_binarize
from vaezoo.eval.evaluate import evaluate
from vaezoo.zoo.registry import REGISTRY
from vaezoo_plugins.vae_mlp import VanillaVAE


class LatentNormVAE(VanillaVAE):
    """A third-party variant: the vanilla VAE that also reports figures vaezoo has never heard of."""

    reported_metrics = {
        "latent_norm": "mean L2 norm of the posterior mean E_q[z | x]",
        "latent_moments": "mean |E_q[z_u | x]| and mean Var_q[z_u | x] over examples and dims",
    }
    built: ClassVar[list[LatentNormVAE]] = []  # every instance, so a test can reach the model the benchmark trained

    def __init__(self, config) -> None:
        super().__init__(config)
        if not next(self.parameters()).is_meta:  # a build on the meta device only measures the model's size
            LatentNormVAE.built.append(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        out = super().forward(x, y)
        posterior = self.encode(x, y)
        out.metrics["latent_norm"] = posterior.mean.norm(dim=1).mean().detach()
        out.metrics["latent_moments"] = {"mean_abs": posterior.mean.abs().mean().detach(),
                                         "mean_variance": posterior.variance.mean().detach()}
        return out


@pytest.fixture
def latent_norm_vae():
    """LatentNormVAE registered as "latent-norm-vae" for one test, as a third-party package would at run time."""
    LatentNormVAE.built.clear()
    vaezoo.register_model(LatentNormVAE, "latent-norm-vae")
    yield "latent-norm-vae"
    LatentNormVAE.built.clear()
    REGISTRY.refresh()


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
    n_a = {  # vq-vae reports perplexity and code usage (its reported_metrics); vae-mlp does not
        "vae-mlp": {"perplexity", "code_usage", "conditional_sample_accuracy"},
        "vq-vae": {"nll", "nll_bits_per_dim", "nll_examples", "active_units", "latent_dims", "conditional_sample_accuracy",
                   "frechet_distance_gmm"},
    }
    for name, record in models.items():
        assert record["status"] == "ok"
        assert set(record) == {*METRIC_KEYS, "perplexity", "code_usage", "status"}
        assert {key for key, value in record.items() if value is None} == n_a[name], name
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


def test_the_pretrained_tag_for_data_is_found_by_its_declared_dataset() -> None:
    from vaezoo.bench.budget import tag_for_data
    from vaezoo.zoo.tags import PretrainedTag

    class Zoo:
        pretrained_tags = {"digits": PretrainedTag({}, dataset="digits"),
                           "fmnist": PretrainedTag({}, dataset="fashion-mnist"),
                           "fmnist-binarized": PretrainedTag({}, dataset="fashion-mnist-binarized")}

    assert tag_for_data(Zoo, "fashion-mnist") == "fmnist"
    assert tag_for_data(Zoo, "fashion-mnist-binarized") == "fmnist-binarized"  # not in the usual-names table
    assert tag_for_data(Zoo, "mnist") is None

    class Misnamed:  # a tag called "fmnist" that was trained on something else is not Fashion-MNIST's
        pretrained_tags = {"fmnist": PretrainedTag({}, dataset="digits")}

    assert tag_for_data(Misnamed, "fashion-mnist") is None and tag_for_data(Misnamed, "digits") == "fmnist"


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


def test_the_gmm_sampler_fd_is_the_fd_of_samples_from_a_mixture_fitted_on_the_training_codes(digits_splits) -> None:
    """Bench's FD under an ex-post GMM (issue 14's comparison) against the same steps done by hand."""
    from vaezoo.apps import fit_sampler
    from vaezoo.bench.measure import _sample_quality
    from vaezoo.bench.settings import SAMPLER_COMPONENTS, SAMPLER_MAX_TRAIN
    from vaezoo.eval.classifier import load_classifier

    model = vaezoo.create_model("vae-mlp.digits", pretrained=True).eval()
    record, notes = {}, {}
    _sample_quality(model, digits_splits, {"data": "digits", "seed": 3}, load_classifier("digits"), record, notes)
    assert model.latent_sampler is None and model.config.latent_sampler == ""  # bench leaves the model as it was
    by_hand = fit_sampler(model, digits_splits.train.x[:SAMPLER_MAX_TRAIN], components=SAMPLER_COMPONENTS, seed=3)
    classifier, test_x = load_classifier("digits"), digits_splits.test.x
    torch.manual_seed(3)
    samples = by_hand.sample(len(test_x), sampler="gmm")
    with torch.no_grad():
        expected = feature_frechet_distance(classifier.features(samples), classifier.features(test_x))
    assert record["frechet_distance_gmm"] == pytest.approx(expected, rel=1e-6)
    assert record["frechet_distance_gmm"] != pytest.approx(record["frechet_distance"], rel=1e-3)  # not the prior's
    assert "10-component GMM" in notes["frechet_distance_gmm"]

    hierarchy_record, hierarchy_notes = {}, {}
    _sample_quality(vaezoo.create_model("hvae.digits", pretrained=True).eval(), digits_splits,
                    {"data": "digits", "seed": 3}, load_classifier("digits"), hierarchy_record, hierarchy_notes)
    assert "frechet_distance_gmm" not in hierarchy_record
    assert "latent_sampler is False" in hierarchy_notes["frechet_distance_gmm"]


def test_results_compare_nll_with_vae_mlp_and_fd_with_the_gmm_sampler() -> None:
    from vaezoo.bench.report import comparison_lines

    models = {"vae-mlp": {"nll": 236.82, "frechet_distance": 150.0, "frechet_distance_gmm": 105.0},
              "iaf-vae": {"nll": 236.17, "frechet_distance": 147.3, "frechet_distance_gmm": 65.5471},
              "iwae": {"nll": 235.32, "frechet_distance": 140.0, "frechet_distance_gmm": None},
              "vq-vae": {"nll": None, "frechet_distance": 127.9}}
    lines = comparison_lines(models)
    assert lines[1] == "Comparisons (same data, budget and seed):"
    assert lines[2] == "- NLL minus vae-mlp's (236.82), nats (negative: better): iaf-vae -0.65, iwae -1.50"
    assert lines[3] == ("- FD from the prior -> with the GMM sampler fitted on the training codes: "
                        "vae-mlp 150.0 -> 105.0 (-30.0%), iaf-vae 147.3 -> 65.5 (-55.5%)")  # the table's one decimal
    assert comparison_lines({"iwae": models["iwae"]}) == []  # nothing to compare without the baseline or a sampler


@pytest.mark.slow
def test_data_with_known_factors_gets_the_five_disentanglement_scores(one_thread) -> None:
    """bench's disentanglement phase is disentanglement_scores on the posterior means, seeded by the bench's seed."""
    from vaezoo.apps import posterior_means
    from vaezoo.bench.measure import _disentanglement
    from vaezoo.data import ground_truth_data
    from vaezoo.eval.disentanglement import SCORE_NAMES, disentanglement_scores

    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 32, 32)).eval()
    record, notes = {}, {}
    _disentanglement(model, {"data": "shapes2d-small", "seed": 4, "quick": True}, record, notes)
    expected = disentanglement_scores(lambda x: posterior_means(model, x, None)[0], ground_truth_data("shapes2d-small"),
                                      seed=4, small=True)
    assert record == expected and set(record) == set(SCORE_NAMES)
    assert all(0.0 <= value <= 1.0 for value in record.values())
    conditional, why = {}, {}
    cvae = vaezoo.create_model("cvae", preset="tiny", input_shape=(1, 32, 32), num_classes=3)
    _disentanglement(cvae, {"data": "shapes2d-small", "seed": 4, "quick": True}, conditional, why)
    assert conditional == dict.fromkeys(SCORE_NAMES) and "leave out the label" in why["mig"]


def test_the_results_table_lists_the_disentanglement_scores_last_and_only_where_measured() -> None:
    from vaezoo.bench.record import table_rows

    plain = table_rows([{"nll": 1.0, "perplexity": 2.0}])
    scored = table_rows([{"nll": 1.0, "mig": 0.3, "dci_completeness": 0.2}, {"nll": 2.0}])
    assert "mig" not in plain and scored[-2:] == ["mig", "dci_completeness"] and "perplexity" in plain


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


# --- a variant's own metrics --------------------------------------------------------------------
def test_evaluate_averages_reported_metrics_by_batch_size(latent_norm_vae, digits_splits):
    model = vaezoo.create_model(latent_norm_vae, preset="tiny", input_shape=(1, 8, 8)).eval()
    x = digits_splits.test.x
    with torch.no_grad():
        posterior = model.encode(x)
    metrics = evaluate(model, x, batch_size=7)  # uneven batches: the last one has fewer examples
    assert x.shape[0] % 7 != 0
    assert metrics["latent_norm"] == pytest.approx(float(posterior.mean.norm(dim=1).mean()), rel=1e-5)
    assert metrics["latent_moments"] == pytest.approx(
        {"mean_abs": float(posterior.mean.abs().mean()), "mean_variance": float(posterior.variance.mean())}, rel=1e-5)


def test_evaluate_reports_a_hierarchys_kl_per_layer_as_a_dict():
    model = vaezoo.create_model("hvae", preset="tiny", input_shape=(1, 8, 8))
    metrics = evaluate(model, torch.rand(20, 1, 8, 8), batch_size=8)
    layers = metrics["kl_per_layer"]
    assert list(layers) == [f"kl_{i}" for i in range(len(layers))] and len(layers) >= 2
    assert layers == {name: metrics[name] for name in layers}  # the same figures as the per-layer terms
    assert sum(layers.values()) == pytest.approx(metrics["kl"], rel=1e-5)


def test_results_table_has_a_row_per_reported_metric():
    record = {key: 1.0 for key in METRIC_KEYS}
    results = {
        "settings": {"command": "vaezoo bench a b"},
        "models": {"a": {**record, "latent_norm": 2.5, "status": "ok"},
                   "b": {**record, "latent_norm": None, "status": "ok"}},
        "notes": {"a": {}, "b": {"latent_norm": NOT_REPORTED}},
    }
    lines = results_markdown(results).splitlines()
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines[4:] if line.startswith("| ")]
    assert rows[:11] == ["status", "nll", "nll_examples", "neg_elbo", "recon", "kl", "nll_bits_per_dim",
                         "neg_elbo_bits_per_dim", "active_units", "latent_dims", "latent_norm"]
    assert "| latent_norm | 2.5 | n/a |" in lines and f"- b: latent_norm: {NOT_REPORTED}" in lines


def test_a_reported_metric_may_not_take_a_shared_name():
    class Clashing(VanillaVAE):
        reported_metrics = {"active_units": "my own count"}

    with pytest.raises(vaezoo.PluginError, match="clashing-vae.*'active_units'"):
        reported_metric_names({"vae-mlp": VanillaVAE, "clashing-vae": Clashing})


def test_bench_prints_a_plugins_own_metric(tmp_path, latent_norm_vae, digits_splits, one_thread):
    results = run_benchmark([latent_norm_vae, "vae-mlp"], "digits", epochs=1, out_dir=str(tmp_path), iw_samples=2,
                            overrides={"hidden_dims": [32], "latent_dim": 4})
    saved = json.loads((tmp_path / "results.json").read_text())
    plugin, mlp = saved["models"][latent_norm_vae], saved["models"]["vae-mlp"]
    assert plugin["status"] == mlp["status"] == "ok"
    assert mlp["latent_norm"] is None and saved["notes"]["vae-mlp"]["latent_norm"] == NOT_REPORTED
    assert set(plugin["latent_moments"]) == {"mean_abs", "mean_variance"}

    # The value is the trained model's mean posterior-mean norm on the test split, recomputed here without vaezoo's evaluate.
    model = LatentNormVAE.built[0]  # the benchmarked model; the second one built is its anomaly detector
    assert len(LatentNormVAE.built) == 2
    x = fixed_binarize(digits_splits.test.x, seed=0) if model.config.dynamic_binarization else digits_splits.test.x
    with torch.no_grad():
        expected = float(model.eval().encode(x).mean.norm(dim=1).mean())
    assert expected > 0 and plugin["latent_norm"] == pytest.approx(expected, rel=1e-5)
    assert results["models"][latent_norm_vae]["latent_norm"] == plugin["latent_norm"]

    table = (tmp_path / "results.md").read_text().splitlines()
    assert f"| latent_norm | {plugin['latent_norm']:.4g} | n/a |" in table
    assert any(line.startswith("| latent_moments | mean_abs=") for line in table)
    assert f"- vae-mlp: latent_norm: {NOT_REPORTED}" in table


COST_KEYS = {"train_samples_per_s", "eval_samples_per_s", "peak_memory_mb", "train_seconds"}  # timings, not figures


def figures_of(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in COST_KEYS}


def test_same_seed_same_figures_whatever_else_is_benchmarked(tmp_path, one_thread) -> None:
    """Each model is initialised from the seed alone: benchmarking another model first changes none of its figures
    (it did: the model was built from wherever the global RNG stood)."""
    settings = {"data": "digits", "epochs": 1, "iw_samples": 5, "seed": 3}
    alone = run_benchmark(["vae-mlp"], out_dir=str(tmp_path / "alone"), **settings)["models"]["vae-mlp"]
    torch.manual_seed(12345)  # wherever the caller's RNG stands
    after = run_benchmark(["beta-vae", "vae-mlp"], out_dir=str(tmp_path / "after"), **settings)["models"]["vae-mlp"]
    assert figures_of(alone) == figures_of(after)
    other_seed = run_benchmark(["vae-mlp"], out_dir=str(tmp_path / "other"), **{**settings, "seed": 4})["models"]["vae-mlp"]
    assert other_seed["neg_elbo"] != alone["neg_elbo"]


@pytest.mark.slow
def test_the_same_bench_command_in_two_processes_gives_the_same_figures(tmp_path) -> None:
    command = [sys.executable, "-m", "vaezoo.cli", "bench", "vae-mlp", "--data", "digits", "--epochs", "1",
               "--iw-samples", "5", "--seed", "7"]
    runs = []
    for name in ("first", "second"):
        subprocess.run([*command, "--out", str(tmp_path / name)], check=True, capture_output=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs.append(json.loads((tmp_path / name / "results.json").read_text())["models"]["vae-mlp"])
    assert figures_of(runs[0]) == figures_of(runs[1])


@pytest.mark.slow
def test_each_model_shows_its_progress_on_a_terminal(tmp_path, monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_benchmark(["vae-mlp", "cvae"], "digits", pretrained=True, iw_samples=0, out_dir=str(tmp_path), progress=True)
    drawn = terminal.getvalue()
    screen = [line.split("\r")[-1].strip() for line in drawn.split("\n") if line.strip()]
    assert [line.split(":")[0] for line in screen] == ["[1/2] vae-mlp", "[2/2] cvae"], screen
    assert all("7/7" in line and line.endswith(", ok]") for line in screen), screen
    for phase in ("loading weights", "likelihood", "latents and probe", "imputation", "sample quality", "figures"):
        assert f", {phase}]" in drawn, phase


def test_reconstruction_quality_is_psnr_ssim_and_a_feature_frechet_distance(digits_splits) -> None:
    """The bench's PSNR is the mean over test images of 10 log10(1 / MSE) (recomputed here with numpy); SSIM lies in
    (0, 1]; reconstructions sit far closer to the test images in the classifier's features than samples do."""
    from vaezoo.bench.measure import _feature_space, _reconstruction_quality, _sample_quality

    model = vaezoo.create_model("vae-mlp.digits", pretrained=True).eval()
    record, notes = {}, {}
    classifier = _feature_space({"data": "digits"}, (1, 8, 8))
    _reconstruction_quality(model, digits_splits, classifier, record, notes)
    x = digits_splits.test.x
    recon = model.reconstruct(x).clamp(0, 1).double().numpy()
    errors = ((recon - x.double().numpy()) ** 2).reshape(len(x), -1).mean(1)
    assert record["recon_psnr"] == pytest.approx(float(np.mean(10 * np.log10(1 / errors))), rel=1e-9)
    assert 0 < record["recon_ssim"] <= 1 and "7x7 window" in notes["recon_ssim"]
    _sample_quality(model, digits_splits, {"data": "digits", "seed": 0}, classifier, record, notes)
    assert 0 <= record["recon_frechet_distance"] < record["frechet_distance"] / 2
    vectors = dataclasses.replace(digits_splits, input_shape=(64,))
    flat, why = {}, {}
    _reconstruction_quality(model, vectors, classifier, flat, why)
    assert "recon_psnr" not in flat and "is not an image" in why["recon_psnr"]
    assert _feature_space({"data": "digits"}, (64,)) == "the shipped classifier takes another input shape"
