"""What the framework may rely on from a variant, besides its methods: outputs, stages, posteriors, capabilities, metrics.

The trainer, the evaluator, the applications and the benchmark read these declarations and nothing
else: no private attribute, no loss-term name and no method signature of a variant.

- :class:`VAEOutput` (from ``forward``): the objective, the -ELBO and its terms, and ``metrics``,
  the extra figures the variant reports, named in its class attribute ``reported_metrics``.
- :class:`TrainingStage` (from ``stages()``): what to optimise, with which objective, and how to
  validate it (``validation="elbo"`` or ``"loss"``); :class:`ParamGroup`: a part of its parameters
  with its own optimiser settings (an adversary's Adam betas).
- :class:`Posterior` (from ``encode``): mean, mode, rsample, log_prob, kl, per-layer parts, Gaussian or not.
- :class:`ImportanceSample` (from ``importance_sample``): one z ~ q(z | x), as p(x | z)'s parameters
  and log p(z) - log q(z | x); log-likelihoods and importance-weighted imputation build on it.
- :class:`Capabilities` (class attribute ``capabilities``): conditional, likelihood bound,
  temperature, Metropolis-within-Gibbs imputation, an ex-post latent sampler.

>>> Capabilities(conditional=True).conditional
True
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, Union, runtime_checkable

from torch import Tensor, nn

from vaezoo.errors import PluginError

Latent = Union[Tensor, list[Tensor]]  # what decode takes: (B, ...) or, for a hierarchy, [z_1, ..., z_L] bottom first
MetricValue = Union[Tensor, dict[str, Tensor]]  # a batch-mean scalar, or named scalars (e.g. one per layer)
STAGE_VALIDATIONS = ("elbo", "loss")


@dataclass(frozen=True)
class Capabilities:
    """What a variant can do beyond encode/decode/forward; the framework asks these instead of probing the class."""

    conditional: bool = False  # encode/decode/forward/sample take class labels y (and need num_classes >= 1)
    # log_likelihood(x) gives an importance-weighted bound, and impute(method="importance") works: both built
    # on importance_sample, which must then give exact log p(z) - log q(z | x) at z ~ q(z | x)
    log_likelihood: bool = True
    temperature: bool = True  # sample(n, temperature=T) scales the prior's noise
    mwg_imputation: bool = True  # impute(method="mwg"): one latent, q(z | x).log_prob exact at any z, p(z) = log_prior
    # One continuous latent z (B, latent_dim), as encode_mean gives and decode takes, so that an ex-post density
    # fitted on the training data's codes (vaezoo.apps.fit_sampler) can replace the prior: sample(n, sampler="gmm").
    # False for latents of another form: a hierarchy's list of layers, a grid of discrete codes.
    latent_sampler: bool = True
    # forward, log_weights and impute accept x with NaN marking missing values (MIWAE, Mattei and Frellsen 2019);
    # only then do `vaezoo train --data` and load_data let NaNs through. Inf is refused always.
    missing_values: bool = False
    # forward's neg_elbo and kl are the -ELBO and KL(q(z | x) || p(z)). False where q(z | x) has no density (a
    # deterministic encoder: a point mass, whose KL to a continuous prior is +inf): forward still fills them
    # (with +inf), but evaluate leaves them out and reports the stage's loss, bench prints them n/a with the reason
    # (vaezoo.eval.evaluate.NO_ELBO), and the variant validates by its loss (TrainingStage(validation="loss")).
    # log_likelihood and mwg_imputation, which need q's density too, are then False as well.
    elbo: bool = True
    # encode/decode/reconstruct take images of any height and width, not only config.input_shape's (a fully
    # convolutional model such as autoencoder-kl): reconstruct returns each image at its own size, and `vaezoo
    # reconstruct` codes a folder of mixed sizes image by image. forward and the bounds keep the config's size.
    any_image_size: bool = False


class ImportanceSample(NamedTuple):
    """One z ~ q(z | x) per row, as ``VAE.importance_sample`` returns it.

    The importance weight of z for any part of x is ``likelihood.log_prob(params, x, observed) + log_prior_ratio``.
    """

    params: Tensor  # p(x | z)'s parameters, (B, *input_shape)
    log_prior_ratio: Tensor  # log p(z) - log q(z | x), (B,); for a hierarchy, summed over layers


@runtime_checkable
class Posterior(Protocol):
    """q(z | x) as ``encode`` returns it. DiagonalGaussian is one; a hierarchy or a codebook provides its own.

    Log-densities and KLs are summed over every non-batch dim and layer, shape (B,).
    """

    is_gaussian: bool  # every layer is a diagonal Gaussian: slerp, traversals and active units apply

    @property
    def mean(self) -> Latent: ...  # E_q[z], as decode takes it

    @property
    def layers(self) -> list:  # the per-layer posteriors, bottom first ([self] for one latent)
        ...

    def mode(self) -> Latent: ...

    def rsample(self, temperature: float = 1.0) -> Latent: ...

    def log_prob(self, z: Latent) -> Tensor: ...

    def kl(self) -> Tensor: ...  # KL(q(z | x) || p(z)) against the model's prior, (B,)


@dataclass
class StepOutput:
    """What one training step of any stage returns: the objective and named scalar terms."""

    loss: Tensor  # scalar objective to minimise
    terms: dict[str, Tensor] = field(default_factory=dict)  # extra named scalars for the progress bar, e.g. vq, kl_0

    def scalars(self) -> dict[str, Tensor]:
        return {"loss": self.loss, **self.terms}


@dataclass
class VAEOutput(StepOutput):
    """A VAE forward pass. ``recon`` and ``kl`` are batch means in nats; ``neg_elbo`` is per example.

    ``loss`` is the training objective (it may weight or clamp the KL); ``neg_elbo = recon + kl``
    per example with weight 1 is what evaluation reports. ``metrics`` holds the batch means of the
    figures named in the variant's ``reported_metrics`` (evaluate averages them over the data; bench
    and ``vaezoo eval`` print them under those names).
    """

    recon: Tensor = None  # type: ignore[assignment]  # scalar: mean over the batch of -log p(x | z)
    kl: Tensor = None  # type: ignore[assignment]  # scalar: mean over the batch of KL(q(z | x) || p(z))
    neg_elbo: Tensor = None  # type: ignore[assignment]  # (B,): -log p(x | z) + KL, in nats
    params: Tensor = None  # type: ignore[assignment]  # decoder output: likelihood parameters, (B, *param_shape(config))
    metrics: dict[str, MetricValue] = field(default_factory=dict)  # reported figures, by declared name

    def scalars(self) -> dict[str, Tensor]:
        return {"loss": self.loss, "recon": self.recon, "kl": self.kl, **self.terms}


@dataclass(frozen=True)
class ParamGroup:
    """A part of a stage's parameters that the stage's one optimiser steps with settings of its own.

    The trainer makes each group a torch.optim parameter group (the stage's other parameters form
    the default group, with TrainConfig's settings), schedules its learning rate as ``lr_scale``
    times the run's, clips its gradient norm on its own (``grad_clip``), and saves and resumes its
    settings with the optimiser's state. Adam's update is per parameter, so one Adam with two groups
    steps exactly as two Adams would: this is how a variant trains an adversary beside the VAE in one
    stage (factor-vae's discriminator; its loss routes each objective's gradient to its own network).

    >>> ParamGroup("discriminator", lambda: [], betas=(0.5, 0.9)).lr_scale
    1.0
    """

    name: str
    parameters: Callable[[], Iterable[nn.Parameter]]
    lr_scale: float = 1.0  # this group's learning rate / the run's (TrainConfig.lr and its schedule)
    betas: tuple[float, float] | None = None  # Adam's (beta1, beta2); None keeps torch's (0.9, 0.999)

    def __post_init__(self) -> None:
        if not (isinstance(self.lr_scale, (int, float)) and 0 < self.lr_scale < float("inf")):
            raise PluginError(f"parameter group {self.name!r} has lr_scale={self.lr_scale!r}; use a number > 0")
        if self.betas is not None and not (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise PluginError(f"parameter group {self.name!r} has betas={self.betas!r}; use two numbers in [0, 1)")


@dataclass
class TrainingStage:
    """One stage of training: which parameters to optimise with which objective, and how to validate it.

    Most variants have one stage (the whole model, ``forward``), validated by the -ELBO
    (``validation="elbo"``). A variant with a learned prior trained afterwards (vq-vae) returns a
    second stage validated by its own loss (``validation="loss"``); the trainer runs them in order.
    ``param_groups`` gives parts of ``parameters()`` optimiser settings of their own (see :class:`ParamGroup`).
    """

    name: str
    parameters: Callable[[], Iterable[nn.Parameter]]
    loss: Callable[[Tensor, Tensor | None], StepOutput]
    validation: str = "elbo"  # "elbo": vaezoo's evaluate on the validation split; "loss": mean of this stage's loss terms
    param_groups: tuple[ParamGroup, ...] = ()  # parts of parameters() with their own optimiser settings

    def __post_init__(self) -> None:
        if self.validation not in STAGE_VALIDATIONS:
            raise PluginError(f"stage {self.name!r} has validation={self.validation!r}; use one of {STAGE_VALIDATIONS}")
        names = [group.name for group in self.param_groups]
        if len(set(names)) != len(names) or self.name in names:
            raise PluginError(f"stage {self.name!r} has parameter groups named {names}; give each its own name, "
                              "other than the stage's (the default group's)")

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """torch.optim parameter groups: the default group (the parameters of no ParamGroup), then each ParamGroup.

        Each is ``{"params", "name", "lr_scale"}`` plus ``"betas"`` where its ParamGroup sets them; a parameter
        of a group but not of ``parameters()``, or of two groups, is a PluginError.
        """
        stage_ids = {id(p) for p in self.parameters()}
        claimed: set[int] = set()
        groups: list[dict[str, Any]] = []
        for group in self.param_groups:
            params = list(group.parameters())
            ids = {id(p) for p in params}
            if not ids <= stage_ids or ids & claimed:
                raise PluginError(f"parameter group {group.name!r} of stage {self.name!r} holds parameters "
                                  f"{'outside the stage' if not ids <= stage_ids else 'of another group'}; give each "
                                  "group a part of the stage's parameters(), no two the same")
            claimed |= ids
            if not params:
                continue
            settings = {} if group.betas is None else {"betas": tuple(group.betas)}
            groups.append({"params": params, "name": group.name, "lr_scale": float(group.lr_scale), **settings})
        default = [p for p in self.parameters() if id(p) not in claimed]
        return ([{"params": default, "name": self.name, "lr_scale": 1.0}] if default else []) + groups
