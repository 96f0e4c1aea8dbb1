"""Every registered variant, through the same checks (parametrized over the registry, as timm does)."""
from __future__ import annotations

import json

import pytest
import torch

import vaezoo
from conftest import fit, mean_of
from vaezoo.config import config_from_dict, config_to_dict

VARIANTS = vaezoo.list_models()


def tiny(name: str, **overrides) -> vaezoo.VAE:
    extra = {"num_classes": 10} if vaezoo.get_model_class(name).is_conditional else {}
    return vaezoo.create_model(name, preset="tiny", **{"input_shape": (1, 8, 8), **extra, **overrides})


def labels_for(model: vaezoo.VAE, n: int) -> torch.Tensor | None:
    return torch.arange(n) % model.config.num_classes if model.is_conditional else None


@pytest.mark.parametrize("name", VARIANTS)
def test_config_round_trips_through_json(name: str) -> None:
    config = tiny(name).config
    restored = config_from_dict(type(config), json.loads(json.dumps(config_to_dict(config))))
    assert restored == config


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (64,)], ids=["image", "vector"])
def test_forward_backward_and_named_finite_terms(name: str, input_shape: tuple[int, ...]) -> None:
    model = tiny(name, input_shape=input_shape)
    x = torch.rand(6, *input_shape)
    y = labels_for(model, 6)
    model.train()
    out = model(x, y)
    scalars = out.scalars()
    assert {"loss", "recon", "kl"} <= set(scalars)
    assert all(value.dim() == 0 and torch.isfinite(value) for value in scalars.values())
    assert out.neg_elbo.shape == (6,) and out.params.shape == x.shape
    torch.testing.assert_close(out.neg_elbo.mean(), out.recon + out.kl, rtol=1e-4, atol=1e-3)
    out.loss.backward()
    first_stage = list(model.stages()[0].parameters())
    # Every parameter is on the loss's graph; zero-initialised residual branches (hvae) may start at grad 0.
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in first_stage)
    assert sum(bool(p.grad.abs().sum() > 0) for p in first_stage) >= 0.5 * len(first_stage)


@pytest.mark.parametrize("name", VARIANTS)
def test_sample_reconstruct_and_state_dict_round_trip(name: str) -> None:
    model = tiny(name).eval()
    x = torch.rand(5, 1, 8, 8)
    y = labels_for(model, 5)
    samples = model.sample(5, y=y)
    assert samples.shape == (5, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    reconstruction = model.reconstruct(x, y)
    assert reconstruction.shape == x.shape
    clone = tiny(name).eval()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.reconstruct(x, y), reconstruction, rtol=0, atol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_falls_on_digits(name: str, digits) -> None:
    model = tiny(name)
    history = fit(model, *digits, steps=300)
    for stage, losses in history.items():
        assert mean_of(losses, last=True) < 0.8 * mean_of(losses, last=False), f"{name} stage {stage!r} did not learn"


@pytest.mark.parametrize("name", [n for n in VARIANTS if vaezoo.get_model_class(n).has_log_likelihood])
def test_log_likelihood_bounds_the_elbo(name: str, digits) -> None:
    model = tiny(name).eval()
    x, y = digits[0][:64], digits[1][:64] if model.is_conditional else None
    with torch.no_grad():
        elbo = -torch.stack([model(x, y).neg_elbo for _ in range(10)]).mean()
    assert model.log_likelihood(x, y, k=200).mean() > elbo


def test_cvae_samples_follow_the_label(digits) -> None:
    model = tiny("cvae")
    fit(model, *digits, steps=300)
    torch.manual_seed(0)
    zeros = model.sample(200, y=0).mean(0)
    ones = model.sample(200, y=1).mean(0)
    x, y = digits
    assert (zeros - ones).abs().mean() > 0.1
    # Each class's mean sample is closer to that class's mean digit than to the other class's.
    for label, mean_sample in ((0, zeros), (1, ones)):
        own, other = x[y == label].mean(0), x[y == 1 - label].mean(0)
        assert (mean_sample - own).pow(2).sum() < (mean_sample - other).pow(2).sum()


def test_cvae_needs_valid_labels() -> None:
    model = tiny("cvae")
    with pytest.raises(vaezoo.InputError, match="pass labels y"):
        model(torch.rand(2, 1, 8, 8))
    with pytest.raises(vaezoo.InputError, match="this model knows 0..9"):
        model(torch.rand(2, 1, 8, 8), torch.tensor([3, 12]))
    with pytest.raises(vaezoo.InputError, match="sample needs labels"):
        model.sample(2)


def test_beta_vae_capacity_is_annealed() -> None:
    model = tiny("beta-vae", objective="capacity", capacity_max=10.0, capacity_anneal_steps=100, gamma=5.0)
    model.train()
    model.train_step = 50
    out = model(torch.rand(4, 1, 8, 8))
    assert out.terms["capacity"].item() == pytest.approx(5.0)
    torch.testing.assert_close(out.loss, out.recon + 5.0 * (out.kl - 5.0).abs())
    model.train_step = 10_000
    assert model(torch.rand(4, 1, 8, 8)).terms["capacity"].item() == pytest.approx(10.0)


def test_beta_weights_the_kl() -> None:
    model = tiny("beta-vae", beta=3.0).train()
    out = model(torch.rand(4, 1, 8, 8))
    torch.testing.assert_close(out.loss, out.recon + 3.0 * out.kl)


@pytest.mark.parametrize("encoder", ["mlp", "conv", "timm:test_resnet"])
def test_backbones_are_selectable(encoder: str) -> None:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8), encoder=encoder, decoder="conv")
    assert model(torch.rand(3, 1, 8, 8)).loss.isfinite()


def test_timm_resnet18_encoder_on_fashion_mnist_shapes() -> None:
    model = vaezoo.create_model("vae-mlp", encoder="timm:resnet18")
    assert model.encoder.out_features == 512
    assert model(torch.rand(2, 1, 28, 28)).loss.isfinite()


def test_bad_backbone_and_input_errors() -> None:
    with pytest.raises(vaezoo.ConfigError, match="timm has no model 'resnet-18'"):
        vaezoo.create_model("vae-mlp", encoder="timm:resnet-18")
    with pytest.raises(vaezoo.ConfigError, match="needs image input"):
        vaezoo.create_model("vae-mlp", input_shape=(64,), encoder="conv")
    model = tiny("vae-mlp")
    with pytest.raises(vaezoo.InputError, match=r"x has shape \(2, 1, 28, 28\) but this model takes \(B, 1, 8, 8\)"):
        model(torch.rand(2, 1, 28, 28))
    with pytest.raises(vaezoo.InputError, match="dtype"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
