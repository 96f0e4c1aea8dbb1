"""Behaviour and math of MIWAE (plugins/miwae.py, Mattei and Frellsen 2019): the bound over the observed values,
its equality with iwae on complete data, training and imputation with missing values, and the data path that
lets NaN through for it (and only for it).

    OMP_NUM_THREADS=1 python -m pytest tests/test_miwae.py -q
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import fit, mean_of
from torch.distributions import Normal

import vaezoo
from vaezoo import apps
from vaezoo.cli import main
from vaezoo.data import load_data
from vaezoo.errors import ConfigError, DataError, InputError
from vaezoo.testing import check_model
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.iwae import IWAE, IWAEConfig
from vaezoo_plugins.miwae import MIWAE, MIWAEConfig

IMAGE = (1, 8, 8)
MISSING_RATE = 0.3
TINY_SETS = ("--set", "hidden_dims=[32]", "--set", "latent_dim=4")  # the tiny preset, on the command line


@pytest.fixture(autouse=True)
def registered() -> None:
    """miwae is not in pyproject's entry points yet; conftest's _restore_registry undoes this after each test."""
    if "miwae" not in vaezoo.list_models():
        register_model(MIWAE, "miwae")


def tiny(**overrides) -> MIWAE:
    return MIWAE(MIWAEConfig(**{**MIWAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


def with_holes(x: torch.Tensor, rate: float = MISSING_RATE, seed: int = 0) -> torch.Tensor:
    """x with each value missing (NaN) independently with probability ``rate`` (missing completely at random)."""
    hidden = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < rate
    return x.masked_fill(hidden, math.nan)


def hand_terms(model: MIWAE, x: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x_o | z_k), log N(z_k; 0, I) - log q(z_k | x~)), each (K, B), written out: the Bernoulli log-density
    x log sigmoid(l) + (1 - x) log sigmoid(-l) summed over the observed values only (nansum skips the NaN ones),
    q from the encoder on x zero-filled, the noise drawn as the model draws it (one randn of (K * B, D)).
    Call right after seeding."""
    posterior = model.encode(torch.nan_to_num(x, nan=0.0))
    mean, std = posterior.mean.repeat(samples, 1), posterior.std.repeat(samples, 1)
    z = mean + std * torch.randn(samples * x.shape[0], model.config.latent_dim)
    logits = model.decode(z)
    x_rep = x.repeat(samples, *([1] * (x.dim() - 1)))
    log_px_given_z = torch.nansum(x_rep * F.logsigmoid(logits) + (1 - x_rep) * F.logsigmoid(-logits),
                                  dim=tuple(range(1, x.dim())))
    log_prior_ratio = Normal(0.0, 1.0).log_prob(z).sum(1) - Normal(mean, std).log_prob(z).sum(1)
    return log_px_given_z.view(samples, -1), log_prior_ratio.view(samples, -1)


def log_mean_exp(log_weights: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_weights.double(), 0) - math.log(log_weights.shape[0])


# --- the bound -----------------------------------------------------------------------------------------
def test_the_bound_sums_the_observed_values_only_as_a_hand_computation_does(digits_splits) -> None:
    model = tiny(iw_samples=7).eval()
    x = with_holes(digits_splits.test.x[:6])
    torch.manual_seed(3)
    bound = model.training_bound(x)
    torch.manual_seed(3)
    expected = log_mean_exp(sum(hand_terms(model, x, 7)))
    torch.testing.assert_close(bound.double(), expected, rtol=0, atol=1e-4)


def test_forward_reports_the_bound_and_a_one_sample_elbo_over_the_observed_values(digits_splits) -> None:
    model = tiny(iw_samples=4).eval()
    x = with_holes(digits_splits.test.x[:5])
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    log_px_given_z, log_prior_ratio = hand_terms(model, x, 4)
    torch.testing.assert_close(-out.loss.double(), log_mean_exp(log_px_given_z + log_prior_ratio).mean(),
                               rtol=0, atol=1e-4)
    assert torch.equal(out.metrics["iw_bound"], -out.loss.detach())
    posterior = model.encode(torch.nan_to_num(x, nan=0.0))
    kl = 0.5 * (posterior.mean**2 + posterior.variance - posterior.logvar - 1).sum(1)  # KL(N(mu, s^2) || N(0, I))
    torch.testing.assert_close(out.neg_elbo, -log_px_given_z[0] + kl, rtol=0, atol=1e-4)  # the first draw, weight 1
    assert float(out.metrics["observed_fraction"]) == pytest.approx(float((~torch.isnan(x)).float().mean()))


