"""Behaviour and math of the importance-weighted autoencoders (plugins/iwae.py): IWAE, MIWAE, PIWAE, CIWAE.

    OMP_NUM_THREADS=1 python -m pytest tests/test_iwae.py -q
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import fit
from torch.distributions import Bernoulli, Normal, kl_divergence

import vaezoo
from vaezoo.data import load_data
from vaezoo.errors import ConfigError, InputError
from vaezoo.testing import check_model
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.iwae import IWAE, IWAEConfig

IMAGE = (1, 8, 8)
OBJECTIVE_CONFIGS = [  # one config per objective, with M groups where the objective has them
    {"objective": "iwae", "iw_samples": 5},
    {"objective": "miwae", "iw_samples": 3, "iw_groups": 4},
    {"objective": "piwae", "iw_samples": 3, "iw_groups": 4},
    {"objective": "ciwae", "iw_samples": 5, "ciwae_beta": 0.3},
]


@pytest.fixture(autouse=True)
def registered() -> None:
    """iwae is not in pyproject's entry points yet; conftest's _restore_registry undoes this after each test."""
    if "iwae" not in vaezoo.list_models():
        register_model(IWAE, "iwae")


def tiny(**overrides) -> IWAE:
    return IWAE(IWAEConfig(**{**IWAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


@pytest.fixture(scope="module")
def trained_state() -> dict[str, torch.Tensor]:
    """A tiny IWAE (k = 5) after 300 steps on the digits: its posteriors carry ~2 nats of KL, so the bounds differ."""
    torch.manual_seed(0)
    train = load_data("digits").train.x
    model = tiny().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model(train[torch.randint(0, len(train), (64,))]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.state_dict()


def trained(state: dict[str, torch.Tensor], **overrides) -> IWAE:
    model = tiny(**overrides)
    model.load_state_dict(state)
    return model.eval()


def hand_log_weights(model: IWAE, x: torch.Tensor, samples: int) -> torch.Tensor:
    """log p(x | z) + log N(z; 0, I) - log q(z | x) via torch.distributions, (S, B), with the noise drawn as the
    model draws it (torch.randn of (S * B, D), row s * B + b for draw s of example b); call right after seeding."""
    posterior = model.encode(x)
    mean, std = posterior.mean.repeat(samples, 1), posterior.std.repeat(samples, 1)
    z = mean + std * torch.randn(samples * x.shape[0], model.config.latent_dim)
    x_rep = x.repeat(samples, 1, 1, 1)
    params = model.decode(z)
    if model.config.likelihood == "bernoulli":
        log_px_given_z = Bernoulli(logits=params, validate_args=False).log_prob(x_rep)
    else:  # the learned per-channel scale of the Gaussian likelihood
        log_px_given_z = Normal(params, model.likelihood.log_scale.exp().view(1, -1, 1, 1)).log_prob(x_rep)
    log_pz, log_qz = Normal(0.0, 1.0).log_prob(z).sum(1), Normal(mean, std).log_prob(z).sum(1)
    return (log_px_given_z.flatten(1).sum(1) + log_pz - log_qz).view(samples, x.shape[0])


def log_mean_exp(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/S) sum_s exp(log w_s) over dim 0, written out in float64 (the weights here are ~e^-45, far from underflow)."""
    return log_weights.double().exp().mean(0).log()


def hand_bound(log_weights: torch.Tensor, config: dict) -> torch.Tensor:
    """Each objective's bound per example, written out from Burda et al. (eq. 8) and Rainforth et al. (MIWAE, CIWAE)."""
    objective, samples = config["objective"], config["iw_samples"]
    if objective == "miwae":  # draws m*K .. m*K + K - 1 form group m
        groups = [log_weights[m * samples:(m + 1) * samples] for m in range(config["iw_groups"])]
        return sum(log_mean_exp(group) for group in groups) / len(groups)
    if objective == "ciwae":
        beta = config["ciwae_beta"]
        return beta * log_weights.double().mean(0) + (1 - beta) * log_mean_exp(log_weights)
    return log_mean_exp(log_weights)  # iwae, and piwae's reported value: IWAE over all M * K draws


