"""Ex-post latent samplers (vaezoo/core/samplers.py, vaezoo/apps/samplers.py): the mixture's density and draws
against scikit-learn and its own moments, the sampler saved and loaded with the model, sample(sampler="gmm"),
the variants that refuse it, the CLI, and samples closer to the data than the prior's.

    python -m pytest tests/test_samplers.py -q
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.mixture import GaussianMixture

import vaezoo
from vaezoo import apps
from vaezoo.bench import feature_frechet_distance
from vaezoo.cli import main
from vaezoo.core.config import VAEConfig, config_from_dict, config_to_dict
from vaezoo.core.samplers import GaussianMixtureSampler
from vaezoo.errors import CapabilityError, CheckpointError, ConfigError, InputError
from vaezoo.io.model_dir import CONFIG_NAME, WEIGHTS_NAME
from vaezoo.io.tensors import load_tensors, save_tensors
from vaezoo_plugins.hvae import HierarchicalVAE

IMAGE = (1, 8, 8)
NO_SAMPLER = {"autoencoder-kl", "hvae", "vdvae", "vq-vae"}  # in-tree variants whose latents are not one continuous vector


def tiny(name: str = "vae-mlp", **overrides) -> vaezoo.VAE:
    extra = {"num_classes": 10} if vaezoo.get_model_class(name).is_conditional else {}
    return vaezoo.create_model(name, preset="tiny", input_shape=IMAGE, **extra, **overrides).eval()


def labels_for(model: vaezoo.VAE, n: int) -> torch.Tensor | None:
    return torch.arange(n) % 10 if model.is_conditional else None


def hand_made_mixture() -> GaussianMixtureSampler:
    """K=2 in 2-D: weights 0.3/0.7, means (-2, 1) and (3, 0), one correlated and one diagonal covariance."""
    mixture = GaussianMixtureSampler(2, 2)
    mixture.weights.copy_(torch.tensor([0.3, 0.7]))
    mixture.means.copy_(torch.tensor([[-2.0, 1.0], [3.0, 0.0]]))
    mixture.scale_tril.copy_(torch.tensor([[[1.0, 0.0], [0.8, 0.6]], [[0.5, 0.0], [0.0, 2.0]]]))
    return mixture


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], lines
    return lines[0]


# --- the mixture itself ------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_log_prob_equals_sklearns_score_samples(covariance_type: str) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, -1.0, 2.0], [-3.0, 3.0, 1.0]])
    codes = np.concatenate([c + rng.normal(size=(100, 3)) @ rng.normal(size=(3, 3)) for c in centres])
    fitted = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(codes)
    points = rng.normal(scale=3.0, size=(50, 3))
    mixture = GaussianMixtureSampler.from_sklearn(fitted)
    ours = mixture.log_prob(torch.tensor(points, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(ours, fitted.score_samples(points), rtol=1e-5, atol=1e-4)
    assert mixture.scale_tril.shape == (3, 3, 3) and torch.equal(mixture.scale_tril, mixture.scale_tril.tril())


def test_an_unfitted_mixture_is_the_standard_normal_prior() -> None:
    z = torch.randn(20, 4) * 2
    expected = -0.5 * (z.pow(2).sum(1) + 4 * math.log(2 * math.pi))
    torch.testing.assert_close(GaussianMixtureSampler(5, 4).log_prob(z), expected)


def test_draws_have_the_mixtures_mean_and_covariance() -> None:
    mixture = hand_made_mixture()
    w, mu, scale = mixture.weights.double(), mixture.means.double(), mixture.scale_tril.double()
    mean = (w[:, None] * mu).sum(0)  # E z = sum_k w_k mu_k
    second = (w[:, None, None] * (scale @ scale.transpose(1, 2) + mu[:, :, None] * mu[:, None, :])).sum(0)
    covariance = second - torch.outer(mean, mean)  # sum_k w_k (Sigma_k + mu_k mu_k^T) - E z E z^T
    n = 200_000
    draws = mixture.sample(n, generator=torch.Generator().manual_seed(0)).double()
    standard_error = (covariance.diagonal() / n).sqrt()
    assert bool(((draws.mean(0) - mean).abs() < 5 * standard_error).all()), (draws.mean(0), mean)
    torch.testing.assert_close(torch.cov(draws.T), covariance, rtol=0.02, atol=0.02)
    on_means = mixture.sample(50, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert bool((torch.cdist(on_means, mixture.means).min(1).values == 0).all())  # temperature 0: the means


def test_a_generator_makes_draws_repeatable_without_touching_the_global_stream() -> None:
    mixture = hand_made_mixture()
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    first = mixture.sample(10, generator=torch.Generator().manual_seed(2))
    second = mixture.sample(10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, second) and torch.equal(torch.rand(3), expected_next)


# --- attached to a model -----------------------------------------------------------------------
def test_sample_with_gmm_decodes_the_mixtures_draws(digits_splits) -> None:
    model = apps.fit_sampler(tiny(), digits_splits.train.x[:300], components=4)
    torch.manual_seed(3)
    got = model.sample(7, sampler="gmm")
    torch.manual_seed(3)
    expected = model.likelihood.mean(model.decode(model.latent_sampler.sample(7)))
    assert torch.equal(got, expected)
    torch.manual_seed(3)
    prior = model.sample(7)  # the default stays the prior
    torch.manual_seed(3)
    assert torch.equal(prior, model.likelihood.mean(model.decode(torch.randn(7, model.config.latent_dim))))
    seeded = [apps.generate(model, 5, seed=9, sampler="gmm") for _ in range(2)]
    assert torch.equal(*seeded) and not torch.equal(seeded[0], apps.generate(model, 5, seed=9))


def test_the_mixture_is_fitted_on_the_codes_asked_for(digits_splits) -> None:
    """fit_on="mean" gives sklearn's mixture of the posterior means; "sample" one z ~ q(z | x) each, so wider."""
    x = digits_splits.train.x[:400]
    by_mean = apps.fit_sampler(tiny(), x, components=3, seed=0, fit_on="mean")
    with torch.no_grad():
        means = by_mean.encode(x).mean.double().numpy()
    reference = GaussianMixture(3, covariance_type="full", max_iter=2000, tol=1e-3, random_state=0).fit(means)
    torch.testing.assert_close(by_mean.latent_sampler.means, torch.tensor(reference.means_, dtype=torch.float32))
    by_sample = apps.fit_sampler(tiny(), x, components=3, seed=0)
    spread = {name: float(m.latent_sampler.sample(4000, generator=torch.Generator().manual_seed(0)).var(0).sum())
              for name, m in (("mean", by_mean), ("sample", by_sample))}
    assert spread["sample"] > spread["mean"]  # q(z) = E_x q(z | x) adds each posterior's variance to the means'


