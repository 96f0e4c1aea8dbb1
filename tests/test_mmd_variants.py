"""Behaviour and math of the MMD variants: the estimator (vaezoo/core/mmd.py), InfoVAE (plugins/info_vae.py) and
WAE-MMD (plugins/wae.py), whose missing ELBO is reported as n/a.

    OMP_NUM_THREADS=1 python -m pytest tests/test_mmd_variants.py -q
"""
from __future__ import annotations

import math

import pytest
import torch

import vaezoo
from vaezoo.bench.measure import _likelihood, measure_anomaly
from vaezoo.core.mmd import IMQ_SCALES, kernel_matrix, mmd_squared
from vaezoo.data import load_data
from vaezoo.errors import CapabilityError, ConfigError, InputError
from vaezoo.eval.evaluate import NO_ELBO, evaluate
from vaezoo.testing import check_model
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.info_vae import InfoVAE, InfoVAEConfig
from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig
from vaezoo_plugins.wae import WAE, WAEConfig

IMAGE = (1, 8, 8)


@pytest.fixture(autouse=True)
def registered() -> None:
    """Neither is in pyproject's entry points yet; conftest's _restore_registry undoes this after each test."""
    for model_class, name in ((InfoVAE, "info-vae"), (WAE, "wae")):
        if name not in vaezoo.list_models():
            register_model(model_class, name)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def tiny_info(**overrides) -> InfoVAE:
    return InfoVAE(InfoVAEConfig(**{**InfoVAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


def tiny_wae(**overrides) -> WAE:
    return WAE(WAEConfig(**{**WAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


# --- an independent MMD: the definitions written out, element by element ------------------------------
def hand_kernel(a: list[float], b: list[float], kernel: str, bandwidth: float, scales: tuple[float, ...]) -> float:
    distance = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
    base = 2.0 * len(a) * bandwidth**2
    if kernel == "imq":
        return sum(s * base / (s * base + distance) for s in scales)
    return sum(math.exp(-distance / (s * base)) for s in scales)


def hand_mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", bandwidth: float = 1.0,
             scales: tuple[float, ...] = (1.0,)) -> float:
    """Gretton et al.'s MMD^2_u by double loops over Python floats."""
    xs, ys = x.double().tolist(), y.double().tolist()
    n, m = len(xs), len(ys)

    def k(a: list[float], b: list[float]) -> float:
        return hand_kernel(a, b, kernel, bandwidth, scales)

    within_x = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    within_y = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(a, b) for a in xs for b in ys) / (n * m)
    return within_x + within_y - 2 * cross


# --- the estimator ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,scales", [("imq", (1.0,)), ("imq", IMQ_SCALES), ("rbf", (1.0,)), ("rbf", (0.5, 2.0))])
def test_mmd_matches_a_hand_double_loop(kernel: str, scales: tuple[float, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=generator), torch.randn(4, 3, generator=generator) + 0.5  # n != m on purpose
    expected = hand_mmd(x, y, kernel, 0.7, scales)
    assert mmd_squared(x, y, kernel, 0.7, scales).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kernel,scales", [("imq", IMQ_SCALES), ("rbf", (1.0,))])
def test_mmd_is_near_zero_for_one_distribution_and_clearly_positive_for_a_shift(kernel: str, scales) -> None:
    generator = torch.Generator().manual_seed(1)

    def draw() -> torch.Tensor:
        return torch.randn(400, 4, generator=generator)

    same = mmd_squared(draw(), draw(), kernel, 1.0, scales).item()
    shifted = mmd_squared(draw() + 1.0, draw(), kernel, 1.0, scales).item()
    scaled = mmd_squared(0.3 * draw(), draw(), kernel, 1.0, scales).item()  # same mean, narrower: MMD sees it too
    # At n = 400 the estimate of one distribution spreads by about 0.005 (imq, 7 scales) or 0.001 (rbf) around 0.
    assert abs(same) < 0.02
    assert shifted > 0.1 and scaled > 0.1
    assert min(shifted, scaled) > 20 * abs(same)


def test_mmd_is_unbiased_where_the_plug_in_estimate_is_not() -> None:
    """Over many small samples of one distribution the mean of MMD^2_u is 0 within its standard error; the
    V-statistic (diagonals kept) of the same samples is clearly positive: the test tells the two apart."""
    generator = torch.Generator().manual_seed(2)
    unbiased, plug_in = [], []
    for _ in range(400):
        x, y = torch.randn(4, 2, generator=generator), torch.randn(4, 2, generator=generator)
        unbiased.append(mmd_squared(x, y).item())
        plug_in.append((kernel_matrix(x, x).mean() + kernel_matrix(y, y).mean() - 2 * kernel_matrix(x, y).mean()).item())
    values = torch.tensor(unbiased)
    standard_error = values.std().item() / math.sqrt(len(unbiased))
    assert abs(values.mean().item()) < 4 * standard_error
    assert torch.tensor(plug_in).mean().item() > 10 * standard_error


def test_mmd_has_finite_gradients_at_coincident_points_and_no_estimate_from_one_draw() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], requires_grad=True)  # two equal rows: distance 0
    mmd_squared(x, x.detach().clone()).backward()
    assert torch.isfinite(x.grad).all()
    assert mmd_squared(torch.randn(1, 3), torch.randn(5, 3)).item() == 0.0
    with pytest.raises(InputError, match="of one D"):
        mmd_squared(torch.randn(4, 3), torch.randn(4, 2))


@pytest.mark.parametrize("config_class,overrides,fragment", [
    (InfoVAEConfig, {"kernel": "gauss"}, "kernel='gauss' is unknown"),
    (InfoVAEConfig, {"alpha": 1.5}, "alpha=1.5"),
    (InfoVAEConfig, {"info_lambda": 0.0}, "info_lambda=0.0"),
    (InfoVAEConfig, {"alpha": -1.0, "info_lambda": 1.0}, "raise info_lambda to at least 2"),
    (InfoVAEConfig, {"kernel_bandwidth": 0.0}, "kernel_bandwidth=0.0"),
    (WAEConfig, {"kernel_scales": ()}, "kernel_scales=()"),
    (WAEConfig, {"kernel_scales": (1.0, -2.0)}, "holds -2.0"),
    (WAEConfig, {"wae_lambda": -1.0}, "wae_lambda=-1.0"),
    (WAEConfig, {"kl_warmup_steps": 100}, "kl_warmup_steps=100"),
])
def test_configs_refuse_bad_values_naming_them(config_class, overrides, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        config_class(**overrides)


# --- InfoVAE ------------------------------------------------------------------------------------------
def test_info_vae_loss_is_eq_6_from_its_parts() -> None:
    model = tiny_info(alpha=0.3, info_lambda=5.0, kernel="rbf", kernel_scales=(0.5, 1.0)).train()
    x = torch.rand(16, *IMAGE)
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)  # the same draws, in forward's order: z ~ q(z | x), then the prior's
    posterior = model.encode(x)
    z = posterior.rsample()
    recon = -torch.distributions.Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).flatten(1).sum(1)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(posterior.mean, posterior.std), torch.distributions.Normal(0.0, 1.0)).sum(1)
    mmd = hand_mmd(z.detach(), torch.randn_like(z), "rbf", 1.0, (0.5, 1.0))
    expected = recon.mean() + (1 - 0.3) * kl.mean() + (0.3 + 5.0 - 1) * mmd
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.metrics["mmd"].item() == pytest.approx(mmd, rel=1e-4, abs=1e-6)
    assert torch.allclose(out.neg_elbo, recon + kl, rtol=1e-5)  # the -ELBO keeps weight 1 whatever alpha and lambda


def test_info_vae_with_alpha_0_and_lambda_1_is_the_elbo_loss_of_vae_mlp() -> None:
    info = tiny_info(alpha=0.0, info_lambda=1.0).train()
    vae = VanillaVAE(VanillaVAEConfig(**VanillaVAE.presets["tiny"], input_shape=IMAGE)).train()
    vae.load_state_dict(info.state_dict())  # the same parameter names: vae-mlp's networks
    x = torch.rand(16, *IMAGE)
    torch.manual_seed(4)
    info_out = info(x)
    torch.manual_seed(4)
    vae_out = vae(x)
    assert info_out.loss.item() == pytest.approx(vae_out.loss.item(), rel=1e-6)
    assert info_out.loss.item() == pytest.approx(info_out.neg_elbo.mean().item(), rel=1e-6)
    assert info_out.metrics["mmd"].item() != 0.0  # still measured, with weight alpha + lambda - 1 = 0


@pytest.fixture(scope="module")
def trained_info(digits) -> tuple[InfoVAE, dict, dict]:
    torch.manual_seed(0)
    model = tiny_info()
    before = evaluate(model, digits.val.x)
    vaezoo.train(model, digits, epochs=10, batch_size=64, lr=3e-3, progress=False, seed=0)  # 220 steps
    return model, before, evaluate(model, digits.val.x)


def test_training_info_vae_on_digits_lowers_its_loss_and_its_neg_elbo(trained_info) -> None:
    _, before, after = trained_info
    assert after["neg_elbo"] < 0.8 * before["neg_elbo"]
    assert after["recon"] < before["recon"]
    assert math.isfinite(after["mmd"])


def test_info_vae_importance_weighted_log_likelihood_is_above_its_elbo(trained_info, digits) -> None:
    model, _, _ = trained_info
    x = digits.test.x[:64]
    torch.manual_seed(5)
    with torch.no_grad():
        elbo = -torch.stack([model(x).neg_elbo for _ in range(20)]).mean(0)  # (B,), averaged over 20 draws
    log_px_1 = model.log_likelihood(x, iw_samples=1)
    log_px_100 = model.log_likelihood(x, iw_samples=100)
    assert log_px_1.mean().item() == pytest.approx(elbo.mean().item(), abs=0.5)  # k = 1 is the ELBO in expectation
    assert log_px_100.mean() > elbo.mean() + 0.1  # and it rises with k
    assert log_px_100.mean() > log_px_1.mean()


# --- WAE ----------------------------------------------------------------------------------------------
def test_wae_loss_is_recon_plus_lambda_mmd_of_deterministic_codes() -> None:
    model = tiny_wae(wae_lambda=7.0).train()
    x = torch.rand(16, *IMAGE)
    torch.manual_seed(6)
    out = model(x)
    torch.manual_seed(6)  # forward draws only the prior sample
    z = model.code_head(model.encoder(x))
    assert torch.equal(model.encode(x).rsample(), z)  # deterministic: every draw is the code
    recon = -torch.distributions.Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).flatten(1).sum(1)
    mmd = hand_mmd(z.detach(), torch.randn_like(z), "imq", 1.0, IMQ_SCALES)
    assert out.loss.item() == pytest.approx(recon.mean().item() + 7.0 * mmd, rel=1e-5)
    assert out.recon.item() == pytest.approx(recon.mean().item(), rel=1e-5)
    assert torch.isinf(out.kl) and torch.isinf(out.neg_elbo).all()  # KL of a point mass to N(0, I): +inf


