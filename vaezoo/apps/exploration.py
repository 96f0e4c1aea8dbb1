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
    decode_in_batches,
    flatten_latents,
    mean_code,
    posterior_is_gaussian,
    require_examples,
    require_gaussian,
    unflatten_latents,
)
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count, check_output_size, check_positive_number
from vaezoo.errors import InputError
from vaezoo.eval.disentanglement_metrics import factor_of_each_code

MAP_METHODS = ("pca", "tsne")
MAP_NAMES = {"pca": "PCA", "tsne": "t-SNE"}  # how a figure names each method


def map_axis_labels(method: str) -> tuple[str, str]:
    """The axis labels of a latent map made by ``method``: ``("PC 1", "PC 2")`` or ``("t-SNE 1", "t-SNE 2")``."""
    name = "PC" if method == "pca" else MAP_NAMES[method]
    return f"{name} 1", f"{name} 2"


def posterior_means(model: VAE, x: Tensor, y: Tensor | None, batch_size: int = 1000) -> tuple[Tensor, bool]:
    """(N, D) posterior means, flattened (a list of per-layer means is concatenated), and whether the
    posterior is Gaussian in every layer (``posterior.is_gaussian``), for which active units are defined.

    The means are the deterministic code (``model.encode_mean``), as ``decode`` takes it.
    """
    require_examples(x, "x", "posterior_means")
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
    require_examples(x, "x", "a latent map")
    labels = checked_labels(model, y, x.shape[0])
    if method == "pca" and x.shape[0] == 1:  # one point: its principal coordinates are the origin
        return np.zeros((1, 2), dtype=np.float32)
    means, _ = posterior_means(model, x, labels)
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
    offsets: Tensor  # (steps,): each column's distance from that dim's mean, in units of its spread
    # With known factors: the factor each row's dim shares the most information with, and I(z; v) / H(v)
    factors: list[tuple[str, float]] | None = None

    def row_labels(self) -> list[str]:
        """One label per row: the latent index, the factor it captures where the data has factors, and the values it
        runs through, e.g. ``z4: -2.91 to +3.02`` or ``z4 ~ scale (0.81): -2.91 to +3.02``."""
        captured = self.factors or [None] * len(self.dims)
        return [f"z{dim}{'' if f is None else f' ~ {f[0]} ({f[1]:.2f})'}: {float(row[0]):+.2f} to {float(row[-1]):+.2f}"
                for dim, row, f in zip(self.dims, self.values, captured)]

    def column_labels(self) -> list[str]:
        """One label per column: its offset from the dim's mean in standard deviations, e.g. ``-3σ``, ``mean``."""
        return ["mean" if abs(float(o)) < 1e-9 else f"{float(o):+.3g}σ" for o in self.offsets]


@torch.no_grad()
def traverse(model: VAE, x: Tensor, y: Tensor | None = None, dims: Sequence[int] | None = None, rows: int = 10,
             steps: int = 9, span: float = 3.0, base: int = 0, factors: Tensor | None = None,
             factor_names: Sequence[str] | None = None) -> Traversal:
    """The classic beta-VAE picture (Higgins et al. 2017): start from the latent means of ``x[base]``
    and move one latent dim at a time from mean - span * sd to mean + span * sd, where mean and sd are
    that dim's over the posterior means of ``x``; the other dims stay put. Default ``dims``: the ``rows``
    dims whose means vary most over x (the active units of Burda et al. 2016, sec. 5.2), most active first.
    With the ground-truth ``factors`` of x (N, F) and their ``factor_names`` (shapes2d's), each row is labelled
    with the factor its dim shares the most information with (MIG's discretised I(z_j; v_k) / H(v_k)).

    >>> grid = apps.traverse(model, test.x, rows=8, steps=7)  # doctest: +SKIP
    >>> grid.images.shape  # doctest: +SKIP
    torch.Size([56, 1, 8, 8])
    """
    x = as_batch(model, x)
    require_examples(x, "x", "a latent traversal")
    check_count(steps, "steps")
    check_positive_number(span, "span", hint=" (standard deviations each side of the mean, e.g. 3)")
    if dims is not None:
        dims = [check_count(d, f"dims[{i}]", minimum=0, hint=" (a latent index)") for i, d in enumerate(dims)]
    shown_rows = check_count(rows, "rows") if dims is None else len(dims)
    check_output_size(shown_rows * steps, tuple(x.shape[1:]), "rows x steps")
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
    images = decode_in_batches(model, unflatten_latents(grid, layers[0]), y_grid, tuple(x.shape[1:]))  # x's own size
    captured = None if factors is None else _captured_factors(means[:, list(dims)].cpu(), factors, factor_names)
    return Traversal(images, list(dims), values.cpu(), spread[list(dims)].cpu(), offsets.cpu(), captured)


def _captured_factors(codes: Tensor, factors: Tensor, names: Sequence[str] | None) -> list[tuple[str, float]]:
    """(factor name, I(z; v) / H(v)) of each code column (N, rows), from the factors (N, F) of the same examples."""
    if factors.shape[0] != codes.shape[0] or factors.dim() != 2:
        raise InputError(f"factors has shape {tuple(factors.shape)}; give one row of factor values per example of x "
                         f"({codes.shape[0]}, F)")
    names = list(names) if names is not None else [f"factor {k}" for k in range(factors.shape[1])]
    if len(names) != factors.shape[1]:
        raise InputError(f"factor_names has {len(names)} names for {factors.shape[1]} factors; name each column once")
    best, shares = factor_of_each_code(codes.numpy(), factors.numpy())
    return [(names[k], float(share)) for k, share in zip(best, shares)]
