"""What VAEs are used for (the seed's sections 3 and 7), as functions of a model and tensors.

Every function takes a :class:`vaezoo.VAE` and tensors shaped ``(B, *input_shape)`` and returns tensors,
arrays or a small dataclass; ``vaezoo.app_runs`` wraps each one as a command (``vaezoo sample``, ...).

>>> import vaezoo
>>> from vaezoo import apps
>>> from vaezoo.data import load_data
>>> test = load_data("digits").test
>>> model = vaezoo.from_pretrained("vae-mlp.digits")
>>> apps.generate(model, 16, seed=0).shape                        # generation
torch.Size([16, 1, 8, 8])
>>> apps.interpolate(model, test.x[0], test.x[1], steps=5, method="slerp").shape
torch.Size([5, 1, 8, 8])
>>> filled = apps.impute(model, test.x, apps.bottom_half_mask((1, 8, 8)))   # NaN means missing when no mask
>>> report = apps.detect_anomalies(model, test.x, reference=load_data("digits").val.x)
>>> cvae = vaezoo.from_pretrained("cvae.digits")
>>> apps.transfer(cvae, test.x[:4], test.y[:4], to_label=7).shape  # re-rendered as sevens
torch.Size([4, 1, 8, 8])

Latents are what ``decode`` takes: a tensor, or for a hierarchy a list of tensors, bottom first.
Methods that need a Gaussian posterior (slerp, attribute vectors, traversals, Metropolis-within-Gibbs)
raise :class:`CapabilityError` for discrete latents (vq-vae) and say what works instead.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaezoo.core.distributions import DiagonalGaussian, standard_normal_log_prob
from vaezoo.core.model import VAE
from vaezoo.errors import CapabilityError, InputError, did_you_mean

logger = logging.getLogger(__name__)

Latent = Tensor | list[Tensor]  # what decode takes: (B, ...) or, for a hierarchy, [z_1, ..., z_L] bottom first

IMPUTATION_ITERATIONS = 20  # iterated reconstruction: enough to converge on digits and Fashion-MNIST
MWG_ITERATIONS = 300  # Metropolis-within-Gibbs chain length; the first quarter is burn-in
INTERPOLATION_METHODS = ("lerp", "slerp")
IMPUTATION_METHODS = ("iterate", "mwg")
ANOMALY_METHODS = ("elbo", "iwae")
MAP_METHODS = ("pca", "tsne")
BATCH_SIZE = 1000


# --- shared pieces: names, seeds, inputs, latents ------------------------------------------------
def model_label(model: VAE) -> str:
    """The name a message should use: the registry name or tag (``cvae.digits``), else the class name."""
    return model.model_name


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Fix torch's RNG inside the block when ``seed`` is given, leaving the global state as it was."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):  # manual_seed seeds CUDA too
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise InputError(f"{what}={value!r} is unknown; use one of {', '.join(choices)}"
                         + did_you_mean(str(value), choices))
    return value


def _check_shape(model: VAE, x: Tensor, what: str = "x") -> None:
    """x must be a float (B, *input_shape) tensor (labels are checked apart, by _labels)."""
    expected = ", ".join(map(str, model.config.input_shape))
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch.Tensor of shape (B, {expected}), got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(model.config.input_shape):
        raise InputError(f"{what} has shape {tuple(x.shape)} but {model_label(model)} takes (B, {expected}); "
                         "reshape it, or use a model trained on data of this shape")
    if not x.is_floating_point():
        raise InputError(f"{what} has dtype {x.dtype}; convert it to float in [0, 1] (e.g. x.float() / 255)")


def _as_batch(model: VAE, x: Tensor, what: str = "x") -> Tensor:
    """One example (*input_shape) or a batch (B, *input_shape), as a batch on the model's device."""
    if isinstance(x, Tensor) and tuple(x.shape) == tuple(model.config.input_shape):
        x = x.unsqueeze(0)
    _check_shape(model, x, what)
    if not torch.isfinite(x).all():
        raise InputError(f"{what} holds NaN or Inf values; only impute() takes missing values (NaN)")
    return x.to(model.device, _dtype(model))


def _dtype(model: VAE) -> torch.dtype:
    return next(model.parameters()).dtype  # the dtype the model computes in (float16 weights are loaded as float32)