def test_a_fitted_sampler_survives_save_and_load_bit_exactly(tmp_path, digits_splits) -> None:
    model = apps.fit_sampler(tiny(), digits_splits.train.x, components=5, seed=1)
    model.save_pretrained(tmp_path / "gmm")
    saved = json.loads((tmp_path / "gmm" / CONFIG_NAME).read_text())["config"]
    assert (saved["latent_sampler"], saved["sampler_components"]) == ("gmm", 5)
    for loaded in (vaezoo.from_pretrained(tmp_path / "gmm"), vaezoo.load_model_dir(tmp_path / "gmm")):
        assert loaded.config == model.config
        for name in ("weights", "means", "scale_tril"):
            assert torch.equal(getattr(loaded.latent_sampler, name), getattr(model.latent_sampler, name)), name
        torch.manual_seed(4)
        first = loaded.sample(6, sampler="gmm")
        torch.manual_seed(4)
        assert torch.equal(first, model.sample(6, sampler="gmm"))


def test_a_model_without_a_sampler_still_loads_and_a_missing_mixture_is_refused(tmp_path) -> None:
    plain = vaezoo.from_pretrained("vae-mlp.digits")  # its config.json predates the sampler fields
    assert plain.latent_sampler is None and not any(key.startswith("latent_sampler") for key in plain.state_dict())
    with pytest.raises(InputError, match=r"has no fitted 'gmm' latent sampler; fit one with .*vaezoo fit-sampler"):
        plain.sample(2, sampler="gmm")
    tiny().save_pretrained(tmp_path / "plain")
    data = json.loads((tmp_path / "plain" / CONFIG_NAME).read_text())
    data["config"].update(latent_sampler="gmm", sampler_components=2)  # promises buffers the weights lack
    (tmp_path / "plain" / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="latent_sampler"):
        vaezoo.load_model_dir(tmp_path / "plain")
    tensors = load_tensors(tmp_path / "plain" / WEIGHTS_NAME)
    save_tensors(tmp_path / "plain" / WEIGHTS_NAME, {**tensors, **{f"latent_sampler.{k}": v for k, v in
                                                                     GaussianMixtureSampler(2, 4).state_dict().items()}})
    assert vaezoo.load_model_dir(tmp_path / "plain").latent_sampler.num_components == 2  # now they fit


