"""Figures a run leaves behind: a grid of samples and the loss curves (PNG, via torchvision and matplotlib)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def save_image_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write (N, C, H, W) images in [0, 1] as one PNG grid (C = 1 or 3)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[-1] < 28:  # 8x8 digits would be a thumbnail: enlarge small images, pixels kept sharp
        images = torch.nn.functional.interpolate(images, scale_factor=28 // images.shape[-1], mode="nearest")
    save_image(images, str(path), nrow=nrow, padding=1, pad_value=1.0)
    return path


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


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Train and validation loss per epoch, one panel per training stage."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(record["stage"] for record in history))
    figure, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
    for axis, stage in zip(axes[0], stages):
        records = [r for r in history if r["stage"] == stage]
        epochs = [r["epoch"] for r in records]
        axis.plot(epochs, [r["train"].get("loss", float("nan")) for r in records], label="train loss")
        val_key = "neg_elbo" if "neg_elbo" in records[0]["val"] else "loss"
        axis.plot(epochs, [r["val"].get(val_key, float("nan")) for r in records], label=f"val {val_key}")
        axis.set_xlabel("epoch")
        axis.set_ylabel("nats per example")
        axis.set_title(stage)
        axis.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