@pytest.mark.parametrize("config", OBJECTIVE_CONFIGS, ids=[c["objective"] for c in OBJECTIVE_CONFIGS])
def test_each_objective_matches_a_hand_computation_from_the_same_log_weights(config: dict) -> None:
    model = tiny(**config).train()
    x = load_data("digits").test.x[:6]
    samples = config["iw_samples"] * config.get("iw_groups", 1)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)  # the same noise
    with torch.no_grad():
        log_weights = hand_log_weights(model, x, samples)
        bound = hand_bound(log_weights, config)
        posterior = model.encode(x)
        torch.manual_seed(1)
        first_draw = posterior.mean + posterior.std * torch.randn(samples * 6, 4)[:6]
        recon = -Bernoulli(logits=model.decode(first_draw), validate_args=False).log_prob(x).flatten(1).sum(1)
        kl = kl_divergence(Normal(posterior.mean, posterior.std), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(out.loss.double(), -bound.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.metrics["iw_bound"].double(), bound.mean(), rtol=1e-5, atol=1e-4)
    # The reported figures are the one-sample ELBO of the first draw with the analytic KL, weight 1.
    torch.testing.assert_close(out.neg_elbo, recon + kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.recon, recon.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.kl, kl.mean(), rtol=1e-5, atol=1e-5)
    assert out.params.shape == (6, *IMAGE)
    torch.manual_seed(1)
    with torch.no_grad():  # without gradients (evaluation) the value is the same; piwae skips its second decoder pass
        torch.testing.assert_close(model(x).loss, out.loss.detach())


def test_bound_at_one_sample_is_the_elbo_in_expectation(trained_state) -> None:
    """E_q[log w] (Monte Carlo KL) = -E_q[neg_elbo] (analytic KL), within 4 standard errors."""
    model = trained(trained_state, iw_samples=1)
    x, reps = load_data("digits").test.x[:3], 4000
    x_rep = x.repeat(reps, 1, 1, 1)
    with torch.no_grad():
        bound = model.training_bound(x_rep).view(reps, 3)
        out = model(x_rep)
    neg_elbo = out.neg_elbo.view(reps, 3)
    assert out.kl > 0.5  # posteriors far from the prior: the Monte Carlo KL and the analytic one must agree
    error = (bound.var(0) / reps + neg_elbo.var(0) / reps).sqrt()
    assert ((bound.mean(0) + neg_elbo.mean(0)).abs() < 4 * error).all(), (bound.mean(0), -neg_elbo.mean(0), error)


def test_bound_rises_with_the_number_of_samples(trained_state) -> None:
    """L_1 < L_5 < L_50 on average over the test digits (Burda et al., theorem 1), by more than 4 standard errors."""
    x, reps = load_data("digits").test.x, 20
    bounds = {}
    for k in (1, 5, 50):
        model = trained(trained_state, iw_samples=k)
        with torch.no_grad():
            bounds[k] = torch.stack([model.training_bound(x) for _ in range(reps)])  # (R, N)
    for low, high in [(1, 5), (5, 50)]:
        gain = (bounds[high] - bounds[low]).mean()
        error = ((bounds[high].var(0) + bounds[low].var(0)) / reps).sum().sqrt() / x.shape[0]  # paired by example
        assert gain > 4 * error, (low, high, float(gain), float(error))
    model = trained(trained_state)
    with torch.no_grad():
        log_px = model.log_likelihood(x, iw_samples=500).mean()
    assert bounds[50].mean() < log_px + 0.05  # every bound stays below the (near-exact) log-likelihood


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_piwae_trains_the_decoder_on_iwae_and_the_encoder_on_miwae(likelihood: str) -> None:
    """PIWAE's one loss gives each network the gradient of its own bound, as two separate autograd calls do."""
    model = tiny(objective="piwae", iw_samples=3, iw_groups=4, likelihood=likelihood).train()
    x = load_data("digits").test.x[:8]
    encoder = [*model.encoder.parameters(), *model.posterior_head.parameters()]
    generative = [*model.decoder.parameters(), *model.likelihood.parameters()]
    assert len(encoder) + len(generative) == len(list(model.parameters()))
    assert len(generative) == 4 + (likelihood == "gaussian")  # the learned scale is a generative parameter
    torch.manual_seed(2)
    piwae = dict(zip(encoder + generative, torch.autograd.grad(model(x).loss, encoder + generative)))
    torch.manual_seed(2)  # the same noise
    log_weights = hand_log_weights(model, x, 12)
    iwae_loss = -log_weights.logsumexp(0).mean()  # L_12, up to a constant
    miwae_loss = -log_weights.view(4, 3, 8).logsumexp(1).mean()  # L_{4,3}, up to a constant
    iwae = dict(zip(encoder + generative, torch.autograd.grad(iwae_loss, encoder + generative, retain_graph=True)))
    miwae = dict(zip(encoder + generative, torch.autograd.grad(miwae_loss, encoder + generative)))
    for p in generative:
        torch.testing.assert_close(piwae[p], iwae[p], rtol=1e-4, atol=1e-5)
    for p in encoder:
        torch.testing.assert_close(piwae[p], miwae[p], rtol=1e-4, atol=1e-5)
    # The routing matters: the two bounds' gradients differ for both networks.
    assert not torch.allclose(iwae[encoder[0]], miwae[encoder[0]], rtol=1e-2, atol=1e-4)
    assert not torch.allclose(iwae[generative[0]], miwae[generative[0]], rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("config", OBJECTIVE_CONFIGS, ids=[c["objective"] for c in OBJECTIVE_CONFIGS])
def test_training_on_digits_lowers_the_loss_and_the_bound_stays_above_the_elbo(config: dict) -> None:
    splits = load_data("digits")
    model = tiny(**config)
    with torch.no_grad():
        before = model.eval()(splits.val.x).loss.item()
    fit(model, splits.train.x, None, steps=150, batch_size=64)
    with torch.no_grad():
        out = model.eval()(splits.val.x)
        elbo = -torch.stack([model(splits.val.x).neg_elbo.mean() for _ in range(10)]).mean()
    assert out.loss.item() < before - 10, (before, out.loss.item())  # ~44 nats untrained
    assert out.metrics["iw_bound"] > elbo  # every objective's bound here is at least the ELBO


def test_same_networks_as_vae_mlp_and_the_same_reported_figures_at_one_sample() -> None:
    """vae-mlp's state dict loads strictly; at k = 1 the reported -ELBO, recon, KL and params are vae-mlp's."""
    vae = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=IMAGE)
    model = tiny(iw_samples=1)
    model.load_state_dict(vae.state_dict())  # strict
    x = load_data("digits").test.x[:8]
    outputs = []
    for candidate in (vae, model):
        torch.manual_seed(3)
        outputs.append(candidate(x))
    for field in ("neg_elbo", "recon", "kl", "params"):
        torch.testing.assert_close(getattr(outputs[1], field), getattr(outputs[0], field))


@pytest.mark.parametrize(("overrides", "field"), [
    ({"objective": "iwea"}, "objective"),
    ({"iw_samples": 0}, "iw_samples"),
    ({"iw_samples": 2.5}, "iw_samples"),
    ({"iw_groups": 0}, "iw_groups"),
    ({"iw_groups": 4}, "iw_groups"),  # with the default objective "iwae", which has no groups
    ({"objective": "ciwae", "ciwae_beta": 1.5}, "ciwae_beta"),
    ({"ciwae_beta": -0.1}, "ciwae_beta"),
    ({"ciwae_beta": math.nan}, "ciwae_beta"),
    ({"kl_warmup_steps": 100}, "kl_warmup_steps"),
])
def test_config_errors_are_one_line_and_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        vaezoo.create_model("iwae", preset="tiny", **overrides)
    message = str(info.value)
    assert field in message and "\n" not in message, message
    if field == "objective":
        assert "iwae" in message  # the did-you-mean


def test_too_many_draws_are_one_clear_input_error_before_any_work() -> None:
    model = tiny(iw_samples=10**7)
    with pytest.raises(InputError, match="iw_samples"):
        model(torch.rand(64, *IMAGE))


def test_valid_configs_build() -> None:
    for overrides in OBJECTIVE_CONFIGS + [{"objective": "miwae", "iw_groups": 1}, {"objective": "ciwae", "ciwae_beta": 1.0}]:
        config = vaezoo.create_model("iwae", preset="tiny", **overrides).config
        assert config.total_samples == overrides.get("iw_groups", 1) * config.iw_samples


def test_check_model_passes() -> None:
    report = check_model(IWAE, quick=True)
    assert "log_likelihood" in report.passed and "save_load" in report.passed
