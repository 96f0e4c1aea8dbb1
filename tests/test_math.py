"""The math the variants share: analytic KL, likelihoods, reparameterization, the IWAE bound."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import fit

import vaezoo
from vaezoo.core.distributions import DiagonalGaussian, standard_normal_log_prob
from vaezoo.core.likelihoods import BernoulliLikelihood, GaussianLikelihood


def test_kl_to_standard_normal_matches_monte_carlo() -> None:
    q = DiagonalGaussian(torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, -0.7, 0.1]]))
    z = q.mean + q.std * torch.randn(200_000, 3)
    monte_carlo = (q.log_prob(z) - standard_normal_log_prob(z)).mean()
    assert q.kl().item() == pytest.approx(monte_carlo.item(), abs=0.02)


def test_kl_between_two_gaussians_matches_monte_carlo_and_torch() -> None:
    q = DiagonalGaussian(torch.tensor([[0.2, -0.4]]), torch.tensor([[-0.5, 0.4]]))
    p = DiagonalGaussian(torch.tensor([[1.0, 0.3]]), torch.tensor([[0.6, -0.2]]))
    z = q.mean + q.std * torch.randn(200_000, 2)
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean()
    assert q.kl(p).item() == pytest.approx(monte_carlo.item(), abs=0.02)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, q.std), torch.distributions.Normal(p.mean, p.std)
    ).sum()
    assert q.kl(p).item() == pytest.approx(reference.item(), rel=1e-5)


def test_kl_is_the_seeds_formula() -> None:
    mean, logvar = torch.randn(5, 7), torch.randn(5, 7)
    seed_kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp(), dim=1)
    torch.testing.assert_close(DiagonalGaussian(mean, logvar).kl(), seed_kl)


def test_gaussian_log_prob_matches_torch() -> None:
    torch.manual_seed(1)
    mean, x = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    q = DiagonalGaussian(mean, torch.full_like(mean, 0.4))
    reference = torch.distributions.Normal(mean, math.exp(0.2)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(q.log_prob(x), reference)
    likelihood = GaussianLikelihood(channels=3, scale=0.5)
    reference = torch.distributions.Normal(mean, 0.5).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(likelihood.log_prob(mean, x), reference)


def test_bernoulli_log_prob_is_the_seeds_summed_bce() -> None:
    logits, x = torch.randn(6, 1, 8, 8), torch.rand(6, 1, 8, 8)
    seed_bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(-BernoulliLikelihood().log_prob(logits, x), seed_bce, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("likelihood", [BernoulliLikelihood(), GaussianLikelihood(channels=1, scale=0.3)],
                         ids=["bernoulli", "gaussian"])
def test_log_prob_of_the_observed_values_is_the_log_prob_of_those_values_alone(likelihood) -> None:
    """log p(x_obs | z) for imputation: the same as the likelihood of the observed columns cut out."""
    torch.manual_seed(2)
    params, x = torch.randn(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    observed = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    observed[..., :2, :] = True  # the top half
    top = likelihood.log_prob(params[..., :2, :], x[..., :2, :])
    torch.testing.assert_close(likelihood.log_prob(params, x, observed.expand_as(x)), top)
    torch.testing.assert_close(likelihood.log_prob(params, x, torch.ones_like(x, dtype=torch.bool)),
                               likelihood.log_prob(params, x))


def test_importance_samples_are_what_the_likelihood_bound_is_built_from(digits_splits) -> None:
    """log_weights = log p(x | z) + (log p(z) - log q(z | x)) at the same z, for one latent and for a hierarchy."""
    x = digits_splits.test.x[:6]
    for tag in ("vae-mlp.digits", "hvae.digits"):
        model = vaezoo.from_pretrained(tag).eval()
        with torch.no_grad():
            torch.manual_seed(0)
            params, log_prior_ratio = model.importance_sample(x)
            torch.manual_seed(0)
            log_weights = model.log_weights(x)
        torch.testing.assert_close(log_weights, model.likelihood.log_prob(params, x) + log_prior_ratio)
        assert params.shape == x.shape and log_prior_ratio.shape == (6,)


def test_learned_gaussian_scale_is_trained() -> None:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,), likelihood="gaussian")
    x = 0.05 * torch.randn(256, 16)  # far narrower than the initial scale 1
    fit(model, x, None, steps=200)
    assert model.likelihood.log_scale.mean().item() < -0.5


def test_gradients_flow_through_the_reparameterization() -> None:
    mean = torch.zeros(3, 4, requires_grad=True)
    logvar = torch.zeros(3, 4, requires_grad=True)
    z = DiagonalGaussian(mean, logvar).rsample()
    (z**2).sum().backward()
    assert mean.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    model(torch.rand(8, 1, 8, 8)).recon.backward()  # recon alone reaches the encoder only through z
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.fixture(scope="module")
def trained_vae(digits) -> vaezoo.VAE:
    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    fit(model, *digits, steps=300)
    return model


def test_importance_weighted_bound_tightens_and_stays_above_the_elbo(trained_vae, digits) -> None:
    x = digits[0][:200]
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = -torch.stack([trained_vae(x).neg_elbo for _ in range(20)]).mean(0)
    bounds = {k: trained_vae.log_likelihood(x, iw_samples=k).mean().item() for k in (1, 10, 100, 1000)}
    assert bounds[1] == pytest.approx(elbo.mean().item(), abs=0.3)  # k = 1 is the ELBO in expectation
    assert bounds[1] < bounds[10] < bounds[100] < bounds[1000]
    assert bounds[1000] > elbo.mean().item() + 0.1


def test_log_likelihood_chunks_agree(trained_vae, digits) -> None:
    x = digits[0][:16]
    torch.manual_seed(3)
    whole = trained_vae.log_likelihood(x, iw_samples=64, chunk_size=10_000)
    torch.manual_seed(3)
    assert whole.shape == (16,)
    chunked = trained_vae.log_likelihood(x, iw_samples=64, chunk_size=16 * 5)
    assert (whole - chunked).abs().max() < 1.0  # different draws, same estimate


def test_kl_warmup_ramps_the_weight() -> None:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,), kl_warmup_steps=100)
    model.train()
    model.train_step = 25
    assert model.kl_weight(1.0) == pytest.approx(0.25)
    model.train_step = 1000
    assert model.kl_weight(2.0) == pytest.approx(2.0)
    model.eval()
    model.train_step = 0
    assert model.kl_weight(1.0) == 1.0  # evaluation always reports the true ELBO


def test_dynamic_binarization_feeds_binary_targets() -> None:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,), dynamic_binarization=True)
    x = torch.full((4, 16), 0.5)
    model.train()
    assert set(model.prepare_target(x).unique().tolist()) <= {0.0, 1.0}
    model.eval()
    assert torch.equal(model.prepare_target(x), x)


def test_log_likelihood_old_keyword_k_still_works_with_a_deprecation_warning() -> None:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,))
    x = torch.rand(3, 16)
    torch.manual_seed(0)
    new = model.log_likelihood(x, iw_samples=5)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="use iw_samples"):
        old = model.log_likelihood(x, k=5)
    assert torch.equal(new, old)
    with pytest.raises(TypeError, match="unexpected keyword argument 'samples'"):
        model.log_likelihood(x, samples=5)


@pytest.mark.parametrize("tag", ["vae-mlp.digits", "beta-vae.digits", "cvae.digits", "hvae.digits"])
def test_the_reported_nll_never_exceeds_the_neg_elbo_of_the_same_examples(tag: str, digits_splits) -> None:
    """NLL (IWAE, K samples) <= -ELBO on the same first N examples, for N that do and do not fill the internal
    batches (iw_examples once divided by N a sum over more than N examples: 85.66 nats where 23.53 was right)."""
    from vaezoo.eval.evaluate import evaluate

    model = vaezoo.from_pretrained(tag)
    test = digits_splits.test
    y = test.y if model.is_conditional else None
    for n in (1, 7, 50, 101, 130):
        metrics = evaluate(model, test.x, y, iw_samples=200, iw_examples=n, seed=0)
        assert metrics["nll_examples"] == n
        # -ELBO of the same n examples, averaged over 20 draws of z to shrink its Monte Carlo noise.
        draws = torch.stack([model.eval()(test.x[:n], None if y is None else y[:n]).neg_elbo for _ in range(20)])
        neg_elbo, stderr = draws.mean(), draws.mean(1).std() / math.sqrt(20)
        assert metrics["nll"] <= float(neg_elbo) + 3 * float(stderr) + 0.05, (tag, n, metrics["nll"], float(neg_elbo))
        assert metrics["nll"] > float(neg_elbo) - 10  # and tighter than the ELBO by a plausible margin, not nonsense