def test_wae_trains_on_digits_by_its_loss(digits) -> None:
    torch.manual_seed(0)
    model = tiny_wae()
    before = evaluate(model, digits.val.x)
    result = vaezoo.train(model, digits, epochs=10, batch_size=64, lr=3e-3, progress=False, seed=0)
    after = evaluate(model, digits.val.x)
    assert {"neg_elbo", "kl"}.isdisjoint(after) and {"loss", "recon", "mmd"} <= set(after)
    assert after["loss"] < 0.8 * before["loss"] and after["recon"] < before["recon"]
    assert "loss" in result.history[-1]["val"] and "neg_elbo" not in result.history[-1]["val"]  # validated by loss
    assert math.isfinite(result.history[-1]["train"]["loss"])
    # the codes end up near the prior: a fresh batch's MMD^2 is small next to a shifted prior's
    with torch.no_grad():
        codes = model.encode(digits.val.x[:256]).mean
    assert mmd_squared(codes, torch.randn_like(codes), scales=IMQ_SCALES) < 0.2 * mmd_squared(
        codes + 2.0, torch.randn_like(codes), scales=IMQ_SCALES)


def test_wae_reports_its_missing_elbo_as_n_a_with_the_reason(digits) -> None:
    model = tiny_wae().eval()
    x = digits.test.x[:100]
    metrics = evaluate(model, x, iw_samples=10)
    assert "neg_elbo" not in metrics and "kl" not in metrics and "nll" not in metrics
    assert "neg_elbo_bits_per_dim" not in metrics
    torch.manual_seed(0)
    with torch.no_grad():
        assert metrics["loss"] == pytest.approx(model(x).loss.item(), rel=1e-5)  # one batch, evaluate's seed: the same
    with pytest.raises(CapabilityError, match="no -ELBO either"):  # not "use the -ELBO", which it lacks
        model.log_likelihood(x, iw_samples=10)
    with pytest.raises(CapabilityError, match="no -ELBO to score by"):  # not a column of +inf scores (AUROC 0.5)
        vaezoo.apps.neg_elbo_scores(model, x)
    record, notes = {}, {}
    settings = {"iw_samples": 10, "seed": 0, "iw_examples": 50, "pretrained": False, "holdout_class": 0}
    _likelihood(model, digits, settings, ["mmd"], record, notes)
    assert record["neg_elbo"] is None and record["kl"] is None and record["nll"] is None
    assert record["neg_elbo_bits_per_dim"] is None and math.isfinite(record["recon"]) and math.isfinite(record["mmd"])
    assert notes["neg_elbo"] == notes["kl"] == notes["neg_elbo_bits_per_dim"] == NO_ELBO
    assert "neg_elbo is its bound" not in notes["nll"]
    anomaly_record, anomaly_notes = {}, {}
    measure_anomaly("wae", WAE, digits, settings, {}, 1, {}, anomaly_record, anomaly_notes)
    assert "anomaly_auroc" not in anomaly_record and NO_ELBO in anomaly_notes["anomaly_auroc"]


