"""Data augmentation: synthetic training examples from the model, with balanced labels for a conditional model."""
from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.apps._common import require_conditional
from vaezoo.apps.generation import generate, sample_labels
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count, check_output_size


def augment(model: VAE, n: int, per_class: bool = False, temperature: float = 1.0,
            seed: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Synthetic examples for a training set (seed, section 7): (x, y) with y None for an unconditional
    model. A conditional model gives balanced labels: ``n`` in all (classes in turn), or ``n`` per class
    with ``per_class``.

    >>> x_new, y_new = apps.augment(cvae, 100, per_class=True, seed=0)  # 1000 digits, 100 of each  # doctest: +SKIP
    """
    check_count(n, "n")
    if per_class:  # n of each class
        require_conditional(model, "per-class augmentation", "drop per_class (--per-class) for unlabelled samples")
        total = n * model.config.num_classes
        check_output_size(total, model.config.input_shape, f"n={n} per class x {model.config.num_classes} classes",
                          hint=" in all (several calls with different seeds give more)")
        labels = torch.arange(model.config.num_classes).repeat_interleave(n)
        return generate(model, len(labels), labels, temperature, seed), labels
    labels = sample_labels(model, n)
    return generate(model, n, labels, temperature, seed), labels
