"""Behaviour and math of the disentangling variants beta-TCVAE (plugins/beta_tcvae.py) and DIP-VAE
(plugins/dip_vae.py): the batch estimators of q(z) against hand computations and their expectations, the
losses against their equations, training on digits and the likelihood bound.

    OMP_NUM_THREADS=1 python -m pytest tests/test_disentangling_variants.py -q
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

import vaezoo
from vaezoo.core.distributions import DiagonalGaussian
from vaezoo.data import load_data
from vaezoo.errors import ConfigError
from vaezoo.eval.evaluate import evaluate
from vaezoo.testing import check_model
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.beta_tcvae import BetaTCVAE, BetaTCVAEConfig, tc_decomposition
from vaezoo_plugins.dip_vae import DIPVAE, DIPVAEConfig, dip_covariance, dip_penalties
from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig

IMAGE = (1, 8, 8)


@pytest.fixture(autouse=True)
def registered() -> None:
    """Neither is in pyproject's entry points yet; conftest's _restore_registry undoes this after each test."""
    for model_class, name in ((BetaTCVAE, "beta-tcvae"), (DIPVAE, "dip-vae")):
        if name not in vaezoo.list_models():
            register_model(model_class, name)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def tiny_tc(**overrides) -> BetaTCVAE:
    return BetaTCVAE(BetaTCVAEConfig(**{**BetaTCVAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


def tiny_dip(**overrides) -> DIPVAE:
    return DIPVAE(DIPVAEConfig(**{**DIPVAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


def random_posterior(batch: int, dim: int, seed: int) -> DiagonalGaussian:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    logvar = 0.5 * torch.randn(batch, dim, generator=generator, dtype=torch.float64) - 1.0
    return DiagonalGaussian(mean, logvar)


# --- an independent decomposition: the estimators' formulas written out with torch.distributions, loop by loop ----
def hand_weight(i: int, j: int, batch: int, dataset_size: int, estimator: str) -> float:
    if estimator == "mws":
        return 1.0 / (dataset_size * batch)
    return 1.0 / dataset_size if i == j else (dataset_size - 1) / (dataset_size * (batch - 1))


def hand_decomposition(z: torch.Tensor, posterior: DiagonalGaussian, dataset_size: int, estimator: str):
    """(mi, tc, dwkl) per example as Python floats, from densities (not log-densities) summed in float64."""
    batch, dim = z.shape
    q = [Normal(posterior.mean[j], posterior.std[j]) for j in range(batch)]
    mi, tc, dwkl = [], [], []
    for i in range(batch):
        weights = [hand_weight(i, j, batch, dataset_size, estimator) for j in range(batch)]
        log_qz = math.log(sum(w * q[j].log_prob(z[i]).sum().exp().item() for j, w in enumerate(weights)))
        log_prod = sum(math.log(sum(w * q[j].log_prob(z[i])[d].exp().item() for j, w in enumerate(weights)))
                       for d in range(dim))
        log_q_given_x = q[i].log_prob(z[i]).sum().item()
        log_prior = Normal(0.0, 1.0).log_prob(z[i]).sum().item()
        mi.append(log_q_given_x - log_qz)
        tc.append(log_qz - log_prod)
        dwkl.append(log_prod - log_prior)
    return torch.tensor(mi), torch.tensor(tc), torch.tensor(dwkl)


# --- the estimators -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["mss", "mws"])
@pytest.mark.parametrize("dataset_size", [5, 50])  # 5: the batch is the data set
def test_tc_decomposition_matches_a_hand_computation(estimator: str, dataset_size: int) -> None:
    posterior = random_posterior(5, 3, seed=0)
    z = posterior.rsample()
    parts = tc_decomposition(z, posterior, dataset_size, estimator)
    expected = hand_decomposition(z, posterior, dataset_size, estimator)
    for got, want in zip(parts, expected):
        assert torch.allclose(got, want.to(got.dtype), atol=1e-8)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_the_three_terms_telescope_to_the_sampled_kl_whose_mean_is_the_analytic_kl(estimator: str) -> None:
    """Chen et al.'s eq. 2: mi + tc + dwkl = log q(z | x) - log p(z) exactly per example, whatever the estimate of
    log q(z); over many draws of z that averages to the batch's analytic KL."""
    posterior = random_posterior(8, 4, seed=1)
    q, prior = Normal(posterior.mean, posterior.std), Normal(0.0, 1.0)
    totals = []
    for _ in range(500):
        z = posterior.rsample()
        parts = tc_decomposition(z, posterior, 1000, estimator)
        sampled_kl = (q.log_prob(z) - prior.log_prob(z)).sum(1)  # (B,)
        assert torch.allclose(parts.mi + parts.tc + parts.dwkl, sampled_kl, atol=1e-9)
        totals.append(sampled_kl.mean().item())
    totals = torch.tensor(totals)
    analytic = kl_divergence(q, prior).sum(1).mean().item()
    assert abs(totals.mean().item() - analytic) < 4 * totals.std().item() / math.sqrt(len(totals))


