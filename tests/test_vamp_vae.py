"""Behaviour and math of the VampPrior VAE (plugins/vamp_vae.py), checked against torch.distributions.

    python -m pytest tests/test_vamp_vae.py -q
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import fit
from torch.distributions import Bernoulli, Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

import vaezoo
from vaezoo import apps
from vaezoo.data import load_data
from vaezoo.errors import CapabilityError, ConfigError
from vaezoo.testing import check_model
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.vamp_vae import VampVAE

if "vamp-vae" not in vaezoo.list_models():  # until pyproject.toml's entry point registers it
    register_model(VampVAE, "vamp-vae")

IMAGE, VECTOR = (1, 8, 8), (64,)


def tiny(input_shape: tuple[int, ...] = IMAGE, **overrides) -> VampVAE:
    return vaezoo.create_model("vamp-vae", preset="tiny", input_shape=input_shape, **overrides)


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


def spread_pseudo_inputs(model: VampVAE) -> None:
    """Pseudo-inputs uniform over [0, 1] (and a few outside, which hardtanh clamps), and a posterior head 10x
    sharper than at init: components and posteriors that differ by nats, so that the checks have teeth."""
    with torch.no_grad():
        model.pseudo_inputs.weight.uniform_(-0.2, 1.2)
        model.posterior_head.linear.weight.mul_(10.0)


def posterior_normal(model: VampVAE, x: torch.Tensor) -> Independent:
    """q(z | x) rebuilt from the encoder's layers, independently of VampPosterior."""
    mean, logvar = model.posterior_head(model.encoder(x))
    return Independent(Normal(mean, (0.5 * logvar).exp()), 1)


def vamp_prior(model: VampVAE) -> MixtureSameFamily:
    """(1/K) sum_k q(z | u_k) with torch.distributions, u_k the clamped pseudo-inputs as the reference's hardtanh."""
    weight = model.pseudo_inputs.weight
    pseudo = weight.clamp(0.0, 1.0) if model.config.likelihood != "gaussian" else weight
    components = posterior_normal(model, pseudo)
    mixing = Categorical(logits=torch.zeros(model.config.pseudo_inputs))
    return MixtureSameFamily(mixing, components)


@pytest.mark.parametrize(("input_shape", "likelihood"), [(IMAGE, "bernoulli"), (VECTOR, "bernoulli"), (VECTOR, "gaussian")])
def test_log_prior_matches_a_torch_distributions_mixture(input_shape, likelihood) -> None:
    model = tiny(input_shape, likelihood=likelihood).eval()
    spread_pseudo_inputs(model)
    prior = vamp_prior(model)
    with torch.no_grad():
        near = prior.sample((200,))  # where the mass is
        far = 10 * torch.randn(50, 4)  # deep in the tails, where a naive sum of exps underflows
        for z in (near, far):
            torch.testing.assert_close(model.log_prior(z), prior.log_prob(z), rtol=1e-5, atol=1e-4)
    pseudo = model.pseudo_inputs()
    assert pseudo.shape == (10, *input_shape)
    if likelihood == "bernoulli":  # clamped to the data's range, as the reference's hardtanh(0, 1)
        assert pseudo.min() == 0 and pseudo.max() == 1
    else:
        assert pseudo.min() < 0 and pseudo.max() > 1


def test_forward_uses_one_z_for_the_reconstruction_and_the_kl() -> None:
    """neg_elbo = -log p(x | z) + log q(z | x) - log p(z) at the very z that was decoded."""
    model = tiny().eval()
    spread_pseudo_inputs(model)
    x = torch.rand(6, *IMAGE)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)  # the same noise: encode and rsample draw z as forward does
    z = model.encode(x).rsample()
    with torch.no_grad():
        logits = model.decoder(z)
        recon = -Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
        kl = posterior_normal(model, x).log_prob(z) - vamp_prior(model).log_prob(z)
    torch.testing.assert_close(out.params, logits)
    torch.testing.assert_close(out.neg_elbo, recon + kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.kl, kl.mean(), rtol=1e-5, atol=1e-4)
    assert torch.allclose(out.loss, out.neg_elbo.mean(), atol=1e-4)  # beta = 1, no warm-up: the loss is the -ELBO


def per_example_kl(model: VampVAE, x: torch.Tensor) -> torch.Tensor:
    """forward's KL estimate of each row of x: neg_elbo minus the reconstruction term at forward's own z."""
    out = model(x)
    return out.neg_elbo + model.likelihood.log_prob(out.params, x)