def test_log_likelihood_on_nan_data_bounds_log_p_of_the_observed_values(digits_splits) -> None:
    model = tiny().eval()
    x = with_holes(digits_splits.test.x[:8])
    torch.manual_seed(5)
    log_px = model.log_likelihood(x, iw_samples=50)
    torch.manual_seed(5)
    torch.testing.assert_close(log_px.double(), log_mean_exp(sum(hand_terms(model, x, 50))), rtol=0, atol=1e-4)
    # With every value missing, log p(x_o) = log 1 = 0: the weights p(z) / q(z | x~) have mean 1, so with 2000 of
    # them the estimate is within a few hundredths of 0; scoring the hidden zeros too would put it near -44 nats.
    nothing = model.log_likelihood(torch.full((4, *IMAGE), math.nan), iw_samples=2000)
    assert bool((nothing.abs() < 0.05).all()), nothing
    # A valid bound on log p(x_o): above the one-sample ELBO over the same observed values, on average.
    with torch.no_grad():
        elbo = -torch.stack([model(x).neg_elbo for _ in range(20)]).mean(0)
    assert float(log_px.mean()) > float(elbo.mean())


def test_on_complete_data_it_is_iwae_with_the_iwae_objective(digits_splits) -> None:
    """Same networks, same draws, same numbers: a miwae state dict loads into iwae strictly, and every output matches."""
    miwae = tiny(iw_samples=5).eval()
    iwae = IWAE(IWAEConfig(**IWAE.presets["tiny"], input_shape=IMAGE, iw_samples=5, objective="iwae")).eval()
    iwae.load_state_dict(miwae.state_dict())
    x = digits_splits.test.x[:16]
    outputs = []
    for model in (miwae, iwae):
        torch.manual_seed(2)
        out = model(x)
        torch.manual_seed(2)
        outputs.append((out.loss, out.neg_elbo, out.params, out.metrics["iw_bound"], model.log_likelihood(x, iw_samples=30)))
    for mine, theirs in zip(*outputs):
        assert torch.equal(mine, theirs)
    for model in (miwae, iwae):  # the gradients too, in training mode
        model.train().zero_grad()
        torch.manual_seed(4)
        model(x).loss.backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(miwae.parameters(), iwae.parameters()))


# --- training and imputation ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_on_holes(digits_splits) -> tuple[MIWAE, dict[str, list[float]]]:
    """A tiny MIWAE after 600 steps on the digits' train split with 30% of the values missing at random."""
    torch.manual_seed(0)
    model = tiny()
    history = fit(model, with_holes(digits_splits.train.x), None, steps=600, lr=3e-3)
    return model.eval(), history


def test_training_with_30_percent_missing_lowers_the_loss(trained_on_holes) -> None:
    _, history = trained_on_holes
    losses = history["main"]
    assert all(math.isfinite(v) for v in losses)
    assert mean_of(losses, last=True) < 0.8 * mean_of(losses, last=False), (losses[:3], losses[-3:])


def test_importance_imputation_beats_the_mean_fill_on_held_out_missing_values(trained_on_holes, digits_splits) -> None:
    model, _ = trained_on_holes
    truth = digits_splits.test.x
    holes = with_holes(truth, seed=1)
    hidden = torch.isnan(holes)
    filled = apps.impute(model, holes, method="importance", seed=0)
    assert torch.equal(filled[~hidden], truth[~hidden])  # observed values come back bit for bit
    train_mean = apps.observed_mean_fill(with_holes(digits_splits.train.x).nan_to_num(),
                                         torch.isnan(with_holes(digits_splits.train.x)))
    model_error = float(((filled - truth)[hidden] ** 2).mean())
    mean_error = float(((train_mean.expand_as(truth) - truth)[hidden] ** 2).mean())
    assert model_error < 0.8 * mean_error, (model_error, mean_error)