def test_with_the_batch_as_the_data_set_mss_is_exact_and_mws_is_off_by_known_constants() -> None:
    """N = B: MSS's weights are 1/B, the exact aggregate posterior of the batch, so mi_i <= log B per example
    (q(z_i) >= q(z_i | x_i) / B, the index code's entropy bound); MWS's 1/(N B) = 1/B^2 shifts log q(z) by -log B
    and each log q(z_d) by -log B."""
    batch, dim = 6, 3
    posterior = random_posterior(batch, dim, seed=2)
    z = posterior.rsample()
    exact = tc_decomposition(z, posterior, batch, "mss")
    q = Normal(posterior.mean.unsqueeze(0), posterior.std.unsqueeze(0))  # (1, B, D)
    log_pairs = q.log_prob(z.unsqueeze(1))  # (B, B, D)
    log_qz = torch.logsumexp(log_pairs.sum(2), 1) - math.log(batch)  # log 1/B sum_j q(z_i | x_j)
    assert torch.allclose(exact.mi, q.log_prob(z.unsqueeze(1)).sum(2).diagonal() - log_qz, atol=1e-9)
    assert bool((exact.mi <= math.log(batch) + 1e-9).all())
    weighted = tc_decomposition(z, posterior, batch, "mws")
    log_b = math.log(batch)
    assert torch.allclose(weighted.mi - exact.mi, torch.full_like(exact.mi, log_b), atol=1e-9)
    assert torch.allclose(weighted.tc - exact.tc, torch.full_like(exact.tc, (dim - 1) * log_b), atol=1e-9)
    assert torch.allclose(weighted.dwkl - exact.dwkl, torch.full_like(exact.dwkl, -dim * log_b), atol=1e-9)


def test_over_random_batches_mss_is_unbiased_for_q_z_and_mws_has_its_derived_expectation() -> None:
    """A data set of N Gaussian posteriors and one z ~ q(z | n*): over batches holding n* and B - 1 others drawn
    without replacement, E[q_mss(z)] = q(z) = 1/N sum_n q(z | n), and E[q_mws(z)] = (q(z | n*) + (B - 1) *
    mean_{n != n*} q(z | n)) / (N B), about q(z) / N: the paper's MWS is a lower bound of log q(z)."""
    n_data, batch, dim = 30, 6, 2
    data = random_posterior(n_data, dim, seed=3)
    generator = torch.Generator().manual_seed(4)
    z = data.mean[0] + data.std[0] * torch.randn(dim, generator=generator, dtype=torch.float64)
    density = Normal(data.mean, data.std).log_prob(z).sum(1).exp()  # (N,): q(z | n)
    exact = density.mean().item()
    estimates = {"mss": [], "mws": []}
    for _ in range(3000):
        others = 1 + torch.randperm(n_data - 1, generator=generator)[: batch - 1]  # B - 1 of the N - 1, no repeats
        members = torch.cat([torch.zeros(1, dtype=torch.long), others])
        posterior = DiagonalGaussian(data.mean[members], data.logvar[members])
        codes = posterior.mean.clone()
        codes[0] = z  # row 0 is n*'s draw; the other rows' codes do not enter row 0's estimate
        log_q_given_x = posterior.log_prob(codes)[0].item()
        for estimator, values in estimates.items():
            mi = tc_decomposition(codes, posterior, n_data, estimator).mi[0].item()
            values.append(math.exp(log_q_given_x - mi))  # q(z) estimated from this batch
    mss = torch.tensor(estimates["mss"])
    assert abs(mss.mean().item() - exact) < 4 * mss.std().item() / math.sqrt(len(mss))
    mws = torch.tensor(estimates["mws"])
    mws_expected = (density[0] + (batch - 1) * density[1:].mean()).item() / (n_data * batch)
    assert abs(mws.mean().item() - mws_expected) < 4 * mws.std().item() / math.sqrt(len(mws))
    assert mws.mean().item() < 0.5 * exact


