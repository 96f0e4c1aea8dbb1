"""Behaviour and math of the convolutional hierarchical VAE (plugins/vdvae.py).

    python -m pytest tests/test_vdvae.py -q
"""
from __future__ import annotations

import pytest
import torch
from conftest import fit
from torch.distributions import Normal, kl_divergence

import vaezoo
from vaezoo.data import load_data
from vaezoo.errors import ConfigError, InputError
from vaezoo_plugins.vdvae import residual_normal_kl

IMAGE = (1, 8, 8)


def tiny(input_shape: tuple[int, ...] = IMAGE, **overrides) -> vaezoo.VAE:
    return vaezoo.create_model("vdvae", preset="tiny", input_shape=input_shape, **overrides)


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


def test_residual_normal_kl_matches_torch_distributions() -> None:
    """KL(N(mu_p + dmu, var_p exp(dlogvar)) || N(mu_p, var_p)), NVAE eq. 2, against the general formula."""
    prior_mean, prior_logvar = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    delta_mean, delta_logvar = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    q = Normal(prior_mean + delta_mean, (0.5 * (prior_logvar + delta_logvar)).exp())
    p = Normal(prior_mean, (0.5 * prior_logvar).exp())
    torch.testing.assert_close(residual_normal_kl(delta_mean, delta_logvar, prior_logvar), kl_divergence(q, p))


def test_posterior_is_the_prior_shifted_and_its_kl_is_the_reported_one() -> None:
    model = tiny().eval()
    x = torch.rand(5, *IMAGE)
    posterior = model.encode(x)
    assert [tuple(z.shape) for z in posterior.samples] == [(5, 4, 8, 8), (5, 4, 4, 4), (5, 4, 4, 4)]  # bottom first
    for q, p, kl_map in zip(posterior.posteriors, posterior.priors, posterior.kl_maps):
        expected = kl_divergence(Normal(q.mean, q.std), Normal(p.mean, p.std))
        torch.testing.assert_close(kl_map, expected, rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    assert torch.allclose(out.kl, model.encode(x).kl().mean())
    assert torch.allclose(sum(out.metrics["kl_per_group"].values()), out.kl, atol=1e-5)


def test_log_weights_match_hand_computed_densities() -> None:
    model = tiny().eval()
    x = torch.rand(6, *IMAGE)
    torch.manual_seed(1)
    log_weights = model.log_weights(x)
    torch.manual_seed(1)  # the same noise: encode draws z exactly as log_weights does
    posterior = model.encode(x)
    logits = model.decode(posterior.samples)
    expected = torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
    for q, p, z in zip(posterior.posteriors, posterior.priors, posterior.samples):
        expected += (Normal(p.mean, p.std).log_prob(z) - Normal(q.mean, q.std).log_prob(z)).flatten(1).sum(1)
    torch.testing.assert_close(log_weights, expected, rtol=1e-4, atol=1e-3)


def test_repeated_log_weights_run_the_bottom_up_pass_once_and_draw_the_same_weights() -> None:
    """vdvae's shortcut (one bottom-up pass for all reps) against the base class's repeat-the-input path."""
    model = tiny().eval()
    x = torch.rand(4, *IMAGE)
    torch.manual_seed(2)
    expected = vaezoo.VAE.repeated_log_weights(model, x, None, 3)
    calls = []
    model.stem.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    torch.manual_seed(2)
    shortcut = model.repeated_log_weights(x, None, 3)
    torch.testing.assert_close(shortcut, expected, rtol=1e-5, atol=1e-4)
    assert calls == [4]  # the bottom-up pass saw each row once, not 3 times


def test_importance_weighted_bound_is_above_the_elbo_and_rises_with_k() -> None:
    model = tiny().eval()
    x = load_data("digits").test.x[:32]
    with torch.no_grad():
        elbo = -torch.stack([model(x).neg_elbo for _ in range(20)]).mean()
    bounds = [model.log_likelihood(x, iw_samples=k).mean() for k in (1, 10, 50)]
    assert abs(bounds[0] - elbo) < 1.0  # k = 1 is the ELBO in expectation
    assert bounds[0] < bounds[1] < bounds[2] and bounds[2] > elbo + 0.05


def test_temperature_zero_sampling_is_deterministic_and_per_group_temperatures_work() -> None:
    model = tiny().eval()
    assert torch.equal(model.sample(3, temperature=0.0), model.sample(3, temperature=0.0))
    assert not torch.equal(model.sample(3), model.sample(3))
    latents = model.prior_sample(4, temperature=[0.0, 0.0, 0.0])
    assert all(torch.equal(z, p) for z, p in zip(latents, model.prior_sample(4, temperature=0.0)))
    mixed = model.prior_sample(4, temperature=[1.0, 0.0, 0.0])  # only the bottom group is drawn
    assert torch.equal(mixed[2], latents[2]) and not torch.equal(mixed[0], latents[0])
    with pytest.raises(InputError, match="one per latent group"):
        model.prior_sample(2, temperature=[1.0, 0.5])


def test_decode_follows_the_path_of_forward() -> None:
    model = tiny().eval()
    x = torch.rand(4, *IMAGE)
    torch.manual_seed(2)
    params = model(x).params
    torch.manual_seed(2)
    torch.testing.assert_close(model.decode(model.encode(x).samples), params)
    means = model.encode(x, temperature=0.0)
    assert all(torch.equal(m, z) for m, z in zip(means.mean, means.samples))
    torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decode(means.mean)))