def test_one_round_of_importance_imputation_from_zero_fill_is_the_papers_estimate(trained_on_holes, digits_splits) -> None:
    """E[x_m | x_o] ~= sum_k w_k E[x_m | z_k] / sum_k w_k with z_k ~ q(z | x~), w_k = p(x_o | z_k) p(z_k) / q(z_k | x~)."""
    model, _ = trained_on_holes
    holes = with_holes(digits_splits.test.x[:12], seed=2)
    hidden = torch.isnan(holes)
    filled = apps.impute(model, holes, fill=torch.zeros(1, *IMAGE), method="importance", iterations=1,
                         iw_samples=30, seed=7)
    torch.manual_seed(7)
    posterior = model.encode(torch.nan_to_num(holes, nan=0.0))
    z = posterior.mean.repeat(30, 1) + posterior.std.repeat(30, 1) * torch.randn(30 * 12, model.config.latent_dim)
    weights = torch.softmax(sum(_terms_at(model, holes, z, posterior)), dim=0)  # (K, B), self-normalised
    means = torch.sigmoid(model.decode(z)).view(30, 12, *IMAGE)  # E[x | z_k] under the Bernoulli decoder
    expected = (weights.view(30, 12, 1, 1, 1) * means).sum(0)
    torch.testing.assert_close(filled[hidden], expected[hidden], rtol=0, atol=1e-5)