def _labels(model: VAE, y: Tensor | int | None, batch: int, what: str = "y") -> Tensor | None:
    """Labels for a conditional model as a (batch,) long tensor; None, and an error if given, otherwise."""
    if not model.is_conditional:
        if y is not None:
            raise InputError(f"{model_label(model)} is not conditional, so it takes no label ({what}={_show(y)}); "
                             "drop it, or use a conditional model such as cvae")
        return None
    classes = model.config.num_classes
    if y is None:
        raise InputError(f"{model_label(model)} is conditional: pass {what} (labels in 0..{classes - 1})")
    if isinstance(y, int) or (isinstance(y, Tensor) and y.dim() == 0):
        y = torch.full((batch,), int(y), dtype=torch.long)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise InputError(f"{what}={bad} is out of range: {model_label(model)} knows labels 0..{classes - 1}")
    if tuple(y.shape) != (batch,):
        raise InputError(f"{what} has shape {tuple(y.shape)}; pass one label per example, shape ({batch},)")
    return y.to(model.device, torch.long)


def _show(y: Tensor | int) -> str:
    return str(y) if isinstance(y, int) else str(y.tolist() if y.numel() <= 4 else f"tensor of shape {tuple(y.shape)}")


def _posterior(model: VAE, x: Tensor, y: Tensor | None) -> object:
    """q(z | x, y). A hierarchy whose ``encode`` takes ``temperature`` is run at 0, so each layer's mean is
    conditioned on the means above it (a deterministic code) rather than on one sample of them."""
    if "temperature" in inspect.signature(model.encode).parameters:
        return model.encode(x, y, temperature=0.0)
    return model.encode(x, y)


def _is_gaussian(posterior: object) -> bool:
    layers = getattr(posterior, "posteriors", [posterior])
    return all(isinstance(layer, DiagonalGaussian) for layer in layers)


def _means(posterior: object) -> Latent:
    mean = posterior.mean  # type: ignore[attr-defined]
    return list(mean) if isinstance(mean, (list, tuple)) else mean


@torch.no_grad()
def encode_means(model: VAE, x: Tensor, y: Tensor | int | None = None) -> Latent:
    """The posterior means E_q[z | x] as ``decode`` takes them: (B, D), or a list per layer for a hierarchy."""
    x = _as_batch(model, x)
    return _means(_posterior(model.eval(), x, _labels(model, y, x.shape[0])))


def _require_gaussian(model: VAE, x: Tensor, y: Tensor | None, what: str, instead: str) -> Latent:
    """The posterior means of x, or a CapabilityError when the posterior is not Gaussian."""
    posterior = _posterior(model, x, y)
    if not _is_gaussian(posterior):
        raise CapabilityError(f"{what} needs a Gaussian posterior, but {model_label(model)}'s latents are discrete "
                              f"codes ({type(posterior).__name__}); {instead}")
    return _means(posterior)


def _map(function: Callable[..., Tensor], *latents: Latent) -> Latent:
    """Apply ``function`` layer by layer to latents that are tensors or lists of tensors."""
    if isinstance(latents[0], Tensor):
        return function(*latents)
    return [function(*layers) for layers in zip(*latents)]


def _flatten(latent: Latent) -> Tensor:  # (B, ...) or layers -> (B, total)
    parts = [latent] if isinstance(latent, Tensor) else latent
    return torch.cat([part.flatten(1) for part in parts], dim=1)


def _unflatten(flat: Tensor, like: Latent) -> Latent:  # (B, total) -> the structure of ``like``
    parts = [like] if isinstance(like, Tensor) else like
    sizes = [part[0].numel() for part in parts]
    pieces = [piece.reshape(flat.shape[0], *part.shape[1:]) for piece, part in zip(flat.split(sizes, dim=1), parts)]
    return pieces[0] if isinstance(like, Tensor) else pieces


def _decode(model: VAE, z: Latent, y: Tensor | None) -> Tensor:
    """Images (the likelihood's mean) of latents z, on the CPU."""
    return model.likelihood.mean(model.decode(z, y)).float().cpu()


@torch.no_grad()
def decode_latents(model: VAE, z: Latent, y: Tensor | int | None = None) -> Tensor:
    """Examples (the likelihood's mean) of latents as ``decode`` takes them, on the CPU.

    >>> apps.decode_latents(model, model.prior_sample(8) + 1.5 * apps.attribute_vector(model, x, y, 0))  # doctest: +SKIP
    """
    batch = (z if isinstance(z, Tensor) else z[0]).shape[0]
    return _decode(model.eval(), z, _labels(model, y, batch))


