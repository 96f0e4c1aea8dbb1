"""PNG figures from tensors and records: image grids, comparison rows, scatter plots and loss curves."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaezoo.io.atomic import atomic_write

logger = logging.getLogger(__name__)


def save_image_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write (N, C, H, W) images in [0, 1] as one PNG grid (C = 1 or 3), atomically."""
    from torchvision.utils import save_image  # imported here: torchvision is slow to import and only figures need it


    path = Path(path)
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[-1] < 28:  # 8x8 digits would be a thumbnail: enlarge small images, pixels kept sharp
        images = torch.nn.functional.interpolate(images, scale_factor=28 // images.shape[-1], mode="nearest")
    atomic_write(path, lambda tmp: save_image(images, tmp, nrow=nrow, padding=1, pad_value=1.0, format="png"))
    return path


def interleave_rows(top: Tensor, bottom: Tensor, nrow: int) -> Tensor:
    """Grid order for a comparison figure: a row of ``nrow`` from ``top`` above the matching row of ``bottom``, and so on."""
    rows = [part for i in range(0, len(top), nrow) for part in (top[i:i + nrow], bottom[i:i + nrow])]
    return torch.cat(rows)


def save_scatter(points: Any, labels: Any, path: str | Path, title: str, class_names: list[str] | None = None) -> Path:
    """Write (N, 2) points as a PNG scatter plot, coloured by integer ``labels`` (or one colour), atomically."""
    import matplotlib  # imported here: matplotlib is slow to import and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    classes = 0 if labels is None else int(max(labels)) + 1
    scatter = axis.scatter(points[:, 0], points[:, 1], c=labels, s=5, cmap="tab10" if classes <= 10 else "tab20",
                           vmin=-0.5, vmax=max(classes, 10) - 0.5)
    if labels is not None:
        colorbar = figure.colorbar(scatter, ax=axis, ticks=range(classes))
        if class_names:
            colorbar.ax.set_yticklabels(class_names[:classes], fontsize=7)
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=80, format="png"))
    plt.close(figure)
    return path


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Train and validation loss per epoch, one panel per training stage."""
    if not history:
        return None
    import matplotlib  # imported here: matplotlib is slow to import and only figures need it

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
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))  # a kill or full disk leaves no torn PNG
    plt.close(figure)
    return path