# --- beta-TCVAE -------------------------------------------------------------------------------------------------
def test_beta_tcvae_with_unit_weights_is_the_elbo_loss_of_vae_mlp() -> None:
    tc = tiny_tc(alpha=1.0, beta=1.0, gamma=1.0, dataset_size=1000).train()
    vae = VanillaVAE(VanillaVAEConfig(**VanillaVAE.presets["tiny"], input_shape=IMAGE)).train()
    vae.load_state_dict(tc.state_dict())  # the same parameter names: vae-mlp's networks
    x = torch.rand(16, *IMAGE)
    torch.manual_seed(5)
    tc_out = tc(x)
    torch.manual_seed(5)
    vae_out = vae(x)
    assert tc_out.loss.item() == pytest.approx(vae_out.loss.item(), rel=1e-6)
    assert torch.allclose(tc_out.neg_elbo, vae_out.neg_elbo)
    assert tc_out.metrics["tc"].item() != 0.0  # still measured, with weight beta - 1 = 0


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_beta_tcvae_loss_is_eq_4_from_hand_computed_parts(estimator: str) -> None:
    model = tiny_tc(alpha=0.5, beta=6.0, gamma=2.0, dataset_size=1000, estimator=estimator).train()
    x = torch.rand(12, *IMAGE)
    torch.manual_seed(6)
    out = model(x)
    torch.manual_seed(6)
    posterior = model.encode(x)
    z = posterior.rsample()
    recon = -Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(posterior.mean, posterior.std), Normal(0.0, 1.0)).sum(1)
    mi, tc, dwkl = (part.mean().item() for part in hand_decomposition(z.detach().double(), DiagonalGaussian(
        posterior.mean.detach().double(), posterior.logvar.detach().double()), 1000, estimator))
    # eq. 4 is recon + alpha mi + beta tc + gamma dwkl with mi + tc + dwkl the sampled KL; the analytic KL replaces it
    expected = recon.mean().item() + kl.mean().item() + (0.5 - 1) * mi + (6.0 - 1) * tc + (2.0 - 1) * dwkl
    assert out.loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-3)
    assert [out.metrics[k].item() for k in ("mi", "tc", "dwkl")] == pytest.approx([mi, tc, dwkl], rel=1e-4, abs=1e-4)
    assert torch.allclose(out.neg_elbo, recon + kl, rtol=1e-5)  # the -ELBO keeps weight 1 whatever the weights


def test_beta_tcvae_on_a_batch_of_one_has_no_mi_or_tc_and_a_small_dataset_size_is_the_batch() -> None:
    model = tiny_tc(dataset_size=0).eval()
    with torch.no_grad():
        out = model(torch.rand(1, *IMAGE))
    assert out.metrics["mi"].item() == pytest.approx(0.0, abs=1e-5) and out.metrics["tc"].item() == pytest.approx(0.0, abs=1e-5)
    x = torch.rand(8, *IMAGE)
    small = tiny_tc(dataset_size=3).eval()
    small.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.manual_seed(7)
        out_small = small(x)
        torch.manual_seed(7)
        out_batch = model(x)  # dataset_size=0: N = B = 8
    assert out_small.metrics["mi"].item() == pytest.approx(out_batch.metrics["mi"].item(), rel=1e-6)