def test_set_latent_sampler_records_it_in_the_config_and_removes_it() -> None:
    model = tiny()
    model.set_latent_sampler(GaussianMixtureSampler(3, model.config.latent_dim))
    assert (model.config.latent_sampler, model.config.sampler_components) == ("gmm", 3)
    with pytest.raises(InputError, match=r"latent_dim=2\) does not fit vae-mlp, whose latents have latent_dim=4"):
        model.set_latent_sampler(hand_made_mixture())
    model.set_latent_sampler(None)
    assert model.latent_sampler is None and model.config.latent_sampler == "" and model.config.sampler_components == 0
    assert not any(key.startswith("latent_sampler") for key in model.state_dict())


# --- the contract: which variants have it --------------------------------------------------------
@pytest.mark.parametrize("name", vaezoo.list_models())
def test_every_single_latent_variant_has_it_and_the_others_refuse_in_one_line(name: str, tmp_path, digits_splits) -> None:
    model = tiny(name)
    x, y = digits_splits.train.x[:200], digits_splits.train.y[:200]
    labels = y if model.is_conditional else None
    if name in NO_SAMPLER:
        assert not model.capabilities.latent_sampler
        for attempt in (lambda: apps.fit_sampler(model, x, labels, components=2),
                        lambda: model.sample(2, y=labels_for(model, 2), sampler="gmm")):
            with pytest.raises(CapabilityError) as info:
                attempt()
            message = str(info.value)
            assert message.startswith(name) and "no single continuous latent" in message and "\n" not in message
        return
    assert model.capabilities.latent_sampler
    apps.fit_sampler(model, x, labels, components=2)
    model.save_pretrained(tmp_path / name)
    loaded = vaezoo.load_model_dir(tmp_path / name)
    draws = []
    for candidate in (model, loaded):
        torch.manual_seed(0)
        draws.append(candidate.sample(5, y=labels_for(model, 5), sampler="gmm"))
    assert draws[0].shape == (5, *IMAGE) and bool(torch.isfinite(draws[0]).all()) and torch.equal(*draws)


def test_the_in_tree_variants_without_a_sampler_are_the_hierarchies_and_vq_vae() -> None:
    declared = {name for name in vaezoo.list_models() if not vaezoo.get_model_class(name).capabilities.latent_sampler}
    assert declared == NO_SAMPLER & set(vaezoo.list_models())


def test_a_hierarchy_that_forgets_to_declare_it_is_still_refused_saying_how_to_fix_it(digits_splits) -> None:
    class UndeclaredLadder(HierarchicalVAE):  # capabilities.latent_sampler keeps its default, True
        capabilities = vaezoo.Capabilities(mwg_imputation=False)

    model = UndeclaredLadder(tiny("hvae").config).eval()
    with pytest.raises(CapabilityError, match=r"latent codes are a list of \d+ layers, not one vector .*"
                                              r"Capabilities\(latent_sampler=False\)"):
        apps.fit_sampler(model, digits_splits.train.x[:50], components=2)
    with pytest.raises(ConfigError, match=r"^hvae has no single continuous latent.*set latent_sampler=''"):
        tiny("hvae", latent_sampler="gmm", sampler_components=2)


# --- bad input ---------------------------------------------------------------------------------
def test_config_fields_are_validated_and_round_trip() -> None:
    config = VAEConfig(latent_sampler="gmm", sampler_components=3)
    assert config_from_dict(VAEConfig, json.loads(json.dumps(config_to_dict(config)))) == config
    with pytest.raises(ConfigError, match=r"latent_sampler='gmx' is unknown \(did you mean 'gmm'\?\)"):
        VAEConfig(latent_sampler="gmx", sampler_components=3)
    with pytest.raises(ConfigError, match=r"sampler_components=0 must be >= 1 with latent_sampler='gmm'"):
        VAEConfig(latent_sampler="gmm")
    with pytest.raises(ConfigError, match=r"sampler_components=3 needs a latent_sampler"):
        VAEConfig(sampler_components=3)
    with pytest.raises(ConfigError, match=r"sampler_components=-1 must be an integer >= 0"):
        VAEConfig(sampler_components=-1)


