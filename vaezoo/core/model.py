"""The VAE base class: the methods every variant implements and the behaviour they all share.

A variant subclasses :class:`VAE`, names its config dataclass in ``config_class``, implements
``encode``, ``decode`` and ``forward``, and declares what else it offers in class attributes
(``capabilities``, ``reported_metrics``, ``presets``, ``pretrained_tags``); see vaezoo.core.contract.
The trainer, the applications and the benchmark see nothing else.

>>> import vaezoo, torch
>>> model = vaezoo.create_model("vae-mlp", input_shape=(64,), hidden_dims=(32,), latent_dim=4)
>>> out = model(torch.rand(8, 64))
>>> sorted(out.scalars())
['kl', 'loss', 'recon']
>>> model.sample(3).shape
torch.Size([3, 64])
"""
from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vaezoo.core.config import VAEConfig, replace_config
from vaezoo.core.contract import Capabilities, ImportanceSample, Latent, Posterior, TrainingStage, VAEOutput
from vaezoo.core.distributions import at_least_float32, standard_normal_log_prob
from vaezoo.core.hub_mixin import VAEHubMixin
from vaezoo.core.likelihoods import build_likelihood
from vaezoo.core.samplers import LATENT_SAMPLERS, GaussianMixtureSampler, build_latent_sampler
from vaezoo.core.validation import (
    check_batch,
    check_count,
    check_device,
    check_labels,
    check_non_negative_number,
    check_output_size,
    value_problem,
)
from vaezoo.errors import CapabilityError, ConfigError, InputError