# --- DIP-VAE ----------------------------------------------------------------------------------------------------
def test_dip_covariances_and_penalties_match_torch_cov_and_hand_sums() -> None:
    posterior = random_posterior(7, 4, seed=8)
    cov_i = torch.cov(posterior.mean.T, correction=0)  # Cov_data[mu], normalised by B as disentanglement_lib
    cov_ii = cov_i + torch.diag(posterior.variance.mean(0))  # + E_data[Sigma]
    assert torch.allclose(dip_covariance(posterior, "i"), cov_i, atol=1e-12)
    assert torch.allclose(dip_covariance(posterior, "ii"), cov_ii, atol=1e-12)
    for cov in (cov_i, cov_ii):
        penalties = dip_penalties(cov)
        off = sum(cov[i, j].item() ** 2 for i in range(4) for j in range(4) if i != j)
        diag = sum((cov[i, i].item() - 1) ** 2 for i in range(4))
        assert penalties.offdiag.item() == pytest.approx(off, rel=1e-10)
        assert penalties.diag.item() == pytest.approx(diag, rel=1e-10)


def test_dip_penalties_vanish_for_codes_with_identity_covariance() -> None:
    generator = torch.Generator().manual_seed(9)
    mixing = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    raw = torch.randn(64, 3, generator=generator, dtype=torch.float64) @ mixing  # correlated codes
    centred = raw - raw.mean(0)
    whitened = centred @ torch.linalg.inv(torch.linalg.cholesky(centred.T @ centred / 64)).T  # Cov = I exactly
    type_i = DiagonalGaussian(whitened, torch.full_like(whitened, -3.0))
    assert max(dip_penalties(dip_covariance(type_i, "i"))) < 1e-20
    # type II: Cov[mu] = 0.7 I and E[Sigma] = 0.3 I add up to I; type I of the same codes sees the 0.7
    type_ii = DiagonalGaussian(whitened * math.sqrt(0.7), torch.full_like(whitened, math.log(0.3)))
    assert max(dip_penalties(dip_covariance(type_ii, "ii"))) < 1e-20
    assert dip_penalties(dip_covariance(type_ii, "i")).diag.item() == pytest.approx(3 * 0.3**2, rel=1e-9)
    correlated = DiagonalGaussian(raw, torch.zeros_like(raw))
    assert dip_penalties(dip_covariance(correlated, "i")).offdiag.item() > 0.1


@pytest.mark.parametrize("dip_type,lambda_d", [("i", 30.0), ("ii", 3.0)])
def test_dip_vae_loss_is_the_elbo_plus_the_weighted_penalties(dip_type: str, lambda_d: float) -> None:
    model = tiny_dip(dip_type=dip_type, lambda_od=3.0).train()
    assert model.config.diagonal_weight == lambda_d  # disentanglement_lib: 10 * lambda_od for I, lambda_od for II
    assert tiny_dip(dip_type=dip_type, lambda_od=3.0, lambda_d=0.5).config.diagonal_weight == 0.5
    x = torch.rand(16, *IMAGE)
    torch.manual_seed(10)
    out = model(x)
    torch.manual_seed(10)
    posterior = model.encode(x)
    recon = -Bernoulli(logits=model.decode(posterior.rsample()), validate_args=False).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(posterior.mean, posterior.std), Normal(0.0, 1.0)).sum(1)
    cov = torch.cov(posterior.mean.T, correction=0)
    if dip_type == "ii":
        cov = cov + torch.diag(posterior.variance.mean(0))
    off = (cov**2).sum() - (cov.diagonal() ** 2).sum()
    diag = ((cov.diagonal() - 1) ** 2).sum()
    expected = recon.mean() + kl.mean() + 3.0 * off + lambda_d * diag
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.metrics["cov_offdiag"].item() == pytest.approx(off.item(), rel=1e-4, abs=1e-6)
    assert out.metrics["cov_diag"].item() == pytest.approx(diag.item(), rel=1e-5)
    assert torch.allclose(out.neg_elbo, recon + kl, rtol=1e-5)