def _terms_at(model: MIWAE, x: torch.Tensor, z: torch.Tensor, posterior) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x_o | z) and log p(z) - log q(z | x~) at given z (K * B, D), each (K, B)."""
    samples = z.shape[0] // x.shape[0]
    logits = model.decode(z)
    x_rep = x.repeat(samples, 1, 1, 1)
    log_px = torch.nansum(x_rep * F.logsigmoid(logits) + (1 - x_rep) * F.logsigmoid(-logits), dim=(1, 2, 3))
    mean, std = posterior.mean.repeat(samples, 1), posterior.std.repeat(samples, 1)
    ratio = Normal(0.0, 1.0).log_prob(z).sum(1) - Normal(mean, std).log_prob(z).sum(1)
    return log_px.view(samples, -1), ratio.view(samples, -1)


# --- inputs and config -------------------------------------------------------------------------------------
def test_inf_is_refused_and_nan_is_not(digits_splits) -> None:
    model = tiny().eval()
    x = with_holes(digits_splits.test.x[:4])
    assert model(x).neg_elbo.isfinite().all()
    assert model.reconstruct(x).isfinite().all()  # the encoder reads x zero-filled
    with pytest.raises(InputError, match="Inf"):
        model(x.nan_to_num(nan=math.inf))
    with pytest.raises(InputError, match=r"values in \[0, 2\]"):  # the observed values must still fit the likelihood
        model(x * 2)


def test_dynamic_binarization_draws_the_observed_values_and_keeps_the_missing_ones() -> None:
    model = tiny(dynamic_binarization=True).train()
    x = with_holes(torch.rand(32, *IMAGE))
    target = model.prepare_target(x)
    assert torch.equal(torch.isnan(target), torch.isnan(x))
    assert set(target[~torch.isnan(target)].unique().tolist()) <= {0.0, 1.0}
    assert model(x).loss.isfinite()


def test_config_refuses_a_bad_k_and_kl_warmup() -> None:
    with pytest.raises(ConfigError, match="iw_samples=0"):
        MIWAEConfig(iw_samples=0)
    with pytest.raises(ConfigError, match="kl_warmup_steps=10 has nothing to warm up"):
        MIWAEConfig(kl_warmup_steps=10)


def test_check_model_passes() -> None:
    check_model(MIWAE, quick=True)


# --- the data path: NaN through load_data, the trainer, eval and the CLI for miwae only ----------------------
def test_load_data_keeps_nan_as_missing_only_when_asked_and_scales_by_the_observed_values(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    rows = [[float(i), 10.0 * i] for i in range(20)]
    rows[3][1] = math.nan
    table.write_text("a,b\n" + "".join(f"{a},{'' if math.isnan(b) else b}\n" for a, b in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"1 NaN and 0 Inf .* or train `miwae`, which models missing values"):
        load_data(str(table))
    splits = load_data(str(table), allow_missing=True, val_fraction=0.0, test_fraction=0.0)
    x = splits.train.x
    assert int(torch.isnan(x).sum()) == 1 and bool(torch.isnan(x[:, 1]).any())
    raw = np.array(rows, dtype=np.float64)  # the train split is every row here; its order is the split's
    low, high = np.nanmin(raw, 0), np.nanmax(raw, 0)
    observed = ~torch.isnan(x)
    assert torch.all(x[observed] >= 0) and torch.all(x[observed] <= 1)
    expected = sorted(((raw[:, 1][~np.isnan(raw[:, 1])] - low[1]) / (high[1] - low[1])).tolist())
    assert sorted(x[:, 1][observed[:, 1]].tolist()) == pytest.approx(expected)


def test_inf_stays_refused_even_for_a_model_of_missing_values(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((20, 6)).astype(np.float32)
    x[2, 3], x[4, 1] = np.nan, np.inf
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(DataError, match=r"1 Inf values \(first at sample 4, index \(4, 1\)\).*NaN marks a missing value"):
        load_data(str(tmp_path / "inf.npy"), allow_missing=True)
    result = CliRunner().invoke(main, ["train", "miwae", "--data", str(tmp_path / "inf.npy"), "--epochs", "1",
                                       "--out", str(tmp_path / "run"), "--quiet", *TINY_SETS])
    assert result.exit_code != 0 and "Inf" in result.output and "Traceback" not in result.output


def test_a_hand_made_split_with_nan_trains_miwae_and_is_refused_for_vae_mlp() -> None:
    splits = load_data("digits")
    splits.train.x.copy_(with_holes(splits.train.x))
    with pytest.raises(DataError, match=r"the train split holds NaN or Inf values.*train `miwae`"):
        vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=IMAGE), splits, epochs=1, progress=False)
    result = vaezoo.train(tiny(), splits, epochs=1, progress=False)
    assert math.isfinite(result.val_metrics["neg_elbo"])


def test_cli_trains_and_evaluates_miwae_on_an_npy_with_nan_and_refuses_it_for_vae_mlp(tmp_path: Path, digits) -> None:
    x = with_holes(digits[0][:400]).numpy()
    data = tmp_path / "holes.npy"
    np.save(data, x)
    refused = CliRunner().invoke(main, ["train", "vae-mlp", "--data", str(data), "--epochs", "1",
                                        "--out", str(tmp_path / "vae"), "--quiet", *TINY_SETS])
    assert refused.exit_code != 0
    message = refused.output.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert "NaN" in message and "miwae" in message and str(data) in message
    run = tmp_path / "miwae"
    result = CliRunner().invoke(main, ["train", "miwae", "--data", str(data), "--epochs", "2", "--out", str(run),
                                       "--quiet", *TINY_SETS])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "samples.png", "loss_curve.png", "README.md", "config.json"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(math.isfinite(r["val"]["neg_elbo"]) for r in records)
    assert 0.6 < records[-1]["val"]["observed_fraction"] < 0.8  # 30% missing
    evaluated = CliRunner().invoke(main, ["eval", str(run), "--json", "--iw-samples", "10"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.output)
    assert math.isfinite(metrics["nll"]) and metrics["nll"] <= metrics["neg_elbo"] + 1.0  # log p(x_o) >= ELBO, noisily
    assert 0.6 < metrics["observed_fraction"] < 0.8  # evaluated on the test split's observed values, NaN kept
    resumed = CliRunner().invoke(main, ["train", "miwae", "--resume", "--epochs", "3", "--out", str(run), "--quiet"])
    assert resumed.exit_code == 0, resumed.output  # the resumed run reloads the data with its NaNs too
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_bits_per_dim_on_nan_data_count_the_observed_values_only(digits_splits) -> None:
    """The nats of an example with NaN are of its observed values; bits/dim divides by those, not by all 64."""
    from vaezoo.eval.evaluate import evaluate

    x = with_holes(digits_splits.test.x[:40])
    metrics = evaluate(tiny(), x, iw_samples=4, iw_examples=10)
    observed = (~torch.isnan(x)).flatten(1).sum(1).double()
    assert metrics["neg_elbo_bits_per_dim"] == pytest.approx(metrics["neg_elbo"] / (observed.mean().item() * math.log(2)))
    assert metrics["nll_bits_per_dim"] == pytest.approx(metrics["nll"] / (observed[:10].mean().item() * math.log(2)))
    complete = evaluate(tiny(), digits_splits.test.x[:40])
    assert complete["neg_elbo_bits_per_dim"] == pytest.approx(complete["neg_elbo"] / (64 * math.log(2)))


def test_the_apps_take_nan_for_miwae_and_refuse_it_for_other_variants(digits_splits) -> None:
    x = with_holes(digits_splits.test.x[:8])
    assert apps.reconstruct(tiny().eval(), x).isfinite().all()
    with pytest.raises(InputError, match="miwae take missing values"):
        apps.reconstruct(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=IMAGE), x)

