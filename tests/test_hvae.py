"""Behaviour and math of the hierarchical VAE (plugins/hvae.py).

    python -m pytest tests/test_hvae.py -q            # everything, slow training test included
    python -m pytest tests/test_hvae.py -q -m "not slow"
"""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal

import vaezoo
from vaezoo.errors import ConfigError, InputError

IMAGE, VECTOR = (1, 8, 8), (64,)


def tiny(input_shape: tuple[int, ...] = IMAGE, **overrides) -> vaezoo.VAE:
    return vaezoo.create_model("hvae", preset="tiny", input_shape=input_shape, **overrides)


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits in [0, 1]: (1500, 1, 8, 8) train, (297, 1, 8, 8) held out."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images / 16, dtype=torch.float32).unsqueeze(1)
    return x[:1500], x[1500:]


@pytest.mark.parametrize(("input_shape", "backbone"), [(IMAGE, "mlp"), (VECTOR, "mlp"), (IMAGE, "conv")])
def test_forward_contract(input_shape, backbone) -> None:
    model = tiny(input_shape, encoder=backbone, decoder=backbone)
    out = model(torch.rand(5, *input_shape))
    assert out.loss.shape == out.recon.shape == out.kl.shape == ()
    assert out.neg_elbo.shape == (5,)
    assert out.params.shape == (5, *input_shape)
    assert sorted(out.terms) == ["kl_0", "kl_1", "kl_2"]  # one per layer, bottom first
    assert torch.allclose(sum(out.terms.values()), out.kl, atol=1e-5)
    assert torch.allclose(out.neg_elbo.mean(), out.recon + out.kl, atol=1e-4)
    out.loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the computation graph: {unused}"


@pytest.mark.parametrize("preset", [None, "mlp", "deep", "tiny"])
def test_default_config_and_presets_on_28x28(preset) -> None:
    model = vaezoo.create_model("hvae", preset=preset)
    assert model.config.latent_dim == model.config.latent_dims[-1]
    x = torch.rand(2, 1, 28, 28)
    assert torch.isfinite(model(x).loss)
    assert model.log_likelihood(x, iw_samples=3).shape == (2,)


def test_log_weights_match_hand_computed_densities() -> None:
    """log w = log p(x | z) + sum_i log p(z_i | z_{>i}) - sum_i log q(z_i | x, z_{>i}), via torch.distributions."""
    model = tiny().eval()
    x = torch.rand(6, *IMAGE)
    torch.manual_seed(1)
    log_weights = model.log_weights(x)
    torch.manual_seed(1)  # the same noise: encode draws z exactly as log_weights does
    posterior = model.encode(x)
    expected = Bernoulli(logits=model.decode(posterior.samples), validate_args=False).log_prob(x).flatten(1).sum(1)
    for q, p, z in zip(posterior.posteriors, posterior.priors, posterior.samples):
        expected = expected + Normal(p.mean, p.std).log_prob(z).sum(1) - Normal(q.mean, q.std).log_prob(z).sum(1)
    assert torch.allclose(posterior.priors[-1].mean, torch.zeros(6, 2)) and torch.allclose(posterior.priors[-1].std, torch.ones(6, 2))
    assert torch.allclose(log_weights, expected, atol=1e-4)


def test_decode_follows_the_same_generative_path_as_forward() -> None:
    model = tiny().eval()
    x = torch.rand(4, *IMAGE)
    torch.manual_seed(2)
    params = model(x).params
    torch.manual_seed(2)
    assert torch.allclose(model.decode(model.encode(x).samples), params, atol=1e-6)
    means = model.encode(x, temperature=0.0)  # the deterministic path of posterior means
    assert all(torch.equal(m, z) for m, z in zip(means.mean, means.samples))
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))
    assert torch.allclose(model.reconstruct(x), torch.sigmoid(model.decode(means.mean)))


def test_single_sample_log_weight_is_the_elbo_in_expectation() -> None:
    """E_q[log w] (Monte Carlo KL) = -E_q[neg_elbo] (analytic per-layer KL), within Monte Carlo error."""
    model = tiny().eval()
    x, reps = torch.rand(3, *IMAGE), 4000
    x_rep = x.repeat(reps, 1, 1, 1)
    with torch.no_grad():
        log_weights = model.log_weights(x_rep).view(reps, 3)
        neg_elbo = model(x_rep).neg_elbo.view(reps, 3)
    assert (model(x).kl > 0.1).item()  # posteriors differ from priors, so the check has teeth
    error = (log_weights.var(0) / reps + neg_elbo.var(0) / reps).sqrt()
    assert ((log_weights.mean(0) + neg_elbo.mean(0)).abs() < 4 * error + 1e-3).all()