# --- generation ----------------------------------------------------------------------------------
def sample_labels(model: VAE, n: int, label: int | Tensor | None = None) -> Tensor | None:
    """Labels for ``n`` samples: None for an unconditional model; ``label`` repeated; or, for a conditional
    model with no label, the classes in turn (0, 1, ..., C-1, 0, ...) so every class appears."""
    if model.is_conditional and label is None:
        return torch.arange(n) % model.config.num_classes
    labels = _labels(model, label, n, "label")
    return None if labels is None else labels.cpu()


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature={temperature!r} must be a number > 0 (1 samples the prior itself)")


def _check_count(n: int, what: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{what}={n!r} must be a positive integer")


@torch.no_grad()
def generate(model: VAE, n: int, label: int | Tensor | None = None, temperature: float = 1.0,
             seed: int | None = None) -> Tensor:
    """``n`` samples from the model's prior (a learned one for vq-vae), shape (n, *input_shape), on the CPU.

    ``label`` (an int or n ints) picks the class of a conditional model; without one a conditional
    model cycles through its classes. ``temperature`` scales the prior's noise (< 1: typical samples).

    >>> apps.generate(cvae, 8, label=3, seed=0)  # doctest: +SKIP
    """
    _check_count(n)
    _check_temperature(temperature)
    labels = sample_labels(model, n, label)
    model.eval()
    chunks = []
    with seeded(seed):
        for begin in range(0, n, BATCH_SIZE):
            count = min(BATCH_SIZE, n - begin)
            y = None if labels is None else labels[begin:begin + count].to(model.device)
            chunks.append(model.sample(count, y=y, temperature=temperature).float().cpu())
    return torch.cat(chunks)


# --- reconstruction ------------------------------------------------------------------------------
@torch.no_grad()
def reconstruct(model: VAE, x: Tensor, y: Tensor | int | None = None) -> Tensor:
    """Decode the posterior mean of each input: (B, *input_shape) -> (B, *input_shape), on the CPU."""
    x = _as_batch(model, x)
    y = _labels(model, y, x.shape[0])
    model.eval()
    return torch.cat([model.reconstruct(x[i:i + BATCH_SIZE], None if y is None else y[i:i + BATCH_SIZE]).float().cpu()
                      for i in range(0, x.shape[0], BATCH_SIZE)])


# --- interpolation and latent arithmetic ---------------------------------------------------------
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
    """Decode a path between the latents of two examples: (steps, *input_shape), ends included.

    ``method`` is ``lerp`` (any latents: for vq-vae the path runs between the decoder inputs, whose
    intermediate points are not codebook vectors) or ``slerp`` (Gaussian latents; each layer of a
    hierarchy separately). A conditional model decodes the first half with ``y_from`` and the second
    with ``y_to``, so each end is rendered with its own label.
    """
    _choice(method, INTERPOLATION_METHODS, "method")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise InputError(f"steps={steps!r} must be an integer >= 2 (the two ends are included)")
    x = torch.cat([_as_batch(model, x_from, "x_from"), _as_batch(model, x_to, "x_to")])
    label_from, label_to = _labels(model, y_from, 1, "y_from"), _labels(model, y_to, 1, "y_to")
    labels = None if label_from is None else torch.cat([label_from, label_to])
    model.eval()
    if method == "slerp":
        latents = _require_gaussian(model, x, labels, "slerp", "use method='lerp'")
    else:
        latents = _means(_posterior(model, x, labels))
    t = torch.linspace(0, 1, steps, device=model.device)
    path_function = slerp if method == "slerp" else lerp
    path = _map(lambda z: path_function(z[0], z[1], t), latents)
    y = None if labels is None else torch.where(t < 0.5, labels[0], labels[1])
    return _decode(model, path, y)


@torch.no_grad()
def attribute_vector(model: VAE, x: Tensor, attribute: Tensor, value: int) -> Latent:
    """The mean latent of the examples whose ``attribute`` equals ``value``, minus the mean latent of all
    (White 2016, arXiv:1609.04468, "attribute vectors"): adding it to a latent moves that example towards ``value``.

    ``attribute`` is (N,) ints, e.g. class labels. Returns a (D,) tensor (a list per layer for a hierarchy).

    >>> zero = apps.attribute_vector(model, splits.train.x, splits.train.y, 0)  # doctest: +SKIP
    >>> apps.add_attribute(model, some_sixes, zero, scale=1.5)                     # doctest: +SKIP
    """
    if model.is_conditional:
        raise CapabilityError(f"{model_label(model)} keeps the class outside z, so class attribute vectors are ~0; "
                              "re-render examples as another class with apps.transfer (vaezoo transfer)")
    x = _as_batch(model, x)
    if tuple(attribute.shape) != (x.shape[0],):
        raise InputError(f"attribute has shape {tuple(attribute.shape)}; "
                         f"pass one value per example, shape ({x.shape[0]},)")
    chosen = attribute.to(x.device) == value
    if not chosen.any():
        raise InputError(f"no example has attribute value {value}; "
                         f"the values present are {sorted(set(attribute.tolist()))}")
    model.eval()
    parts = [_require_gaussian(model, x[i:i + BATCH_SIZE], None, "an attribute vector",
                               "use lerp interpolation, or transfer with a cvae")
             for i in range(0, x.shape[0], BATCH_SIZE)]
    flat = torch.cat([_flatten(part) for part in parts])  # (N, total)
    vector = flat[chosen].mean(0, keepdim=True) - flat.mean(0, keepdim=True)
    unflat = _unflatten(vector, parts[0])
    return _map(lambda layer: layer[0], unflat)


@torch.no_grad()
def add_attribute(model: VAE, x: Tensor, vector: Latent, scale: float = 1.0) -> Tensor:
    """Decode z(x) + scale * vector for each example: (B, *input_shape), on the CPU (latent arithmetic).
    To move a prior sample instead: ``decode_latents(model, model.prior_sample(n) + scale * vector)``."""
    x = _as_batch(model, x)
    model.eval()
    latents = _require_gaussian(model, x, None, "latent arithmetic", "use lerp interpolation")
    if isinstance(latents, Tensor) != isinstance(vector, Tensor):
        raise InputError("the attribute vector does not fit this model's latents (a hierarchy's is a list per layer); "
                         "compute it with apps.attribute_vector on the same model")
    try:
        moved = _map(lambda z, v: z + scale * v.to(z), latents, vector)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"the attribute vector does not fit this model's latents ({error}); "
                         "compute it with apps.attribute_vector on the same model") from None
    return _decode(model, moved, None)


