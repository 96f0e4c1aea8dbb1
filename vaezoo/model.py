"""The model contract every variant follows, and the typed outputs it returns.

A variant subclasses :class:`VAE`, names its config dataclass in ``config_class`` and implements
``encode``, ``decode`` and ``forward``. The trainer and the benchmark see nothing else.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .config import VAEConfig
from .distributions import standard_normal_log_prob
from .errors import CapabilityError, ConfigError, InputError
from .likelihoods import build_likelihood


@dataclass
class StepOutput:
    """What one training step of any stage returns: the objective and named scalar terms."""

    loss: Tensor  # scalar objective to minimise
    terms: dict[str, Tensor] = field(default_factory=dict)  # extra named scalars, e.g. vq, commit, kl_0

    def scalars(self) -> dict[str, Tensor]:
        return {"loss": self.loss, **self.terms}


@dataclass
class VAEOutput(StepOutput):
    """A VAE forward pass. ``recon`` and ``kl`` are batch means in nats; ``neg_elbo`` is per example.

    ``loss`` is the training objective (it may weight or clamp the KL); ``neg_elbo = recon + kl``
    per example with weight 1 is what evaluation reports.
    """

    recon: Tensor = None  # type: ignore[assignment]  # scalar: mean over the batch of -log p(x | z)
    kl: Tensor = None  # type: ignore[assignment]  # scalar: mean over the batch of KL(q(z | x) || p(z))
    neg_elbo: Tensor = None  # type: ignore[assignment]  # (B,): -log p(x | z) + KL, in nats
    params: Tensor = None  # type: ignore[assignment]  # decoder output: likelihood parameters, (B, *input_shape)

    def scalars(self) -> dict[str, Tensor]:
        return {"loss": self.loss, "recon": self.recon, "kl": self.kl, **self.terms}


@dataclass
class TrainingStage:
    """One stage of training: which parameters to optimise with which objective.

    Most variants have one stage (the whole model, ``forward``). A variant with a learned prior
    trained afterwards (vq-vae) returns a second stage; the trainer runs them in order.
    """

    name: str
    parameters: Callable[[], Iterable[nn.Parameter]]
    loss: Callable[[Tensor, Tensor | None], StepOutput]


@dataclass(frozen=True)
class PretrainedTag:
    """Metadata of a pretrained tag ``name.tag``, kept apart from the architecture (as timm does)."""

    config: dict[str, Any]  # overrides applied to the variant's default config
    dataset: str  # what it was trained on, e.g. "fashion-mnist"
    hf_hub_id: str | None = None  # Hub repo holding the weights, e.g. "vaezoo/vae-mlp.fmnist"
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields it was trained with
    description: str = ""


def value_problem(x: Tensor, likelihood: str) -> str | None:
    """What is wrong with the values of ``x`` for a model with this likelihood, or None.

    NaN/Inf, or values outside [0, 1] under a Bernoulli likelihood, would give wrong nats silently.
    One host sync. The model checks its inputs with it outside training, the trainer its splits.
    """
    if x.numel() == 0:
        return None
    low, high = (float(v) for v in torch.aminmax(x.detach().float()))  # NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)):
        return "holds NaN or Inf values; remove or replace them"
    if likelihood == "bernoulli" and (low < 0 or high > 1):
        return (f"holds values in [{low:g}, {high:g}] but the Bernoulli likelihood needs [0, 1]; "
                "scale the data (vaezoo.data.load_data does) or use likelihood='gaussian'")
    return None


class VAE(nn.Module):
    """Base of every variant. Subclasses set ``config_class`` and implement encode/decode/forward.

    Class attributes a variant may set:
    ``presets`` (named config overrides; every variant has ``"tiny"`` for fast tests),
    ``pretrained_tags`` (``{tag: PretrainedTag}``), ``is_conditional`` (needs labels ``y``),
    ``has_log_likelihood`` (``log_likelihood`` gives an importance-weighted estimate),
    ``train_defaults`` (TrainConfig fields, e.g. a learning rate, that ``vaezoo.train`` and
    ``vaezoo train`` use unless the user sets them).
    """

    config_class: ClassVar[type[VAEConfig]] = VAEConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    pretrained_tags: ClassVar[dict[str, PretrainedTag]] = {}
    is_conditional: ClassVar[bool] = False
    has_log_likelihood: ClassVar[bool] = True
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig fields this variant trains best with (user values win)

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
        self.model_name: str | None = None  # the registry name it was created under
        self.train_step = 0  # set by the trainer before each step; drives warm-up and annealing

    # --- the contract -------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Any:
        """Return the approximate posterior q(z | x) (a DiagonalGaussian for continuous latents)."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Return the likelihood's parameters (Bernoulli logits or Gaussian means), (B, *input_shape)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        raise NotImplementedError

    def log_weights(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One importance sample of log p(x, z) - log q(z | x), shape (B,), for a single N(0, I) latent.

        Variants with other latents (hierarchies) override this; ``log_likelihood`` builds on it.
        """
        posterior = self.encode(x, y)
        z = posterior.rsample()
        log_px_given_z = self.likelihood.log_prob(self.decode(z, y), x)
        return log_px_given_z + standard_normal_log_prob(z) - posterior.log_prob(z)

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
        """Draw latents from the prior; single-Gaussian-latent default is N(0, T^2 I)."""
        return temperature * torch.randn(n, self.config.latent_dim, device=self.device)

    def stages(self) -> list[TrainingStage]:
        return [TrainingStage("main", self.parameters, self.forward)]

    # --- shared behaviour ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, temperature: float = 1.0) -> Tensor:
        """Generate ``n`` examples (the likelihood's mean), shape (n, *input_shape)."""
        y = self._labels_for_sampling(n, y)
        return self.likelihood.mean(self.decode(self.prior_sample(n, temperature), y))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior mean of each input: (B, *input_shape) -> (B, *input_shape)."""
        self.check_input(x, y)
        return self.likelihood.mean(self.decode(self.encode(x, y).mean, y))

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, k: int = 100, chunk_size: int = 8192) -> Tensor:
        """Importance-weighted estimate of log p(x) in nats, shape (B,) (Burda et al. 2016, eq. 8).

        log p(x) ~= log (1/k) sum_i p(x, z_i) / q(z_i | x) with z_i ~ q(z | x); a lower bound that
        tightens as k grows and equals the ELBO in expectation at k = 1.
        """
        if not self.has_log_likelihood:
            raise CapabilityError(f"{type(self).__name__} has no importance-weighted log-likelihood")
        if k < 1:
            raise InputError(f"k={k} importance samples: use k >= 1")
        self.check_input(x, y)
        batch = x.shape[0]
        per_pass = max(1, chunk_size // batch)  # samples per forward pass, to bound memory
        log_weights = []
        for start in range(0, k, per_pass):
            reps = min(per_pass, k - start)
            x_rep = x.repeat(reps, *([1] * (x.dim() - 1)))
            y_rep = None if y is None else y.repeat(reps)
            log_weights.append(self.log_weights(x_rep, y_rep).view(reps, batch))
        return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)

    def kl_weight(self, beta: float = 1.0) -> float:
        """beta, ramped linearly from 0 over ``kl_warmup_steps`` (Bowman et al. 2016; Sønderby et al. 2016)."""
        warmup = self.config.kl_warmup_steps
        if warmup == 0 or not self.training:
            return beta
        return beta * min(1.0, self.train_step / warmup)

    def prepare_target(self, x: Tensor) -> Tensor:
        """Dynamic binarization: a fresh x ~ Bernoulli(x) at every training step."""
        if self.config.dynamic_binarization and self.training:
            return torch.bernoulli(x)
        return x

    def check_input(self, x: Tensor, y: Tensor | None = None) -> None:
        """Raise InputError naming the problem when x or y does not fit this model."""
        expected = tuple(self.config.input_shape)
        if not isinstance(x, Tensor):
            raise InputError(f"x must be a torch.Tensor of shape (B, {', '.join(map(str, expected))}), got {type(x).__name__}")
        if tuple(x.shape[1:]) != expected:
            raise InputError(
                f"x has shape {tuple(x.shape)} but this model takes (B, {', '.join(map(str, expected))}); "
                "reshape the data or create the model with input_shape set to match"
            )
        if not x.is_floating_point():
            raise InputError(f"x has dtype {x.dtype}; convert it to float (e.g. x.float() / 255)")
        if not self.training:
            self._check_values(x)
        if self.is_conditional:
            self._check_labels(y, x.shape[0])

    def _check_values(self, x: Tensor) -> None:
        """Only outside training: it costs a host sync, and the trainer checks its data once up front."""
        problem = value_problem(x, self.config.likelihood)
        if problem:
            raise InputError(f"x {problem}")

    def _check_labels(self, y: Tensor | None, batch: int) -> None:
        num_classes = self.config.num_classes
        if y is None:
            raise InputError(f"{type(self).__name__} is conditional: pass labels y (ints in 0..{num_classes - 1})")
        if y.shape != (batch,):
            raise InputError(f"labels y have shape {tuple(y.shape)}; expected ({batch},) to match x")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise InputError(f"labels y hold {int(y.min())}..{int(y.max())}; this model knows 0..{num_classes - 1}")

    def _labels_for_sampling(self, n: int, y: Tensor | int | None) -> Tensor | None:
        if not self.is_conditional:
            return None
        if y is None:
            raise InputError(f"{type(self).__name__}.sample needs labels: sample(n, y=label or tensor of {n} labels)")
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long)
        y = y.to(self.device)
        self._check_labels(y, n)
        return y

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (see vaezoo.load_model_dir)."""
        from .serialization import save_model_dir

        save_model_dir(self, directory)

    def push_to_hub(self, repo_id: str, *, private: bool = False, revision: str | None = None,
                    token: str | None = None, card_metrics: dict[str, Any] | None = None, dataset: str = "unknown") -> str:
        """Save this model with a model card to a temporary folder and upload it (see vaezoo.hub.push_to_hub).

        >>> model.push_to_hub("my-org/my-vae", private=True)  # doctest: +SKIP
        """
        import tempfile

        from .hub import push_to_hub
        from .pretrained import write_model_card

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            write_model_card(folder, name=self.model_name or type(self).__name__, dataset=dataset,
                             metrics=card_metrics or {}, command="(trained in Python)")
            return push_to_hub(folder, repo_id, private=private, revision=revision, token=token)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}" if self.model_name else ""
