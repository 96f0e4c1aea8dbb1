"""Interpolation and latent arithmetic: lerp and slerp paths between two examples, attribute vectors added to latents."""
from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.apps._common import (
    BATCH_SIZE,
    as_batch,
    check_choice,
    checked_labels,
    decode_in_batches,
    decode_to_cpu,
    flatten_latents,
    map_latents,
    mean_code,
    model_label,
    require_gaussian,
    unflatten_latents,
)
from vaezoo.core.contract import Latent
from vaezoo.core.model import VAE
from vaezoo.core.validation import check_count, check_finite_number, check_output_size
from vaezoo.errors import CapabilityError, InputError

INTERPOLATION_METHODS = ("lerp", "slerp")


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """(1 - t) z0 + t z1 for each t: z0, z1 of one shape (...), t (S,) -> (S, ...)."""
    t = t.to(z0).view(-1, *([1] * z0.dim()))
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation along the great circle from z0 to z1 (Shoemake 1985; White 2016,
    arXiv:1609.04468): sin((1 - t) W) / sin W * z0 + sin(t W) / sin W * z1, cos W = <z0, z1> / (|z0| |z1|).
    z0, z1 of one shape (...), t (S,) -> (S, ...).

    Under a N(0, I) prior in many dims nearly all mass lies near the sphere of radius sqrt(D); lerp's
    midpoints cut inside it (their norm shrinks), slerp keeps the norm when |z0| = |z1|. Nearly
    parallel ends fall back to lerp, where the two agree.
    """
    flat0, flat1 = z0.reshape(-1).double(), z1.reshape(-1).double()
    cos = torch.dot(flat0, flat1) / (flat0.norm() * flat1.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(torch.sin(omega)) < 1e-4:
        return lerp(z0, z1, t)
    t = t.double().view(-1, 1).to(flat0.device)
    path = (torch.sin((1 - t) * omega) * flat0 + torch.sin(t * omega) * flat1) / torch.sin(omega)  # (S, D)
    return path.to(z0.dtype).view(-1, *z0.shape)


@torch.no_grad()
def interpolate(model: VAE, x_from: Tensor, x_to: Tensor, steps: int = 10, method: str = "lerp",
                y_from: int | None = None, y_to: int | None = None) -> Tensor:
    """Decode a path between the latents of two examples: (steps, *input_shape), ends included (for a variant of
    any image size, two images of one size: (steps, C, H, W) at theirs).

    ``method`` is ``lerp`` (any latents: for discrete codes the path runs between the decoder inputs,
    whose intermediate points are not codebook vectors) or ``slerp`` (Gaussian latents; each layer of a
    hierarchy separately). A conditional model decodes the first half with ``y_from`` and the second
    with ``y_to``, so each end is rendered with its own label.

    >>> apps.interpolate(model, test.x[0], test.x[1], steps=5, method="slerp").shape  # doctest: +SKIP
    torch.Size([5, 1, 8, 8])
    """
    check_choice(method, INTERPOLATION_METHODS, "method")
    check_count(steps, "steps", minimum=2, hint=" (the two ends are included)")
    first, last = _one_example(model, x_from, "x_from"), _one_example(model, x_to, "x_to")
    if first.shape != last.shape:  # a variant of any image size: two images of different sizes have different grids
        raise InputError(f"x_from is {tuple(first.shape[1:])} but x_to is {tuple(last.shape[1:])}; an interpolation "
                         "runs between two images of one size, so resize or crop one of them")
    check_output_size(steps, tuple(first.shape[1:]), "steps")
    x = torch.cat([first, last])
    label_from, label_to = checked_labels(model, y_from, 1, "y_from"), checked_labels(model, y_to, 1, "y_to")
    labels = None if label_from is None else torch.cat([label_from, label_to])
    model.eval()
    if method == "slerp":
        require_gaussian(model, x, labels, "slerp", "use method='lerp'")
    latents = mean_code(model, x, labels)
    t = torch.linspace(0, 1, steps, device=model.device)
    path_function = slerp if method == "slerp" else lerp
    path = map_latents(lambda z: path_function(z[0], z[1], t), latents)
    y = None if labels is None else torch.where(t < 0.5, labels[0], labels[1])
    return decode_in_batches(model, path, y, tuple(x.shape[1:]))


def _one_example(model: VAE, x: Tensor, what: str) -> Tensor:
    """One end of a path as a (1, *input_shape) batch: a batch of several would silently use its first row."""
    batch = as_batch(model, x, what)
    if batch.shape[0] != 1:
        raise InputError(f"{what} holds {batch.shape[0]} examples; an interpolation runs between two examples, so pass "
                         f"one, shape {tuple(model.config.input_shape)} (e.g. {what}=x[i])")
    return batch


@torch.no_grad()
def attribute_vector(model: VAE, x: Tensor, attribute: Tensor, value: int) -> Latent:
    """The mean latent of the examples whose ``attribute`` equals ``value``, minus the mean latent of all
    (White 2016, arXiv:1609.04468, "attribute vectors"): adding it to a latent moves that example towards ``value``.

    ``attribute`` is (N,) ints, e.g. class labels. Returns a (D,) tensor (a list per layer for a hierarchy).

    >>> zero = apps.attribute_vector(model, splits.train.x, splits.train.y, 0)  # doctest: +SKIP
    >>> apps.add_attribute(model, some_sixes, zero, scale=1.5)                     # doctest: +SKIP
    """
    if model.capabilities.conditional:
        raise CapabilityError(f"{model_label(model)} keeps the class outside z, so class attribute vectors are ~0; "
                              "re-render examples as another class with apps.transfer (vaezoo transfer)")
    x = as_batch(model, x)
    if tuple(attribute.shape) != (x.shape[0],):
        raise InputError(f"attribute has shape {tuple(attribute.shape)}; "
                         f"pass one value per example, shape ({x.shape[0]},)")
    chosen = attribute.to(x.device) == value
    if not chosen.any():
        raise InputError(f"no example has attribute value {value}; "
                         f"the values present are {sorted(set(attribute.tolist()))}")
    model.eval()
    require_gaussian(model, x, None, "an attribute vector", "use lerp interpolation, or transfer with a conditional model")
    parts = [mean_code(model, x[i:i + BATCH_SIZE], None) for i in range(0, x.shape[0], BATCH_SIZE)]
    flat = torch.cat([flatten_latents(part) for part in parts])  # (N, total)
    vector = flat[chosen].mean(0, keepdim=True) - flat.mean(0, keepdim=True)
    unflat = unflatten_latents(vector, parts[0])
    return map_latents(lambda layer: layer[0], unflat)


@torch.no_grad()
def add_attribute(model: VAE, x: Tensor, vector: Latent, scale: float = 1.0) -> Tensor:
    """Decode z(x) + scale * vector for each example: (B, *input_shape), on the CPU (latent arithmetic).
    To move a prior sample instead: ``decode_latents(model, model.prior_sample(n) + scale * vector)``."""
    x = as_batch(model, x)
    check_finite_number(scale, "scale", hint=" (how far to move along the attribute vector, e.g. 1.5)")
    if x.shape[0] == 0:
        return torch.empty((0, *model.config.input_shape))
    model.eval()
    require_gaussian(model, x, None, "latent arithmetic", "use lerp interpolation")
    latents = mean_code(model, x, None)
    if isinstance(latents, Tensor) != isinstance(vector, Tensor):
        raise InputError("the attribute vector does not fit this model's latents (a hierarchy's is a list per layer); "
                         "compute it with apps.attribute_vector on the same model")
    try:
        moved = map_latents(lambda z, v: z + scale * v.to(z), latents, vector)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"the attribute vector does not fit this model's latents ({error}); "
                         "compute it with apps.attribute_vector on the same model") from None
    return decode_to_cpu(model, moved, None)