def test_importance_weighted_bound_is_above_the_elbo_and_tightens() -> None:
    model = tiny().eval()
    x = torch.rand(32, *IMAGE)
    elbo = -model(x).neg_elbo.mean()
    bound_1, bound_50 = model.log_likelihood(x, iw_samples=1).mean(), model.log_likelihood(x, iw_samples=50).mean()
    assert bound_50 > bound_1 + 0.1
    assert bound_50 > elbo + 0.1


def test_free_bits_change_the_objective_not_the_reported_kl() -> None:
    plain = tiny(free_bits=0.0, kl_warmup_steps=0).train()
    floored = tiny(free_bits=100.0, kl_warmup_steps=0).train()
    floored.load_state_dict(plain.state_dict())
    x = torch.rand(8, *IMAGE)
    torch.manual_seed(3)
    out_plain = plain(x)
    torch.manual_seed(3)
    out_floored = floored(x)
    assert torch.allclose(out_plain.kl, out_floored.kl) and torch.allclose(out_plain.recon, out_floored.recon)
    assert torch.allclose(out_plain.loss, out_plain.recon + out_plain.kl, atol=1e-4)
    # Every dim's batch-mean KL is below 100 nats, so each of the 8 + 4 + 2 dims counts as 100.
    assert torch.allclose(out_floored.loss, out_floored.recon + 100.0 * 14, atol=1e-3)
    out_eval = floored.eval()(x)  # evaluation reports the true objective
    assert torch.allclose(out_eval.loss, out_eval.neg_elbo.mean(), atol=1e-4)


def test_kl_warmup_ramps_the_kl_weight() -> None:
    model = tiny(free_bits=0.0, kl_warmup_steps=100).train()
    x = torch.rand(8, *IMAGE)
    for step, weight in [(0, 0.0), (50, 0.5), (100, 1.0), (500, 1.0)]:
        model.train_step = step
        torch.manual_seed(4)
        out = model(x)
        assert torch.allclose(out.loss, out.recon + weight * out.kl, atol=1e-4)


def test_sampling_gives_bernoulli_means_and_hierarchical_latents() -> None:
    model = tiny()
    samples = model.sample(7)
    assert samples.shape == (7, *IMAGE)
    assert samples.min() >= 0 and samples.max() <= 1
    latents = model.prior_sample(7)
    assert [tuple(z.shape) for z in latents] == [(7, 8), (7, 4), (7, 2)]  # bottom first
    assert torch.equal(model.sample(3, temperature=0.0), model.sample(3, temperature=0.0))


def test_state_dict_round_trip_gives_identical_outputs() -> None:
    model = tiny().eval()
    torch.manual_seed(5)
    copy = tiny().eval()
    copy.load_state_dict(model.state_dict())  # strict
    x = torch.rand(4, *IMAGE)
    torch.manual_seed(6)
    expected = model(x)
    torch.manual_seed(6)
    actual = copy(x)
    assert torch.equal(expected.neg_elbo, actual.neg_elbo) and torch.equal(expected.params, actual.params)
    assert torch.equal(model.reconstruct(x), copy.reconstruct(x))


def test_config_and_input_errors_name_the_fix() -> None:
    config = vaezoo.create_model("hvae", preset="tiny", latent_dims=(6, 3)).config
    assert config.latent_dims == (6, 3) and config.latent_dim == 3  # the top layer's size follows latent_dims
    for bad in [{"free_bits": -1.0}, {"latent_dims": (), "latent_dim": 2}, {"hidden_dim": 0}]:
        with pytest.raises(ConfigError):
            tiny(**bad)
    model = tiny()
    with pytest.raises(InputError, match="latent_dims"):
        model.decode([torch.randn(2, 8)])
    with pytest.raises(InputError):
        model(torch.rand(2, 64))


@pytest.mark.slow
def test_training_on_digits_lowers_the_loss_and_keeps_every_layer_active(digits) -> None:
    train, held_out = digits
    model = tiny(kl_warmup_steps=200, free_bits=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        start = model.eval()(held_out).loss.item()
    for step in range(500):
        model.train()
        model.train_step = step  # as the trainer does, so the KL warm-up progresses
        loss = model(train[torch.randint(0, len(train), (64,))]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(held_out)
        log_px = model.log_likelihood(held_out, iw_samples=50)
    assert out.loss.item() < start - 15, (start, out.loss.item())
    collapsed = {name: round(kl.item(), 3) for name, kl in out.terms.items() if kl.item() <= 0.5}
    assert not collapsed, f"layers with KL <= 0.5 nats on held-out digits: {collapsed}"
    assert log_px.mean() > -out.neg_elbo.mean()  # the IW bound is tighter than the ELBO on trained models too
