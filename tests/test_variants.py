"""What is special about the single-latent variants (cvae, beta-vae) and the backbones.

The checks every variant must pass (JSON round trip, forward/backward, terms, samples, save/load,
IWAE bound, training on digits) run through vaezoo.testing.check_model in test_conformance.py.
"""
from __future__ import annotations

import pytest
import torch
from conftest import fit

import vaezoo


def tiny(name: str, **overrides) -> vaezoo.VAE:
    extra = {"num_classes": 10} if vaezoo.get_model_class(name).is_conditional else {}
    return vaezoo.create_model(name, preset="tiny", **{"input_shape": (1, 8, 8), **extra, **overrides})


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