# --- both: training, the likelihood bound, conformance, config errors ---------------------------------------------
@pytest.fixture(scope="module")
def trained(digits) -> dict:
    runs = {}
    for name, model in (("beta-tcvae", tiny_tc(dataset_size=digits.train.x.shape[0])), ("dip-vae", tiny_dip())):
        torch.manual_seed(0)
        before = evaluate(model, digits.val.x)
        result = vaezoo.train(model, digits, epochs=8, batch_size=64, lr=3e-3, progress=False, seed=0)  # 184 steps
        runs[name] = (model, before, evaluate(model, digits.val.x), result)
    return runs


@pytest.mark.parametrize("name", ["beta-tcvae", "dip-vae"])
def test_training_on_digits_lowers_the_loss_and_the_neg_elbo(trained, name: str) -> None:
    _, before, after, result = trained[name]
    assert after["neg_elbo"] < 0.8 * before["neg_elbo"] and after["recon"] < before["recon"]
    assert result.history[-1]["train"]["loss"] < 0.8 * result.history[0]["train"]["loss"]  # the training objective
    metrics = ("mi", "tc", "dwkl") if name == "beta-tcvae" else ("cov_offdiag", "cov_diag")
    assert all(math.isfinite(after[m]) for m in metrics)


@pytest.mark.parametrize("name", ["beta-tcvae", "dip-vae"])
def test_importance_weighted_log_likelihood_is_above_the_elbo(trained, digits, name: str) -> None:
    model = trained[name][0]
    x = digits.test.x[:64]
    torch.manual_seed(11)
    with torch.no_grad():
        elbo = -torch.stack([model(x).neg_elbo for _ in range(20)]).mean(0)  # (B,), averaged over 20 draws
    log_px_1 = model.log_likelihood(x, iw_samples=1)
    log_px_100 = model.log_likelihood(x, iw_samples=100)
    assert log_px_1.mean().item() == pytest.approx(elbo.mean().item(), abs=0.5)  # k = 1 is the ELBO in expectation
    assert log_px_100.mean() > elbo.mean() + 0.1 and log_px_100.mean() > log_px_1.mean()


@pytest.mark.parametrize("model_class", [BetaTCVAE, DIPVAE])
def test_check_model_passes(model_class) -> None:
    report = check_model(model_class, quick=True)
    assert {"save_load", "loss_terms", "log_likelihood", "latent_sampler"} <= set(report.passed)


@pytest.mark.parametrize("config_class,overrides,fragment", [
    (BetaTCVAEConfig, {"estimator": "mws2"}, "estimator='mws2' is unknown"),
    (BetaTCVAEConfig, {"estimator": "stratified"}, "estimator='stratified'"),
    (BetaTCVAEConfig, {"dataset_size": -5}, "dataset_size=-5"),
    (BetaTCVAEConfig, {"dataset_size": 1.5}, "dataset_size=1.5"),
    (BetaTCVAEConfig, {"beta": -1.0}, "beta=-1.0"),
    (BetaTCVAEConfig, {"alpha": float("nan")}, "alpha=nan"),
    (DIPVAEConfig, {"dip_type": "iii"}, "dip_type='iii' is unknown"),
    (DIPVAEConfig, {"dip_type": "II"}, "dip_type='II'"),
    (DIPVAEConfig, {"lambda_od": -1.0}, "lambda_od=-1.0"),
    (DIPVAEConfig, {"lambda_d": -2.0}, "lambda_d=-2.0"),
])
def test_configs_refuse_bad_values_naming_them(config_class, overrides, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        config_class(**overrides)


def test_both_are_registered_under_their_names_with_a_tiny_preset() -> None:
    for name, model_class in (("beta-tcvae", BetaTCVAE), ("dip-vae", DIPVAE)):
        model = vaezoo.create_model(name, preset="tiny", input_shape=IMAGE)
        assert type(model) is model_class and model.config.latent_dim == 4