def assert_mean_matches(estimates: torch.Tensor, truth: torch.Tensor, truth_error: float | torch.Tensor = 0.0) -> None:
    """The mean of (reps, B) Monte Carlo estimates is ``truth`` (B,) within 4 standard errors."""
    error = (estimates.var(0) / estimates.shape[0] + torch.as_tensor(truth_error) ** 2).sqrt()
    assert ((estimates.mean(0) - truth).abs() < 4 * error + 1e-3).all(), (estimates.mean(0), truth, error)


def test_monte_carlo_kl_averages_to_the_analytic_kl_when_the_prior_is_one_gaussian() -> None:
    """K = 1: p(z) = q(z | u_1), so KL(q || p) between two diagonal Gaussians is analytic."""
    model = tiny(pseudo_inputs=1).eval()
    x, reps = torch.rand(3, *IMAGE) * 0.3, 20_000
    with torch.no_grad():
        model.pseudo_inputs.weight.fill_(0.9)  # u_1 unlike the inputs, so q and p differ
        model.posterior_head.linear.weight.mul_(10.0)
        q, p = posterior_normal(model, x), posterior_normal(model, model.pseudo_inputs())
        exact = kl_divergence(q.base_dist, p.base_dist).sum(1)  # (3,); p broadcasts from (1, D)
        x_rep = x.repeat(reps, 1, 1, 1)
        forward_kl = per_example_kl(model, x_rep).view(reps, 3)
        posterior_kl = model.encode(x_rep).kl().view(reps, 3)  # one fresh z per row
    assert (exact > 0.05).all(), exact  # the check has teeth
    assert_mean_matches(forward_kl, exact)
    assert_mean_matches(posterior_kl, exact)


def test_monte_carlo_kl_averages_to_the_true_kl_under_the_mixture() -> None:
    """K = 10: forward's one-sample KLs average to E_q[log q - log p], estimated independently from 400k draws."""
    model = tiny().eval()
    spread_pseudo_inputs(model)
    x, reps, draws = torch.rand(3, *IMAGE), 4000, 400_000
    with torch.no_grad():
        forward_kl = per_example_kl(model, x.repeat(reps, 1, 1, 1)).view(reps, 3)
        q, prior = posterior_normal(model, x), vamp_prior(model)
        z = q.sample((draws,))  # (draws, 3, D)
        log_ratio = q.log_prob(z) - prior.log_prob(z)  # (draws, 3)
    truth, truth_error = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(draws)
    assert (truth > 0.05).all(), truth
    assert_mean_matches(forward_kl, truth, truth_error)


def test_log_weights_use_the_vamp_prior_not_a_standard_normal() -> None:
    model = tiny().eval()
    spread_pseudo_inputs(model)
    x = torch.rand(6, *IMAGE)
    torch.manual_seed(1)
    log_weights = model.log_weights(x)
    torch.manual_seed(1)
    z = model.encode(x).rsample()
    with torch.no_grad():
        log_px_z = Bernoulli(logits=model.decoder(z), validate_args=False).log_prob(x).flatten(1).sum(1)
        expected = log_px_z + vamp_prior(model).log_prob(z) - posterior_normal(model, x).log_prob(z)
        standard = log_px_z + Normal(0.0, 1.0).log_prob(z).sum(1) - posterior_normal(model, x).log_prob(z)
    torch.testing.assert_close(log_weights, expected, rtol=1e-5, atol=1e-4)
    assert (log_weights - standard).abs().max() > 0.1  # the two priors differ here, so the check has teeth


