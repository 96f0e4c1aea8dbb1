"""Generation: samples from the model's prior (or a fitted latent sampler), label-conditioned, with a temperature and a seed."""
from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.apps._common import BATCH_SIZE, checked_labels, model_label, renamed_keyword, seeded
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count, check_non_negative_number, check_output_size
from vaezoo.errors import CapabilityError

_IN_SEVERAL_CALLS = " per call (several calls with different seeds give more)"


def sample_labels(model: VAE, n: int, y: int | Tensor | None = None, *, label: int | Tensor | None = None) -> Tensor | None:
    """Labels for ``n`` samples: None for an unconditional model; ``y`` repeated; or, for a conditional
    model with no ``y``, the classes in turn (0, 1, ..., C-1, 0, ...) so every class appears.

    (``label=`` is the old name of ``y`` and still works, with a DeprecationWarning.)

    >>> apps.sample_labels(cvae, 12).tolist()  # doctest: +SKIP
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    """
    what = "y" if label is None else "label"  # errors name the keyword the caller used
    return _labels_for_samples(model, n, renamed_keyword("y", y, "label", label, "sample_labels"), what)


def _labels_for_samples(model: VAE, n: int, y: int | Tensor | None, what: str) -> Tensor | None:
    check_output_size(check_count(n, "n"), model.config.input_shape, "n", hint=_IN_SEVERAL_CALLS)
    if model.is_conditional and y is None:
        return torch.arange(n) % model.config.num_classes
    labels = checked_labels(model, y, n, what)
    return None if labels is None else labels.cpu()


def generate(model: VAE, n: int, y: int | Tensor | None = None, temperature: float = 1.0, seed: int | None = None,
             *, label: int | Tensor | None = None, sampler: str | None = None) -> Tensor:
    """``n`` samples from the model's prior (fixed or learned), shape (n, *input_shape), on the CPU.

    ``y`` (an int or n ints) picks the class of a conditional model; without one a conditional model
    cycles through its classes. ``temperature`` scales the prior's noise (< 1: typical samples), for a
    model whose ``capabilities.temperature`` is set. (``label=`` is the old name of ``y`` and still
    works, with a DeprecationWarning.) ``sampler="gmm"`` draws the latents from the mixture that
    :func:`vaezoo.apps.fit_sampler` fitted on the training codes instead of the prior.

    >>> apps.generate(cvae, 8, y=3, seed=0)  # doctest: +SKIP
    """
    what = "y" if label is None else "label"
    y = renamed_keyword("y", y, "label", label, "generate")  # here, not under no_grad, so the warning names the caller
    check_output_size(check_count(n, "n"), model.config.input_shape, "n", hint=_IN_SEVERAL_CALLS)
    check_non_negative_number(temperature, "temperature", hint=" (1 samples the prior itself, 0 its mode)")
    if temperature != 1 and not model.capabilities.temperature:
        raise CapabilityError(f"{model_label(model)} does not support sampling temperatures "
                              f"(temperature={temperature!r}); use temperature=1")
    labels = _labels_for_samples(model, n, y, what)
    if sampler is not None:
        model.fitted_sampler(sampler)  # before any work: an unknown name or no fitted sampler is one line
    model.eval()
    samples = torch.empty((n, *model.config.input_shape))  # filled in place: no second copy from a concatenation
    with seeded(seed), torch.no_grad():
        for begin in range(0, n, BATCH_SIZE):
            count = min(BATCH_SIZE, n - begin)
            batch_labels = None if labels is None else labels[begin:begin + count].to(model.device)
            samples[begin:begin + count] = model.sample(count, y=batch_labels, temperature=temperature, sampler=sampler)
    return samples
