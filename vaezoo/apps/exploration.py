"""Latent exploration: posterior means, a 2-D map of them (PCA or t-SNE), and latent traversals."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaezoo.apps._common import (
    BATCH_SIZE,
    as_batch,
    check_choice,
    checked_labels,
    decode_to_cpu,
    flatten_latents,
    mean_code,
    posterior_is_gaussian,
    require_gaussian,
    unflatten_latents,
)
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count
from vaezoo.errors import InputError

MAP_METHODS = ("pca", "tsne")


def posterior_means(model: VAE, x: Tensor, y: Tensor | None, batch_size: int = 1000) -> tuple[Tensor, bool]:
    """(N, D) posterior means, flattened (a list of per-layer means is concatenated), and whether the
    posterior is Gaussian in every layer (``posterior.is_gaussian``), for which active units are defined.

    The means are the deterministic code (``model.encode_mean``), as ``decode`` takes it.
    """
    model.eval()
    with torch.no_grad():
        gaussian, _ = posterior_is_gaussian(model, x, y)
        chunks = []
        for begin in range(0, x.shape[0], batch_size):
            xb = x[begin:begin + batch_size].to(model.device)
            yb = None if y is None else y[begin:begin + batch_size].to(model.device)
            chunks.append(flatten_latents(mean_code(model, xb, yb)).float().cpu())
    return torch.cat(chunks), gaussian


def latent_map(model: VAE, x: Tensor, y: Tensor | None = None, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of the posterior means: PCA, or t-SNE (van der Maaten and Hinton 2008) for
    ``method="tsne"``. ``y`` are the labels a conditional model's encoder needs.

    >>> apps.latent_map(model, test.x).shape  # doctest: +SKIP
    (180, 2)
    """
    check_choice(method, MAP_METHODS, "method")
    x = as_batch(model, x)
    means, _ = posterior_means(model, x, checked_labels(model, y, x.shape[0]))
    if means.shape[1] == 1:
        return np.concatenate([means.numpy(), np.zeros_like(means.numpy())], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA  # here: scikit-learn is slow to import and only the maps need it

        return PCA(n_components=2, random_state=seed).fit_transform(means.numpy())
    if len(means) < 5:
        raise InputError(f"t-SNE needs at least 5 examples, got {len(means)}; pass more, or use method='pca'")
    from sklearn.manifold import TSNE  # here: scikit-learn is slow to import and only the maps need it

    perplexity = min(30.0, (len(means) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(means.numpy())


@dataclass
class Traversal:
    """A latent traversal grid: ``images`` (len(dims) * steps, *input_shape), one row per latent dim."""

    images: Tensor
    dims: list[int]  # flattened latent index of each row (a hierarchy's layers concatenated, bottom first)
    values: Tensor  # (len(dims), steps): the value each dim takes along its row
    spread: Tensor  # (len(dims),): the standard deviation of that dim's posterior mean over the data


@torch.no_grad()
def traverse(model: VAE, x: Tensor, y: Tensor | None = None, dims: Sequence[int] | None = None, rows: int = 10,
             steps: int = 9, span: float = 3.0, base: int = 0) -> Traversal:
    """The classic beta-VAE picture (Higgins et al. 2017): start from the latent means of ``x[base]``
    and move one latent dim at a time from mean - span * sd to mean + span * sd, where mean and sd are
    that dim's over the posterior means of ``x``; the other dims stay put. Default ``dims``: the ``rows``
    dims whose means vary most over x (the active units of Burda et al. 2016, sec. 5.2), most active first.

    >>> grid = apps.traverse(model, test.x, rows=8, steps=7)  # doctest: +SKIP
    >>> grid.images.shape  # doctest: +SKIP
    torch.Size([56, 1, 8, 8])
    """
    x = as_batch(model, x)
    check_count(steps, "steps")
    if not 0 <= base < x.shape[0]:
        raise InputError(f"base={base} is out of range: x holds {x.shape[0]} examples (0..{x.shape[0] - 1})")
    labels = checked_labels(model, y, x.shape[0])
    model.eval()
    require_gaussian(model, x, labels, "a latent traversal", "map its latents with explore (PCA) or use interpolate")
    layers = [mean_code(model, x[i:i + BATCH_SIZE], None if labels is None else labels[i:i + BATCH_SIZE])
              for i in range(0, x.shape[0], BATCH_SIZE)]
    means = torch.cat([flatten_latents(layer) for layer in layers])  # (N, total)
    spread = means.std(0) if means.shape[0] > 1 else torch.ones(means.shape[1], device=means.device)
    if dims is None:
        check_count(rows, "rows")
        dims = spread.argsort(descending=True)[:rows].tolist()
    elif not dims or any(not 0 <= d < means.shape[1] for d in dims):
        raise InputError(f"dims={list(dims)} must be non-empty latent indices in 0..{means.shape[1] - 1}")
    offsets = torch.linspace(-span, span, steps, device=means.device)
    grid = means[base].repeat(len(dims) * steps, 1)  # (rows * steps, total)
    values = torch.stack([means[:, d].mean() + offsets * spread[d] for d in dims])  # (rows, steps)
    for row, d in enumerate(dims):
        grid[row * steps:(row + 1) * steps, d] = values[row]
    y_grid = None if labels is None else labels[base].repeat(grid.shape[0])
    images = decode_to_cpu(model, unflatten_latents(grid, layers[0]), y_grid)
    return Traversal(images, list(dims), values.cpu(), spread[list(dims)].cpu())
