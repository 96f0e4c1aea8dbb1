"""The conformance suite every variant must pass, in one call (as scikit-learn's ``check_estimator``).

    >>> from vaezoo.testing import check_model
    >>> report = check_model("vae-mlp")          # a registry name, or the class itself: check_model(MyVAE)
    >>> "save_load" in report.passed
    True

or, in a plugin's test suite::

    def test_my_vae_conforms():
        check_model("my-vae")

Every check builds the variant from its ``"tiny"`` preset on 8x8 images or 64-d vectors, so the
suite takes seconds. A failed check raises :class:`~vaezoo.errors.ConformanceError` (an
``AssertionError``, so pytest reports it as a failed assertion) with a one-line message naming the
check and what was wrong. ``quick=True`` skips the short training run on digits.

The checks, in order: the class follows the contract, capabilities and reported metrics declared
(``contract``); its config survives JSON (``config_json_round_trip``); encode gives a Posterior, the
loss terms are named, scalar and finite, and VAEOutput.metrics holds what reported_metrics declares
(``loss_terms``); forward
and backward work on images and vectors with finite gradients (``forward_backward[image]``,
``forward_backward[vector]``); bad inputs are refused (``input_checks``); ``sample`` and
``reconstruct`` give the input's shape (``sample``, ``reconstruct``); a saved and reloaded model
gives identical outputs (``save_load``); the importance-weighted log-likelihood lies above the
ELBO, or is refused where the variant has none (``log_likelihood``); a GMM fitted on the codes samples
and survives saving, or ``sample(sampler="gmm")`` is refused where the variant declares no single continuous
latent (``latent_sampler``); a few epochs of the real
trainer on digits lower the loss of every stage (``train_on_digits``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vaezoo.errors import ConformanceError
from vaezoo.testing.checks import IMAGE_SHAPE, VECTOR_SHAPE, Checker
from vaezoo.zoo.registry import REGISTRY, get_model_class

logger = logging.getLogger(__name__)


@dataclass
class ConformanceReport:
    """What :func:`check_model` ran: the checks passed, those skipped (with why), and the time taken."""

    model: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        skipped = "".join(f"; skipped {name} ({why})" for name, why in self.skipped.items())
        return f"{self.model}: {len(self.passed)} checks passed in {self.seconds:.1f}s ({', '.join(self.passed)}){skipped}"


def check_model(cls_or_name: type | str, *, quick: bool = False) -> ConformanceReport:
    """Run every conformance check on a variant; raise ConformanceError at the first that fails.

    ``cls_or_name`` is a registry name (``"vae-mlp"``) or a VAE subclass, registered or not.
    ``quick=True`` skips ``train_on_digits``, the only check that takes more than a moment.

    >>> check_model("cvae", quick=True).skipped
    {'train_on_digits': 'quick=True'}
    """
    model_class, name = _resolve(cls_or_name)
    checker = Checker(model_class, name)
    report = ConformanceReport(model=name)
    start = time.perf_counter()
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("contract", checker.contract),
        ("config_json_round_trip", checker.config_json_round_trip),
        ("loss_terms", checker.loss_terms),
        ("forward_backward[image]", lambda: checker.forward_backward(IMAGE_SHAPE)),
        ("forward_backward[vector]", lambda: checker.forward_backward(VECTOR_SHAPE)),
        ("input_checks", checker.input_checks),
        ("sample", checker.sample),
        ("reconstruct", checker.reconstruct),
        ("save_load", checker.save_load),
        ("log_likelihood", checker.log_likelihood),
        ("latent_sampler", checker.latent_sampler),
        ("train_on_digits", checker.train_on_digits),
    ]
    for check, run in checks:
        if check == "train_on_digits" and quick:
            report.skipped[check] = "quick=True"
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            try:
                skipped = run()
            except ConformanceError as error:
                raise ConformanceError(f"check_model({name!r}) failed {check!r}: {error}") from None
            except Exception as error:  # the variant's own failure, reported as the check that hit it
                message = " ".join(str(error).split())
                raise ConformanceError(
                    f"check_model({name!r}) failed {check!r}: it raised {type(error).__name__}: {message}"
                ) from error
        if skipped:
            report.skipped[check] = skipped
        else:
            report.passed.append(check)
    report.seconds = time.perf_counter() - start
    logger.info("%s", report)
    return report


def _resolve(cls_or_name: type | str) -> tuple[type, str]:
    if isinstance(cls_or_name, str):
        return get_model_class(cls_or_name), cls_or_name
    if not isinstance(cls_or_name, type):
        raise ConformanceError(f"check_model takes a registry name or a VAE subclass, not {cls_or_name!r}")
    registered = [entry.name for entry in REGISTRY.entries.values() if entry.model_class is cls_or_name]
    return cls_or_name, registered[0] if registered else cls_or_name.__name__