def test_importance_weighted_bound_is_above_the_elbo_and_rises_with_iw_samples() -> None:
    """Burda et al. 2016: the k = 1 bound is the ELBO in expectation, and the bound rises with k."""
    model = tiny().eval()
    spread_pseudo_inputs(model)
    x, reps = load_data("digits").test.x[:32], 50
    x_rep = x.repeat(reps, 1, 1, 1)
    with torch.no_grad():
        elbo = -model(x_rep).neg_elbo  # (reps * 32,)
    single = model.log_likelihood(x_rep, iw_samples=1)  # (reps * 32,)
    error = ((elbo.var() + single.var()) / len(elbo)).sqrt()
    assert abs(float(single.mean() - elbo.mean())) < 4 * float(error), (single.mean(), elbo.mean(), error)
    bounds = [float(model.log_likelihood(x, iw_samples=k).mean()) for k in (10, 200)]
    assert float(single.mean()) < bounds[0] < bounds[1] and bounds[1] > float(elbo.mean()) + 0.5, (bounds, elbo.mean())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_prior_samples_have_the_mixtures_mean_and_variance(temperature) -> None:
    """E[z] = mean_k m_k, Var[z] = mean_k (T^2 v_k + m_k^2) - E[z]^2 for k uniform and z ~ N(m_k, T^2 v_k)."""
    model = tiny().eval()
    spread_pseudo_inputs(model)
    n = 40_000
    with torch.no_grad():
        samples = model.prior_sample(n, temperature=temperature)
        components = posterior_normal(model, model.pseudo_inputs.weight.clamp(0, 1)).base_dist
        mean = components.mean.mean(0)
        variance = (temperature**2 * components.variance + components.mean**2).mean(0) - mean**2
    assert samples.shape == (n, 4) and samples.dtype == model.dtype
    assert ((samples.mean(0) - mean).abs() < 4 * (variance / n).sqrt()).all(), (samples.mean(0), mean)
    # The sample variance's standard error is sqrt((mu_4 - sigma^4) / n), mu_4 the fourth central moment.
    fourth_moment = ((samples - samples.mean(0)) ** 4).mean(0)
    variance_error = ((fourth_moment - samples.var(0) ** 2) / n).sqrt()
    assert ((samples.var(0) - variance).abs() < 4 * variance_error).all(), (samples.var(0), variance)


def test_temperature_zero_samples_are_component_means_and_samples_are_images() -> None:
    model = tiny().eval()
    spread_pseudo_inputs(model)
    z = model.prior_sample(50, temperature=0.0)
    means = model.prior_components().mean.detach()  # (K, D)
    distances = (z.unsqueeze(1) - means).abs().amax(2).min(1).values  # (50,): to the nearest component mean
    assert (distances == 0).all()  # every draw is one component's mean
    assert len({tuple(row.tolist()) for row in z}) > 1  # and the components are picked at random
    images = model.sample(5)
    assert images.shape == (5, *IMAGE) and 0 <= images.min() <= images.max() <= 1


def test_posterior_kl_is_against_the_vamp_prior_and_has_no_per_dim_split() -> None:
    model = tiny().eval()
    x = torch.rand(4, *IMAGE)
    posterior = model.encode(x)
    gaussian = vaezoo.DiagonalGaussian(torch.zeros(4, 4), torch.zeros(4, 4))
    torch.testing.assert_close(posterior.kl(gaussian), kl_divergence(
        Normal(posterior.mean, posterior.std), Normal(0.0, 1.0)).sum(1))  # a Gaussian prior given: analytic
    with pytest.raises(CapabilityError, match="per-dim"):
        posterior.kl_per_dim()


def test_imputation_scores_z_under_the_vampprior(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both imputation methods go through the contract's log_prior, which the VampPrior overrides."""
    model = tiny().eval()
    x = load_data("digits").test.x[:4]
    hidden = apps.bottom_half_mask(IMAGE)
    scored = []
    vamp_log_prior = model.log_prior
    monkeypatch.setattr(model, "log_prior", lambda z: scored.append(z.shape) or vamp_log_prior(z))
    for method in ("mwg", "importance"):
        scored.clear()
        filled = apps.impute(model, x, hidden, method=method, iterations=2, seed=0)
        assert filled.shape == x.shape and torch.equal(filled[:, :, :4], x[:, :, :4])
        assert scored, f"{method} imputation never evaluated the VampPrior"


def test_training_on_digits_lowers_the_loss_and_moves_the_pseudo_inputs() -> None:
    splits = load_data("digits")
    model = tiny()
    start_pseudo = model.pseudo_inputs().detach().clone()
    with torch.no_grad():
        before = model.eval()(splits.val.x).neg_elbo.mean().item()
    fit(model, splits.train.x, None, steps=200, batch_size=64)
    with torch.no_grad():
        after = model.eval()(splits.val.x).neg_elbo.mean().item()
    assert after < 0.8 * before, (before, after)
    pseudo = model.pseudo_inputs().detach()
    assert (pseudo - start_pseudo).abs().max() > 0.05  # the prior is learned, not fixed
    assert 0 <= pseudo.min() <= pseudo.max() <= 1


def test_config_errors_name_the_bad_field() -> None:
    for bad in (0, -3, 2.5, "many", True):
        with pytest.raises(ConfigError, match="pseudo_inputs"):
            tiny(pseudo_inputs=bad)
    with pytest.raises(ConfigError, match="beta"):
        tiny(beta=-1.0)
    with pytest.raises(ConfigError, match="did you mean 'pseudo_inputs'"):
        tiny(pseudo_input=5)


def test_check_model_passes() -> None:
    report = check_model(VampVAE, quick=True)
    assert report.skipped == {"train_on_digits": "quick=True"}