def test_an_elbo_variant_still_reports_its_elbo_in_the_benchmark(digits) -> None:
    model = tiny_info().eval()
    record, notes = {}, {}
    _likelihood(model, digits, {"iw_samples": 0, "seed": 0, "iw_examples": None}, ["mmd"], record, notes)
    assert math.isfinite(record["neg_elbo"]) and math.isfinite(record["kl"]) and "neg_elbo" not in notes
    assert record["neg_elbo"] == pytest.approx(record["recon"] + record["kl"], rel=1e-5)


def test_both_sample_from_the_prior_and_from_a_fitted_gmm(digits) -> None:
    for model in (tiny_info(), tiny_wae()):
        model.eval()
        assert model.sample(5).shape == (5, *IMAGE)
        vaezoo.apps.fit_sampler(model, digits.train.x[:300], components=3)
        samples = model.sample(5, sampler="gmm")
        assert samples.shape == (5, *IMAGE) and bool(((samples >= 0) & (samples <= 1)).all())


@pytest.mark.parametrize("model_class", [InfoVAE, WAE])
def test_check_model_passes(model_class) -> None:
    report = check_model(model_class, quick=True)
    assert "save_load" in report.passed and "loss_terms" in report.passed
    if model_class is WAE:
        assert "log_likelihood" in report.skipped
    else:
        assert "log_likelihood" in report.passed


def test_capabilities_say_what_each_variant_has() -> None:
    assert InfoVAE.capabilities.elbo and InfoVAE.capabilities.log_likelihood
    assert not WAE.capabilities.elbo and not WAE.capabilities.log_likelihood and not WAE.capabilities.mwg_imputation
    assert WAE.capabilities.latent_sampler and vaezoo.Capabilities().elbo  # every existing variant keeps its ELBO