# --- anomaly detection ---------------------------------------------------------------------------
def _every_label(model: VAE, xb: Tensor, score: Callable[[Tensor], Tensor]) -> Tensor:
    """score(labels) for every label of a conditional model, stacked: (num_classes, B)."""
    return torch.stack([score(torch.full((xb.shape[0],), c, dtype=torch.long, device=xb.device))
                        for c in range(model.config.num_classes)])


@torch.no_grad()
def neg_elbo_scores(model: VAE, x: Tensor, y: Tensor | None = None, batch_size: int = 500, seed: int = 0) -> Tensor:
    """Per-example -ELBO, (N,). A conditional model is scored without labels: the minimum over all labels."""
    model.eval()
    scores = []
    with seeded(seed):
        for begin in range(0, x.shape[0], batch_size):
            xb = x[begin:begin + batch_size].to(model.device)
            if model.is_conditional:
                scores.append(_every_label(model, xb, lambda y: model(xb, y).neg_elbo).min(dim=0).values.cpu())
            else:
                scores.append(model(xb).neg_elbo.cpu())
    return torch.cat(scores)


@torch.no_grad()
def nll_scores(model: VAE, x: Tensor, k: int = 100, batch_size: int = 100, seed: int = 0) -> Tensor:
    """Per-example importance-weighted -log p(x) with k samples (Burda et al. 2016, eq. 8), (N,).

    A conditional model is scored without labels under a uniform p(y):
    -log p(x) = -log (1/C) sum_y p(x | y).
    """
    if not model.has_log_likelihood:
        raise CapabilityError(f"{model_label(model)} has no importance-weighted likelihood; score it by -ELBO "
                              "(method='elbo', --method elbo)")
    model.eval()
    scores = []
    with seeded(seed):
        for begin in range(0, x.shape[0], batch_size):
            xb = x[begin:begin + batch_size].to(model.device)
            if model.is_conditional:
                per_label = _every_label(model, xb, lambda y: model.log_likelihood(xb, y, iw_samples=k))  # (C, B)
                log_px = torch.logsumexp(per_label, 0) - math.log(model.config.num_classes)
            else:
                log_px = model.log_likelihood(xb, iw_samples=k)
            scores.append(-log_px.cpu())
    return torch.cat(scores)