class _CapabilityAlias:
    """``model.is_conditional`` and ``Class.has_log_likelihood``: read-only views of ``capabilities``."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name

    def __get__(self, instance: Any, owner: type) -> bool:
        return getattr(owner.capabilities, self.field_name)

    def __set__(self, instance: Any, value: Any) -> None:
        raise AttributeError(f"declare it in the class: capabilities = Capabilities({self.field_name}=...)")


LEGACY_CAPABILITY_FLAGS = {"is_conditional": "conditional", "has_log_likelihood": "log_likelihood"}
NO_LATENT_SAMPLER = ("has no single continuous latent for a latent sampler to model (capabilities.latent_sampler is "
                     "False: its latents are a hierarchy of layers or discrete codes)")


class VAE(nn.Module, VAEHubMixin):
    """Base of every variant. Subclasses set ``config_class`` and implement encode/decode/forward.

    Class attributes a variant may set:
    ``registry_name`` (its name in the registry, e.g. ``"vae-mlp"``; set by registration if absent),
    ``capabilities`` (a :class:`~vaezoo.core.contract.Capabilities`: conditional, likelihood bound,
    temperature, MWG imputation, latent sampler), ``reported_metrics`` (``{name: meaning}`` of the extra figures
    ``forward`` puts in ``VAEOutput.metrics``), ``presets`` (named config overrides; every variant has
    ``"tiny"`` for fast tests), ``pretrained_tags`` (``{tag: vaezoo.zoo.tags.PretrainedTag}``),
    ``train_defaults`` (TrainConfig fields, e.g. a learning rate, that ``vaezoo.train`` and
    ``vaezoo train`` use unless the user sets them), ``compile_pays_after_steps`` (the stage length from which
    ``compile=None``, the default, compiles the training step on a CPU: benchmarks/compile_default.py's
    break-even for the variant; None, the default, where compiling was not measured to pay).
    """

    config_class: ClassVar[type[VAEConfig]] = VAEConfig
    registry_name: ClassVar[str | None] = None
    capabilities: ClassVar[Capabilities] = Capabilities()
    reported_metrics: ClassVar[dict[str, str]] = {}
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    pretrained_tags: ClassVar[dict[str, Any]] = {}  # {tag: vaezoo.zoo.tags.PretrainedTag}
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig fields this variant trains best with (user values win)
    compile_pays_after_steps: ClassVar[int | None] = None  # measured break-even of torch.compile on a CPU, in steps
    is_conditional = _CapabilityAlias("conditional")
    has_log_likelihood = _CapabilityAlias("log_likelihood")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A name belongs to one class: a subclass saved under its parent's name would reload as the parent.
        cls.registry_name = cls.__dict__.get("registry_name")
        legacy = {flag: cls.__dict__[flag] for flag in LEGACY_CAPABILITY_FLAGS if isinstance(cls.__dict__.get(flag), bool)}
        if legacy:  # plugins written before capabilities existed keep working, with a warning
            warnings.warn(f"{cls.__name__} sets {', '.join(legacy)}; declare capabilities = Capabilities(...) instead",
                          DeprecationWarning, stacklevel=2)
            fields = {LEGACY_CAPABILITY_FLAGS[flag]: value for flag, value in legacy.items()}
            cls.capabilities = Capabilities(**{**cls.capabilities.__dict__, **fields})
            for flag in legacy:
                setattr(cls, flag, _CapabilityAlias(LEGACY_CAPABILITY_FLAGS[flag]))

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}; "
                f"build it with vaezoo.create_model(name, **overrides)"
            )
        if self.is_conditional and config.num_classes < 1:
            raise ConfigError(f"{type(self).__name__} is conditional: set num_classes >= 1 (got {config.num_classes})")
        self.config = config
        self.likelihood = build_likelihood(config)
        self.train_step = 0  # set by the trainer before each step; drives warm-up and annealing
        self.latent_sampler: GaussianMixtureSampler | None = None  # a submodule once one is fitted (config.latent_sampler)
        if config.latent_sampler:
            if not self.capabilities.latent_sampler:
                raise ConfigError(f"{self.model_name} {NO_LATENT_SAMPLER}; set latent_sampler=''")
            # Unfitted, at the shapes config.json names: loading model.safetensors fills it.
            self.latent_sampler = build_latent_sampler(config.latent_sampler, config.sampler_components, config.latent_dim)

    # --- the contract -------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """Return the approximate posterior q(z | x), a :class:`~vaezoo.core.contract.Posterior` (e.g. DiagonalGaussian)."""
        raise NotImplementedError

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Latent:
        """The posterior's deterministic code, as ``decode`` takes it: E_q[z | x] for one latent.

        A hierarchy overrides it to follow each layer's mean given the means above it.
        """
        return self.encode(x, y).mean

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Return the likelihood's parameters (Bernoulli logits, Gaussian means or mixture parameters), shape
        (B, *vaezoo.core.likelihoods.param_shape(config)): (B, *input_shape) but for the logistic mixture."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        raise NotImplementedError

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) of a single latent z (B, latent_dim), shape (B,): N(0, I) unless a variant's prior differs
        (a VampPrior's mixture). ``importance_sample`` and Metropolis-within-Gibbs imputation score z with it."""
        return standard_normal_log_prob(z)

    def importance_sample(self, x: Tensor, y: Tensor | None = None) -> ImportanceSample:
        """One z ~ q(z | x) per row: p(x | z)'s parameters and log p(z) - log q(z | x), for a single latent.

        Variants with other latents (hierarchies) override this; ``log_weights`` (hence ``log_likelihood``)
        and importance-weighted imputation build on it.
        """
        posterior = self.encode(x, y)
        z = posterior.rsample()
        return ImportanceSample(self.decode(z, y), self.log_prior(z) - posterior.log_prob(z))

    def log_weights(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One importance sample of log p(x, z) - log q(z | x), shape (B,)."""
        params, log_prior_ratio = self.importance_sample(x, y)
        return self.likelihood.log_prob(params, x) + log_prior_ratio

    def repeated_log_weights(self, x: Tensor, y: Tensor | None, reps: int) -> Tensor:
        """``reps`` independent draws of ``log_weights`` for every row of x, shape (reps, B).

        ``log_likelihood`` calls this; a variant whose encoder has a deterministic part may override it to
        run that part once per row instead of ``reps`` times (vdvae's bottom-up pass), drawing the same z's.
        """
        x_rep = x.repeat(reps, *([1] * (x.dim() - 1)))
        y_rep = None if y is None else y.repeat(reps)
        return self.log_weights(x_rep, y_rep).view(reps, x.shape[0])

    def single_latent_elbo(self, x: Tensor, y: Tensor | None, kl_weight: float) -> VAEOutput:
        """The seed's objective for one N(0, I) latent: loss = mean(recon + kl_weight * KL), one sample of z.

        Shared by the single-latent variants' ``forward`` (after ``check_input`` and ``prepare_target``).
        """
        posterior = self.encode(x, y)
        params = self.decode(posterior.rsample(), y)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = posterior.kl()  # (B,) analytic
        loss = (recon + kl_weight * kl).mean()
        return VAEOutput(loss=loss, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl, params=params)

    def prior_sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """Draw latents from the prior; single-Gaussian-latent default is N(0, T^2 I), in the model's dtype."""
        return temperature * torch.randn(n, self.config.latent_dim, device=self.device, dtype=self.dtype)

    def stages(self) -> list[TrainingStage]:
        """What the trainer optimises, in order; one stage validated by the -ELBO unless a variant says otherwise."""
        return [TrainingStage("main", self.parameters, self.forward, validation="elbo")]

    # --- shared behaviour ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, temperature: float = 1.0, sampler: str | None = None) -> Tensor:
        """Generate ``n`` examples (the likelihood's mean), shape (n, *input_shape), in the model's dtype.

        ``temperature`` scales the prior's noise (0: its mode); ``y`` (an int or n ints) is for a conditional model.
        ``sampler="gmm"`` draws the latents from the mixture fitted by ``vaezoo.apps.fit_sampler`` instead of the
        prior (None); the temperature then scales each component's spread.
        """
        check_output_size(check_count(n, "n"), self.config.input_shape, "n", hint=" per call, in several calls")
        check_non_negative_number(temperature, "temperature", hint=" (1 samples the prior itself)")
        if temperature != 1.0 and not self.capabilities.temperature:
            raise CapabilityError(f"{self.model_name} does not support sampling temperatures; use temperature=1")
        latent_sampler = None if sampler is None else self.fitted_sampler(sampler)
        y = self._labels_for_sampling(n, y)
        if latent_sampler is None:
            z = self.prior_sample(n, temperature)
        else:
            z = latent_sampler.sample(n, temperature).to(self.dtype)  # (n, latent_dim) ~ the fitted mixture
        return self.likelihood.mean(self.decode(z, y))

    def fitted_sampler(self, sampler: str) -> GaussianMixtureSampler:
        """The fitted latent sampler named ``sampler`` ("gmm"); a one-line error when the name is unknown, the variant
        cannot have one (``capabilities.latent_sampler``) or none has been fitted."""
        if sampler not in LATENT_SAMPLERS:
            raise InputError(f"sampler={sampler!r} is unknown; use None (the prior) or one of {', '.join(LATENT_SAMPLERS)}")
        if not self.capabilities.latent_sampler:
            raise CapabilityError(f"{self.model_name} {NO_LATENT_SAMPLER}; sample from its prior (sampler=None)")
        if self.latent_sampler is None or self.config.latent_sampler != sampler:
            raise InputError(f"{self.model_name} has no fitted {sampler!r} latent sampler; fit one with "
                             f"vaezoo.apps.fit_sampler(model, x_train) or `vaezoo fit-sampler MODEL --data DATA --out DIR`")
        return self.latent_sampler

    def set_latent_sampler(self, sampler: GaussianMixtureSampler | None) -> None:
        """Attach a fitted latent sampler (or remove it with None), recording it in the config so that
        ``save_pretrained`` and loading rebuild it. ``vaezoo.apps.fit_sampler`` fits one and calls this."""
        if sampler is None:
            self.latent_sampler = None
            self.config = replace_config(self.config, source="set_latent_sampler", latent_sampler="", sampler_components=0)
            return
        if not self.capabilities.latent_sampler:
            raise CapabilityError(f"{self.model_name} {NO_LATENT_SAMPLER}; sample from its prior instead")
        if not isinstance(sampler, GaussianMixtureSampler) or sampler.latent_dim != self.config.latent_dim:
            shown = f"latent_dim={sampler.latent_dim}" if isinstance(sampler, GaussianMixtureSampler) else type(sampler).__name__
            raise InputError(f"the latent sampler ({shown}) does not fit {self.model_name}, whose latents have "
                             f"latent_dim={self.config.latent_dim}; fit it on this model's latent codes")
        self.config = replace_config(self.config, source="set_latent_sampler", latent_sampler=sampler.kind,
                                     sampler_components=sampler.num_components)
        self.latent_sampler = sampler.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior mean of each input: (B, *input_shape) -> (B, *input_shape); for a variant that takes
        any image size (``capabilities.any_image_size``), (B, C, H, W) -> (B, C, H, W) at x's own H, W."""
        self.check_input(x, y, allow_empty=True, any_image_size=True)
        mean = self.likelihood.mean(self.decode(self.encode_mean(x, y), y))
        # padded sides come back cropped from (0, 0); at the config's size the slice is the whole image
        return mean[..., : x.shape[-2], : x.shape[-1]] if self.capabilities.any_image_size else mean

    def input_shape_for(self, x: Any) -> tuple[int, ...]:
        """The example shape ``x`` must have: the config's input_shape, or for a variant that takes any image size
        and an image batch x (B, C, H, W) with the config's C, (C, H, W)."""
        shape = tuple(self.config.input_shape)
        if (self.capabilities.any_image_size and len(shape) == 3 and isinstance(x, Tensor) and x.dim() == 4
                and x.shape[1] == shape[0] and min(x.shape[2:]) > 0):
            return tuple(x.shape[1:])
        return shape

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, iw_samples: int = 100, chunk_size: int = 8192,
                       **deprecated: Any) -> Tensor:
        """Importance-weighted estimate of log p(x) in nats, shape (B,) (Burda et al. 2016, eq. 8).

        log p(x) ~= log (1/k) sum_i p(x, z_i) / q(z_i | x) with z_i ~ q(z | x) and k = ``iw_samples``;
        a lower bound that tightens as k grows and equals the ELBO in expectation at k = 1.
        (``k=`` is the old name of ``iw_samples`` and still works, with a DeprecationWarning.)
        """
        k = _renamed_keyword(deprecated, "k", "iw_samples", iw_samples, "log_likelihood")
        if not self.capabilities.log_likelihood:
            fallback = ("use the -ELBO from forward or vaezoo.eval.evaluate" if self.capabilities.elbo
                        else "it has no -ELBO either (capabilities.elbo is False); compare it by its loss")
            raise CapabilityError(f"{self.model_name} has no importance-weighted log-likelihood (capabilities.log_likelihood"
                                  f" is False); {fallback}")
        check_count(k, "iw_samples")
        check_count(chunk_size, "chunk_size", hint=" (examples per forward pass)")
        self.check_input(x, y, allow_empty=True)
        x, batch = at_least_float32(x), x.shape[0]  # the target of the log-densities, summed in float32 or wider
        if batch == 0:
            return x.new_zeros(0)
        per_pass = max(1, chunk_size // batch)  # samples per forward pass, to bound memory
        log_weights = []
        for start in range(0, k, per_pass):
            log_weights.append(self.repeated_log_weights(x, y, min(per_pass, k - start)))
        return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)

    def kl_weight(self, beta: float = 1.0) -> float:
        """beta, ramped linearly from 0 over ``kl_warmup_steps`` (Bowman et al. 2016; Sønderby et al. 2016)."""
        warmup = self.config.kl_warmup_steps
        if warmup == 0 or not self.training:
            return beta
        return beta * min(1.0, self.train_step / warmup)

    def prepare_target(self, x: Tensor) -> Tensor:
        """x as the likelihood's target: in at least float32 (the log-densities of a half-precision model are
        summed in float32; the encoder casts its input to the model's dtype), and with dynamic binarization
        a fresh x ~ Bernoulli(x) at every training step."""
        x = at_least_float32(x)
        if self.config.dynamic_binarization and self.training:
            return torch.bernoulli(x)
        return x

    def check_input(self, x: Tensor, y: Tensor | None = None, *, allow_empty: bool = False,
                    any_image_size: bool = False) -> None:
        """Raise InputError naming the problem when x or y does not fit this model.

        A batch of no examples is refused (a loss is a mean over the batch) unless ``allow_empty``. With
        ``any_image_size`` (what reconstruct passes, and a fully convolutional variant's forward), a variant that
        declares the capability takes images of any H and W; the importance-weighted bound keeps the config's input_shape.
        """
        check_batch(x, self.input_shape_for(x) if any_image_size else self.config.input_shape, "x")
        check_device(x, self.device, "x")
        if x.shape[0] == 0 and not allow_empty:
            raise InputError(f"x holds 0 examples (shape {tuple(x.shape)}); {self.model_name} needs at least one, "
                             "as its loss is a mean over the batch")
        if not self.training:
            self._check_values(x)
        if self.is_conditional:
            self._check_labels(y, x.shape[0])
            if isinstance(y, Tensor):
                check_device(y, self.device, "y")

    def _check_values(self, x: Tensor) -> None:
        """Only outside training: it costs a host sync, and the trainer checks its data once up front."""
        problem = value_problem(x, self.config.likelihood)
        if problem:
            raise InputError(f"x {problem}")

    def _check_labels(self, y: Tensor | None, batch: int) -> None:
        check_labels(y, self.config.num_classes, batch, "y", self.model_name)

    def _labels_for_sampling(self, n: int, y: Tensor | int | None) -> Tensor | None:
        if not self.is_conditional:
            if y is not None:
                shown = f"a tensor of shape {tuple(y.shape)}" if isinstance(y, Tensor) else repr(y)
                raise InputError(f"{self.model_name} is not conditional, so sample takes no labels (y={shown}); drop y")
            return None
        if y is None:
            raise InputError(f"{self.model_name}.sample needs labels: sample(n, y=label or tensor of {n} labels)")
        return check_labels(y, self.config.num_classes, n, "y", self.model_name).to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the weights (``model.to(torch.bfloat16)`` changes it); the prior's noise is drawn in it."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.get_default_dtype())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}"


def _renamed_keyword(given: dict[str, Any], old: str, new: str, value: Any, where: str) -> Any:
    """The value of a keyword that was renamed ``old`` -> ``new``: the old name still works, with a warning."""
    unknown = sorted(set(given) - {old})
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")
    if old not in given:
        return value
    warnings.warn(f"{where}({old}=...) is deprecated; use {new}=...", DeprecationWarning, stacklevel=4)  # past torch.no_grad
    return given[old]
