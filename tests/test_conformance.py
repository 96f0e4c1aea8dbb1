"""vaezoo.testing.check_model: every registered variant passes it, and it names the check a broken variant fails."""
from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest
import torch

import vaezoo
from vaezoo.core.contract import Capabilities
from vaezoo.errors import ConformanceError
from vaezoo.testing import check_model

VARIANTS = vaezoo.list_models()
VanillaVAE = vaezoo.get_model_class("vae-mlp")


@pytest.mark.parametrize("name", VARIANTS)
def test_every_registered_variant_passes_check_model(name: str) -> None:
    report = check_model(name)
    assert report.model == name
    assert report.passed[:2] == ["contract", "config_json_round_trip"]
    assert {"forward_backward[image]", "forward_backward[vector]", "save_load", "train_on_digits"} <= set(report.passed)
    has_ll = vaezoo.get_model_class(name).has_log_likelihood
    assert ("log_likelihood" in report.passed) == has_ll and ("log_likelihood" in report.skipped) != has_ll


def test_quick_skips_only_the_training_run() -> None:
    report = check_model("vae-mlp", quick=True)
    assert report.skipped == {"train_on_digits": "quick=True"}
    assert len(report.passed) == 11 and "vae-mlp: 11 checks passed" in str(report)


class WrongSampleShape(VanillaVAE):
    """Samples come out flattened."""

    @torch.no_grad()
    def sample(self, n, y=None, temperature=1.0):
        return super().sample(n, y, temperature).flatten(1)


class NaNLoss(VanillaVAE):
    """The training loss is NaN."""

    def forward(self, x, y=None):
        out = super().forward(x, y)
        out.loss = out.loss * math.nan
        return out


class SkipsInputChecks(VanillaVAE):
    """forward never calls check_input."""

    def forward(self, x, y=None):
        return self.single_latent_elbo(x, y, 1.0)


class NoTinyPreset(VanillaVAE):
    """Has presets, but not the "tiny" one the test suite needs."""

    presets = {"seed": {"hidden_dims": (256,)}}


class UnsavedBuffer(VanillaVAE):
    """Its decoder adds a random offset kept in a non-persistent buffer, so a reloaded copy differs."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.register_buffer("offset", torch.randn(config.input_shape), persistent=False)

    def decode(self, z, y=None):
        return super().decode(z, y) + self.offset


class LooseBound(VanillaVAE):
    """log_weights subtracts 50 nats, so the importance-weighted estimate falls below the ELBO."""

    def log_weights(self, x, y=None):
        return super().log_weights(x, y) - 50.0


class MaximisesTheLoss(VanillaVAE):
    """Its training objective has the wrong sign: every term looks fine, but training makes it worse."""

    def forward(self, x, y=None):
        out = super().forward(x, y)
        out.loss = -out.loss
        return out


class UndeclaredMetric(VanillaVAE):
    """Reports a metric that reported_metrics does not declare, so bench could not say what it means."""

    def forward(self, x, y=None):
        out = super().forward(x, y)
        out.metrics["latent_norm"] = out.kl.detach()
        return out


class ClaimsNoLatentSampler(VanillaVAE):
    """Declares no single continuous latent, yet sample(sampler="gmm") quietly draws from the prior."""

    capabilities = Capabilities(latent_sampler=False)

    def sample(self, n, y=None, temperature=1.0, sampler=None):
        return super().sample(n, y, temperature)


class ForgetsItsSampler(VanillaVAE):
    """Samples through a fitted GMM, but its config drops the sampler, so a saved copy draws from the prior."""

    def save_pretrained(self, save_directory, **kwargs):
        sampler = self.latent_sampler
        self.set_latent_sampler(None)
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self.set_latent_sampler(sampler)


@pytest.mark.parametrize(
    "broken, check, fragment",
    [
        (WrongSampleShape, "sample", "sample(5) must have shape (5, 1, 8, 8), got a tensor of shape (5, 64)"),
        (NaNLoss, "loss_terms", "loss term 'loss' is nan in train mode"),
        (SkipsInputChecks, "input_checks", "start forward with self.check_input(x, y)"),
        (NoTinyPreset, "contract", "presets has no 'tiny' entry"),
        (UnsavedBuffer, "save_load", "reconstruct differs between the model and its saved-and-loaded copy"),
        (LooseBound, "log_likelihood", "is not above the ELBO"),
        (MaximisesTheLoss, "train_on_digits", "on digits"),
        (ClaimsNoLatentSampler, "latent_sampler", "did not raise vaezoo.CapabilityError"),
        (ForgetsItsSampler, "latent_sampler", "the fitted latent sampler is lost by save_pretrained and loading"),
        (UndeclaredMetric, "loss_terms", "VAEOutput.metrics holds ['latent_norm'] in train mode but reported_metrics declares []"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_a_broken_variant_fails_the_check_that_catches_it(broken: type, check: str, fragment: str) -> None:
    with pytest.raises(ConformanceError) as info:
        check_model(broken, quick=check != "train_on_digits")
    message = str(info.value)
    assert message.startswith(f"check_model({broken.__name__!r}) failed {check!r}: "), message
    assert fragment in message and "\n" not in message
    assert isinstance(info.value, AssertionError) and isinstance(info.value, vaezoo.VAEZooError)


def test_an_unregistered_third_party_class_can_be_checked(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fixtures" / "toy_plugin"))
    monkeypatch.delitem(sys.modules, "toy_vae", raising=False)
    from toy_vae import ToyVAE

    report = check_model(ToyVAE, quick=True)
    assert report.model == "ToyVAE" and "save_load" in report.passed


def test_an_unknown_name_is_the_registry_error() -> None:
    with pytest.raises(vaezoo.UnknownModelError, match="did you mean 'vae-mlp'"):
        check_model("vae-mpl")


def test_legacy_capability_flags_still_work_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="declare capabilities = Capabilities"):
        class OldStyle(VanillaVAE):
            is_conditional = False
            has_log_likelihood = False

    assert OldStyle.capabilities == vaezoo.Capabilities(log_likelihood=False)
    assert OldStyle.has_log_likelihood is False and VanillaVAE.has_log_likelihood is True
    with pytest.raises(vaezoo.CapabilityError, match="no importance-weighted log-likelihood"):
        OldStyle(VanillaVAE.config_class(input_shape=(16,))).log_likelihood(torch.rand(2, 16))


def test_the_contributing_example_is_a_complete_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONTRIBUTING.md's smallest complete variant runs as written and passes check_model; its metric is reported."""
    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    code = text.split("The smallest complete variant:")[1].split("```python")[1].split("```")[0]
    module = types.ModuleType("contributing_example")  # dataclasses look their class's module up in sys.modules
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)
    report = check_model("tiny-vae", quick=True)
    assert "save_load" in report.passed and "loss_terms" in report.passed
    model = vaezoo.create_model("tiny-vae", preset="tiny", input_shape=(16,))
    x = torch.rand(5, 16)
    reported = model.eval()(x).metrics["mean_norm"]
    assert torch.allclose(reported, model.encode(x).mean.norm(dim=1).mean())