def anomaly_scores(model: VAE, x: Tensor, method: str = "elbo", k: int = 100, seed: int = 0) -> Tensor:
    """How unlikely each example is under the model, in nats (higher = more anomalous), (N,):
    ``elbo`` scores by -ELBO, ``iwae`` by the importance-weighted -log p(x) with k samples (tighter, k times slower)."""
    _choice(method, ANOMALY_METHODS, "method")
    x = _as_batch(model, x)
    return neg_elbo_scores(model, x, seed=seed) if method == "elbo" else nll_scores(model, x, k=k, seed=seed)


@dataclass
class AnomalyReport:
    """Scores of examples, the threshold they were judged against, and how well that separates, when known."""

    scores: Tensor  # (N,) nats, higher = more anomalous
    flagged: Tensor  # (N,) bool, scores > threshold
    threshold: float  # the quantile of the reference (normal) scores
    quantile: float
    method: str  # "elbo" or "iwae"
    is_anomaly: Tensor | None = None  # (N,) bool ground truth, when known
    auroc: float | None = None  # area under the ROC curve of scores for is_anomaly, when both kinds are present

    def summary(self) -> str:
        """One line: threshold, how many are flagged, and the AUROC when known."""
        text = (f"threshold {self.threshold:.2f} nats (-{'ELBO' if self.method == 'elbo' else 'log p(x)'}, "
                f"{self.quantile:.3g} quantile of the reference); flagged {int(self.flagged.sum())} of {len(self.scores)}")
        if self.is_anomaly is not None:
            detected = int((self.flagged & self.is_anomaly).sum())
            text += f" ({detected} of {int(self.is_anomaly.sum())} true anomalies)"
        if self.auroc is not None:
            text += f"; AUROC {self.auroc:.4f}"
        return text


def detect_anomalies(model: VAE, x: Tensor, reference: Tensor, *, is_anomaly: Tensor | None = None,
                     method: str = "elbo", quantile: float = 0.95, k: int = 100, seed: int = 0) -> AnomalyReport:
    """Score ``x``, flag those above the ``quantile`` of the scores of ``reference`` (normal examples the
    model did not train on, e.g. the validation split), and, given the truth ``is_anomaly``, the AUROC.

    The seed's recipe (section 7): anomalous data is less likely under a model of the normal data.

    >>> report = apps.detect_anomalies(model, test_x, reference=val_x, is_anomaly=test_y == 0)  # doctest: +SKIP
    >>> report.auroc  # doctest: +SKIP
    """
    if not (isinstance(quantile, (int, float)) and 0 < quantile < 1):
        raise InputError(f"quantile={quantile!r} must be in (0, 1), e.g. 0.95 flags 5% of normal examples")
    if len(reference) == 0:
        raise InputError("reference holds no examples; pass normal examples (e.g. the validation split) "
                         "to set the threshold")
    scores = anomaly_scores(model, x, method, k, seed)
    threshold = float(torch.quantile(anomaly_scores(model, reference, method, k, seed).double(), quantile))
    report = AnomalyReport(scores, scores > threshold, threshold, float(quantile), method)
    if is_anomaly is not None:
        if tuple(is_anomaly.shape) != (len(scores),):
            raise InputError(f"is_anomaly has shape {tuple(is_anomaly.shape)}; "
                             f"pass one bool per example, ({len(scores)},)")
        report.is_anomaly = is_anomaly.bool().cpu()
        if 0 < int(report.is_anomaly.sum()) < len(scores):
            from sklearn.metrics import roc_auc_score

            report.auroc = float(roc_auc_score(report.is_anomaly.numpy(), scores.numpy()))
    return report