def test_fit_sampler_and_sample_refuse_bad_arguments_in_one_line(digits_splits) -> None:
    model, x = tiny(), digits_splits.train.x[:20]
    cases = [
        (lambda: apps.fit_sampler(model, x, components=0), r"components=0 must be a positive integer"),
        (lambda: apps.fit_sampler(model, x, kind="gmx"), r"kind='gmx' is unknown; use one of gmm"),
        (lambda: apps.fit_sampler(model, x, fit_on="median"), r"fit_on='median' is unknown; use one of sample, mean"),
        (lambda: apps.fit_sampler(model, x, components=21), r"x holds 20 examples but a 21-component mixture .* needs"),
        (lambda: apps.fit_sampler(model, x * 2), r"x holds values in \[0, 2\]"),
        (lambda: model.sample(2, sampler="gmx"), r"sampler='gmx' is unknown; use None \(the prior\) or one of gmm"),
        (lambda: apps.generate(model, 2, sampler="gmm"), r"vae-mlp has no fitted 'gmm' latent sampler"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert model.latent_sampler is None  # nothing was attached by a refused call


# --- the command line --------------------------------------------------------------------------
def test_fit_sampler_then_sample_on_the_command_line(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "vae-gmm"
    fitted = runner.invoke(main, ["fit-sampler", "vae-mlp.digits", "--data", "digits", "--components", "5", "--out", str(out)])
    assert fitted.exit_code == 0, fitted.output
    assert "fitted a 5-component gmm sampler on 1437 train examples" in fitted.stdout
    assert {p.name for p in out.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, "README.md"}
    record = json.loads((out / CONFIG_NAME).read_text())
    assert record["config"]["latent_sampler"] == "gmm" and record["config"]["sampler_components"] == 5
    assert record["data"]["data"] == "digits" and record["latent_sampler_fit"]["fit_on"] == "sample"  # eval's default data kept
    assert "vaezoo fit-sampler vae-mlp.digits --data digits --components 5" in (out / "README.md").read_text()
    sampled = runner.invoke(main, ["sample", str(out), "--sampler", "gmm", "--n", "12", "--seed", "2",
                                   "-o", str(tmp_path / "s.npy")])
    assert sampled.exit_code == 0 and "wrote 12 samples from the gmm sampler" in sampled.stdout, sampled.output
    expected = apps.generate(vaezoo.from_pretrained(out), 12, seed=2, sampler="gmm")
    assert np.array_equal(np.load(tmp_path / "s.npy"), expected.numpy())
    assert runner.invoke(main, ["sample", str(out), "-o", str(tmp_path / "p.png")]).exit_code == 0  # the prior still


@pytest.mark.parametrize("args, code, message", [
    (["sample", "vae-mlp.digits", "--sampler", "gmx"], 2, "Invalid value for '--sampler': 'gmx' is not 'gmm'"),
    (["sample", "vae-mlp.digits", "--sampler", "gmm"], 1, "has no fitted 'gmm' latent sampler; fit one with"),
    (["fit-sampler", "vae-mlp.digits", "--data", "digits", "--components", "0"], 2, "'--components': 0 is not in the range"),
    (["fit-sampler", "vae-mlp.digits", "--data", "digits", "--components", "5000"], 1, "x holds 1437 examples but a 5000"),
    (["fit-sampler", "hvae.digits", "--data", "digits"], 1, "hvae.digits has no single continuous latent"),
    (["fit-sampler", "vq-vae.digits", "--data", "digits"], 1, "vq-vae.digits has no single continuous latent"),
    # an unfitted mixture used to be trained, saved and sampled from as if fitted
    (["train", "vae-mlp", "--data", "digits", "--set", "latent_sampler=gmm", "--set", "sampler_components=5"], 1,
     "latent_sampler='gmm' is fitted after training"),
])
def test_bad_command_lines_are_one_line_errors(args: list[str], code: int, message: str, tmp_path) -> None:
    """Unknown names and counts below 1 are click's option errors (exit 2, as for every command); the rest exit 1."""
    target = ["-o", str(tmp_path / "s.png")] if args[0] == "sample" else ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*args, *target])
    assert result.exit_code == code and message in one_error_line(result)
    assert not list(tmp_path.iterdir())  # nothing written


# --- what it is for ----------------------------------------------------------------------------
def test_mixture_samples_are_closer_to_the_data_than_prior_samples(digits_splits, digits_classifier) -> None:
    """Frechet distance to the val and test digits, 2000 samples each. Measured (fit seeds 0-2, sample seeds 0-4):
    mixture / prior 0.91-0.95 in pixel space, 0.69-0.81 in the shipped classifier's features."""
    model = apps.fit_sampler(vaezoo.from_pretrained("vae-mlp.digits"), digits_splits.train.x, components=10, seed=0)
    real = torch.cat([digits_splits.val.x, digits_splits.test.x])
    prior, mixture = apps.generate(model, 2000, seed=0), apps.generate(model, 2000, seed=0, sampler="gmm")
    pixels = {name: feature_frechet_distance(s.flatten(1), real.flatten(1)) for name, s in (("prior", prior), ("gmm", mixture))}
    with torch.no_grad():
        features = {name: feature_frechet_distance(digits_classifier.features(s), digits_classifier.features(real))
                    for name, s in (("prior", prior), ("gmm", mixture))}
    assert pixels["gmm"] < 0.98 * pixels["prior"], pixels
    assert features["gmm"] < 0.9 * features["prior"], features
