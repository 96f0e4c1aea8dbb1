"""The sample grid a run or a benchmark leaves: samples from a model's prior, one labelled row per class if conditional."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vaezoo.io.figures import save_image_grid

logger = logging.getLogger(__name__)

SAMPLES_PER_CLASS = 8  # a conditional model's grid: one row of this many per class


def class_labels(count: int, class_names: Sequence[str] | None = None) -> list[str]:
    """Readable names of classes 0..count-1: ``class_names`` where they cover every class, else "class 0", ...

    >>> class_labels(3), class_labels(2, ["cat", "dog"])
    (['class 0', 'class 1', 'class 2'], ['cat', 'dog'])
    """
    if class_names is not None and len(class_names) >= count:
        return [str(name) for name in class_names[:count]]
    return [f"class {index}" for index in range(count)]


@torch.no_grad()
def save_sample_grid(model: Any, path: str | Path, n: int = 64, seed: int = 0,
                     class_names: Sequence[str] | None = None) -> Path | None:
    """Samples from the model's prior, titled with the model's name; a conditional model gets one row per
    class, labelled with ``class_names`` (the data's, when known)."""
    if len(model.config.input_shape) != 3 or model.config.input_shape[0] not in (1, 3):
        logger.info("no sample grid: input_shape %s is not an image", model.config.input_shape)
        return None
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        if model.is_conditional:
            classes = model.config.num_classes
            y = torch.arange(classes).repeat_interleave(SAMPLES_PER_CLASS)
            images = model.sample(len(y), y=y)
        else:
            images = model.sample(n)
    finally:
        torch.set_rng_state(state)
    if model.is_conditional:
        return save_image_grid(images, path, nrow=SAMPLES_PER_CLASS, row_labels=class_labels(classes, class_names),
                               title=f"{model.model_name}: {SAMPLES_PER_CLASS} samples per class")
    return save_image_grid(images, path, nrow=8, title=f"{model.model_name}: {len(images)} samples from the prior")