@pytest.mark.parametrize("input_shape", [(3, 10, 6), (1, 28, 28), (2, 1, 5), (64,)])
def test_any_image_size_and_channel_count(input_shape) -> None:
    model = tiny(input_shape, groups_per_resolution=(0, 1, 1))
    x = torch.rand(3, *input_shape)
    out = model(x)
    assert out.params.shape == x.shape and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.sample(2).shape == (2, *input_shape)


def test_free_bits_change_the_objective_not_the_reported_kl() -> None:
    plain = tiny(free_bits=0.0, kl_warmup_steps=0).train()
    floored = tiny(free_bits=100.0, kl_warmup_steps=0).train()
    floored.load_state_dict(plain.state_dict())
    x = torch.rand(8, *IMAGE)
    torch.manual_seed(3)
    out_plain = plain(x)
    torch.manual_seed(3)
    out_floored = floored(x)
    assert torch.allclose(out_plain.kl, out_floored.kl) and torch.allclose(out_plain.loss, out_plain.recon + out_plain.kl)
    assert torch.allclose(out_floored.loss, out_floored.recon + 100.0 * 3)  # three groups, each below 100 nats
    out_eval = floored.eval()(x)
    assert torch.allclose(out_eval.loss, out_eval.neg_elbo.mean(), atol=1e-4)


def test_kl_balance_weights_groups_by_their_share_during_warmup_only() -> None:
    """NVAE's kl_balancer: coefficient_g = (KL_g + 0.01) / alpha_g, scaled to mean 1, alpha_g = h w / groups there."""
    model = tiny(kl_balance=True, free_bits=0.0, kl_warmup_steps=10).train()  # groups: 8x8 x1, 4x4 x2
    kl_per_group = [torch.full((4,), 6.0), torch.full((4,), 1.0), torch.full((4,), 3.0)]
    alpha = torch.tensor([64 / 1, 16 / 2, 16 / 2]) / 8
    coeffs = (torch.tensor([6.0, 1.0, 3.0]) + 0.01) / alpha
    expected = (torch.tensor([6.0, 1.0, 3.0]) * coeffs / coeffs.mean()).sum()
    torch.testing.assert_close(model._kl_objective(kl_per_group, warming_up=True), expected)
    torch.testing.assert_close(model._kl_objective(kl_per_group, warming_up=False), torch.tensor(10.0))
    # A neglected group (KL 1 nat) is weighted less than a used one at the same resolution (KL 3 nats).
    assert coeffs[1] < coeffs[2]
    model.train_step = 10  # warm-up over: the forward's objective is the plain sum of the groups' KL
    x = torch.rand(8, *IMAGE)
    out = model(x)
    torch.testing.assert_close(out.loss, out.recon + out.kl)
    with pytest.raises(ConfigError, match="kl_balance"):
        tiny(kl_balance="yes")


def test_config_and_input_errors_name_the_fix() -> None:
    for bad, field in [({"groups_per_resolution": ()}, "groups_per_resolution"),
                       ({"groups_per_resolution": (0, 0)}, "groups_per_resolution"),
                       ({"width": 0}, "width"), ({"free_bits": -1.0}, "free_bits"), ({"logvar_bound": 0.0}, "logvar_bound")]:
        with pytest.raises(ConfigError, match=field):
            tiny(**bad)
    model = tiny()
    with pytest.raises(InputError, match="bottom first"):
        model.decode([torch.randn(2, 4, 8, 8)])
    with pytest.raises(InputError):
        model(torch.rand(2, 1, 9, 9))


@pytest.mark.slow  # about 20 s on an idle 2-core CPU
def test_short_training_on_digits_keeps_every_group_active() -> None:
    splits = load_data("digits")
    model = tiny(kl_warmup_steps=100, free_bits=0.5)
    fit(model, splits.train.x, None, steps=200, batch_size=64)
    with torch.no_grad():
        out = model.eval()(splits.val.x)
    inactive = {name: round(kl.item(), 3) for name, kl in out.metrics["kl_per_group"].items() if kl.item() <= 0.1}
    assert not inactive, f"latent groups with KL <= 0.1 nats on held-out digits: {inactive}"