# --- imputation ----------------------------------------------------------------------------------
def bottom_half_mask(input_shape: tuple[int, ...]) -> Tensor:
    """(1, C, H, W) bool mask, True on the hidden pixels: the bottom half of the rows."""
    channels, height, width = input_shape
    mask = torch.zeros(1, channels, height, width, dtype=torch.bool)
    mask[:, :, height // 2:, :] = True
    return mask


def observed_mean_fill(x: Tensor, hidden: Tensor) -> Tensor:
    """(1, *shape): each feature's mean over the examples where it is observed (0.5 where it never is)."""
    observed = (~hidden).to(x.dtype)
    total = torch.where(hidden, torch.zeros_like(x), x).sum(0, keepdim=True)
    count = observed.sum(0, keepdim=True)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, 0.5))


def _imputation_inputs(model: VAE, x: Tensor, hidden: Tensor | None, fill: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Check x and the mask; return (x with missing values filled, in the model's dtype; hidden (B, ...); fill)."""
    _check_shape(model, x)
    if torch.isinf(x).any():
        raise InputError("x holds Inf values; mark missing values with NaN (or a mask), not Inf")
    missing = torch.isnan(x)
    if hidden is None:
        hidden = missing
    else:
        if not isinstance(hidden, Tensor) or hidden.dtype != torch.bool:
            got = getattr(hidden, "dtype", type(hidden).__name__)
            raise InputError(f"the mask must be a bool tensor (True = missing), got {got}")
        try:
            hidden = hidden.to(x.device).expand_as(x) | missing
        except RuntimeError:
            raise InputError(f"the mask has shape {tuple(hidden.shape)} but x has {tuple(x.shape)}; "
                             "give one bool per value of x (True = missing)") from None
    dtype = _dtype(model)
    values = torch.where(hidden, torch.zeros((), dtype=x.dtype, device=x.device), x).to(model.device, dtype)
    hidden = hidden.to(model.device)
    if model.config.likelihood == "bernoulli" and values.numel() and (values.min() < 0 or values.max() > 1):
        raise InputError(f"observed values span {float(values.min()):.3g}..{float(values.max()):.3g}, but "
                         f"{model_label(model)} models values in [0, 1]; scale them as its training data was")
    fill = observed_mean_fill(values, hidden) if fill is None else fill.to(model.device, dtype)
    return torch.where(hidden, fill.expand_as(values), values), hidden, fill


@torch.no_grad()
def impute(model: VAE, x: Tensor, hidden: Tensor | None = None, fill: Tensor | None = None, y: Tensor | None = None,
           iterations: int | None = None, method: str = "iterate", burn_in: int | None = None,
           seed: int | None = None) -> Tensor:
    """Fill missing values of x with the model; observed values are returned bit for bit.

    ``hidden`` (bool, True = missing, broadcastable to x) marks what to fill; NaN in x is missing too,
    and with no mask NaN is all that is. ``fill`` starts the missing values (default: each feature's
    mean where observed). Methods:

    - ``iterate``: iterated reconstruction (Rezende et al. 2014, arXiv:1401.4082, sec. 5.3): the missing
      values become the reconstruction of the current guess, ``iterations`` times (default 20). Any variant.
    - ``mwg``: Metropolis-within-Gibbs (Mattei and Frellsen 2018, arXiv:1802.02484, algorithm 1), a
      Markov chain whose stationary law is the model's p(z, x_mis | x_obs); returns the chain's mean
      of E[x_mis | z] after ``burn_in`` (default a quarter of ``iterations``, default 300). Needs one
      Gaussian latent with an N(0, I) prior.

    x: (B, *input_shape), any float dtype; returns the same shape and dtype, on x's device.

    >>> filled = apps.impute(model, x_with_nans)                                   # doctest: +SKIP
    >>> filled = apps.impute(model, x, apps.bottom_half_mask((1, 8, 8)), method="mwg", seed=0)  # doctest: +SKIP
    """
    _choice(method, IMPUTATION_METHODS, "method")
    if iterations is None:
        iterations = IMPUTATION_ITERATIONS if method == "iterate" else MWG_ITERATIONS
    _check_count(iterations, "iterations")
    start, hidden_full, _ = _imputation_inputs(model, x, hidden, fill)
    y = _labels(model, y, x.shape[0])
    model.eval()
    with seeded(seed):
        if method == "iterate":
            imputed = _iterated_reconstruction(model, start, hidden_full, y, iterations)
        else:
            burn_in = iterations // 4 if burn_in is None else burn_in
            if not 0 <= burn_in < iterations:
                raise InputError(f"burn_in={burn_in} must be in 0..{iterations - 1} (iterations={iterations})")
            imputed = _metropolis_within_gibbs(model, start, hidden_full, y, iterations, burn_in)
    result = x.clone()
    hidden_here = hidden_full.to(x.device)
    result[hidden_here] = imputed.to(x.device, x.dtype)[hidden_here]
    return result


def _iterated_reconstruction(model: VAE, start: Tensor, hidden: Tensor, y: Tensor | None, iterations: int) -> Tensor:
    current = start
    for _ in range(iterations):
        current = torch.where(hidden, model.reconstruct(current, y), start)
    return current


def _metropolis_within_gibbs(model: VAE, start: Tensor, hidden: Tensor, y: Tensor | None, iterations: int,
                             burn_in: int) -> Tensor:
    """Mattei and Frellsen 2018, algorithm 1. Each step, with the completed x_t = (x_obs, x_mis):

        z' ~ q(z | x_t),   accept with prob min(1, p(x_t | z') p(z') q(z | x_t) / (p(x_t | z) p(z) q(z' | x_t)))
        x_mis ~ p(x_mis | z)      (the decoder factorises over values, so this is exact)

    The encoder is only the proposal: the accept step corrects it, so the chain targets the model's
    own p(z, x_mis | x_obs), unlike iterated reconstruction.
    """
    posterior = model.encode(start, y)
    if not isinstance(posterior, DiagonalGaussian):
        raise CapabilityError(f"Metropolis-within-Gibbs needs one Gaussian latent q(z | x) with an N(0, I) prior; "
                              f"{model_label(model)}'s posterior is a {type(posterior).__name__}: use method='iterate'")

    def log_joint(z: Tensor, x: Tensor) -> Tensor:  # log p(x | z) + log p(z), (B,)
        return model.likelihood.log_prob(model.decode(z, y), x) + standard_normal_log_prob(z)

    current, z = start, posterior.rsample()
    total, kept, accepted = torch.zeros_like(start), 0, 0.0
    for step in range(iterations):
        posterior = model.encode(current, y)
        proposal = posterior.rsample()
        log_ratio = (log_joint(proposal, current) - posterior.log_prob(proposal)
                     - log_joint(z, current) + posterior.log_prob(z))  # (B,)
        accept = torch.rand_like(log_ratio).log() < log_ratio
        z = torch.where(accept.view(-1, *([1] * (z.dim() - 1))), proposal, z)
        params = model.decode(z, y)
        current = torch.where(hidden, model.likelihood.sample(params), start)
        accepted += float(accept.float().mean())
        if step >= burn_in:
            total += model.likelihood.mean(params)
            kept += 1
    logger.info("Metropolis-within-Gibbs: acceptance rate %.3f over %d steps", accepted / iterations, iterations)
    return torch.where(hidden, total / kept, start)


# --- style transfer ------------------------------------------------------------------------------
def require_conditional(model: VAE, what: str, instead: str = "") -> None:
    """Raise CapabilityError, saying ``what`` needs labels (and what to do ``instead``), unless the model takes them."""
    if not model.is_conditional:
        raise CapabilityError(f"{model_label(model)} is not conditional, but {what} needs a conditional model such as "
                              f"cvae (e.g. cvae.digits, cvae.fmnist){'; ' + instead if instead else ''}")


def check_label(model: VAE, label: int, what: str = "label") -> None:
    """Raise InputError unless ``label`` is a class of this conditional model (or, unconditional, is None)."""
    _labels(model, label, 1, what)


@torch.no_grad()
def transfer(model: VAE, x: Tensor, y: Tensor | int, to_label: Tensor | int) -> Tensor:
    """Re-render examples as another class: z = mean of q(z | x, y) with the true labels y, decoded with
    ``to_label`` (the analogies of Kingma et al. 2014, arXiv:1406.5298; Sohn et al. 2015). z holds
    what the label does not (the style: slant, thickness), so it carries over. Conditional models only.

    >>> apps.transfer(cvae, test.x[:8], test.y[:8], to_label=7)  # doctest: +SKIP
    """
    require_conditional(model, "style transfer (encode with the true label, decode with another)")
    x = _as_batch(model, x)
    source = _labels(model, y, x.shape[0], "y")
    target = _labels(model, to_label, x.shape[0], "to_label")
    model.eval()
    return _decode(model, _means(_posterior(model, x, source)), target)


# --- latent exploration --------------------------------------------------------------------------
def posterior_means(model: VAE, x: Tensor, y: Tensor | None, batch_size: int = 1000) -> tuple[Tensor, bool]:
    """(N, D) posterior means, flattened (a list of per-layer means is concatenated), and whether the
    posterior is Gaussian (a DiagonalGaussian or a hierarchy of them), for which active units are defined."""
    chunks, gaussian = [], True
    model.eval()
    with torch.no_grad():
        for begin in range(0, x.shape[0], batch_size):
            xb = x[begin:begin + batch_size].to(model.device)
            yb = None if y is None else y[begin:begin + batch_size].to(model.device)
            posterior = _posterior(model, xb, yb)
            gaussian = gaussian and _is_gaussian(posterior)
            chunks.append(_flatten(_means(posterior)).float().cpu())
    return torch.cat(chunks), gaussian


def latent_map(model: VAE, x: Tensor, y: Tensor | None = None, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of the posterior means: PCA, or t-SNE (van der Maaten and Hinton 2008) for
    ``method="tsne"``. ``y`` are the labels a conditional model's encoder needs."""
    _choice(method, MAP_METHODS, "method")
    x = _as_batch(model, x)
    means, _ = posterior_means(model, x, _labels(model, y, x.shape[0]))
    if means.shape[1] == 1:
        return np.concatenate([means.numpy(), np.zeros_like(means.numpy())], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(means.numpy())
    if len(means) < 5:
        raise InputError(f"t-SNE needs at least 5 examples, got {len(means)}; pass more, or use method='pca'")
    from sklearn.manifold import TSNE

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
    """
    x = _as_batch(model, x)
    _check_count(steps, "steps")
    if not 0 <= base < x.shape[0]:
        raise InputError(f"base={base} is out of range: x holds {x.shape[0]} examples (0..{x.shape[0] - 1})")
    labels = _labels(model, y, x.shape[0])
    model.eval()
    layers = [_require_gaussian(model, x[i:i + BATCH_SIZE], None if labels is None else labels[i:i + BATCH_SIZE],
                                "a latent traversal", "map its latents with explore (PCA) or use interpolate")
              for i in range(0, x.shape[0], BATCH_SIZE)]
    means = torch.cat([_flatten(layer) for layer in layers])  # (N, total)
    spread = means.std(0) if means.shape[0] > 1 else torch.ones(means.shape[1], device=means.device)
    if dims is None:
        _check_count(rows, "rows")
        dims = spread.argsort(descending=True)[:rows].tolist()
    elif not dims or any(not 0 <= d < means.shape[1] for d in dims):
        raise InputError(f"dims={list(dims)} must be non-empty latent indices in 0..{means.shape[1] - 1}")
    offsets = torch.linspace(-span, span, steps, device=means.device)
    grid = means[base].repeat(len(dims) * steps, 1)  # (rows * steps, total)
    values = torch.stack([means[:, d].mean() + offsets * spread[d] for d in dims])  # (rows, steps)
    for row, d in enumerate(dims):
        grid[row * steps:(row + 1) * steps, d] = values[row]
    y_grid = None if labels is None else labels[base].repeat(grid.shape[0])
    images = _decode(model, _unflatten(grid, layers[0]), y_grid)
    return Traversal(images, list(dims), values.cpu(), spread[list(dims)].cpu())


# --- data augmentation ---------------------------------------------------------------------------
def augment(model: VAE, n: int, per_class: bool = False, temperature: float = 1.0,
            seed: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Synthetic examples for a training set (seed, section 7): (x, y) with y None for an unconditional
    model. A conditional model gives balanced labels: ``n`` in all (classes in turn), or ``n`` per class
    with ``per_class``.

    >>> x_new, y_new = apps.augment(cvae, 100, per_class=True, seed=0)  # 1000 digits, 100 of each  # doctest: +SKIP
    """
    _check_count(n)
    if per_class:  # n of each class
        require_conditional(model, "per-class augmentation", "drop per_class (--per-class) for unlabelled samples")
        labels = torch.arange(model.config.num_classes).repeat_interleave(n)
        return generate(model, len(labels), labels, temperature, seed), labels
    labels = sample_labels(model, n)
    return generate(model, n, labels, temperature, seed), labels
