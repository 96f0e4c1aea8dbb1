"""The sample grid a run or a benchmark leaves: samples from a model's prior, one row per class if conditional."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from vaezoo.io.figures import save_image_grid

logger = logging.getLogger(__name__)


@torch.no_grad()
def save_sample_grid(model: Any, path: str | Path, n: int = 64, seed: int = 0) -> Path | None:
    """Samples from the model's prior; a conditional model gets one row per class."""
    if len(model.config.input_shape) != 3 or model.config.input_shape[0] not in (1, 3):
        logger.info("no sample grid: input_shape %s is not an image", model.config.input_shape)
        return None
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        if model.is_conditional:
            classes = model.config.num_classes
            y = torch.arange(classes).repeat_interleave(8)
            images = model.sample(len(y), y=y)
        else:
            images = model.sample(n)
    finally:
        torch.set_rng_state(state)
    return save_image_grid(images, path, nrow=8)
