"""The checks of :func:`vaezoo.testing.check_model`, one method each, on a variant's ``tiny`` preset."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaezoo.apps import fit_sampler
from vaezoo.core.config import config_from_dict, config_to_dict, replace_config
from vaezoo.core.contract import Capabilities, Posterior, VAEOutput
from vaezoo.core.likelihoods import param_shape
from vaezoo.core.model import VAE
from vaezoo.data import load_data
from vaezoo.errors import CapabilityError, ConformanceError, InputError, VAEZooError
from vaezoo.eval.evaluate import evaluate
from vaezoo.io.model_dir import CONFIG_NAME, WEIGHTS_NAME
from vaezoo.training.trainer import train
from vaezoo.zoo.builder import build_model, load_model_dir
from vaezoo.zoo.registry import REGISTRY, check_model_class

IMAGE_SHAPE = (1, 8, 8)  # the shape of scikit-learn's digits, which train_on_digits uses
VECTOR_SHAPE = (64,)
BATCH = 6
NUM_CLASSES = 10  # for conditional variants: the digits' classes
TRAIN_EPOCHS = 6  # per stage, on 1437 digits at batch 64: about 130 steps
MIN_IMPROVEMENT = 0.9  # the validation -ELBO (the loss, without an ELBO) must fall below this fraction of the untrained one's


@contextlib.contextmanager
def _named(model_class: type[VAE], name: str) -> Iterator[None]:
    """An unregistered class without a ``registry_name`` is saved under the checked name, for the check only."""
    if model_class.registry_name is not None:
        yield
        return
    model_class.registry_name = name
    try:
        yield
    finally:
        model_class.registry_name = None


def _fail(message: str) -> None:
    raise ConformanceError(message)


def _close(a: Tensor, b: Tensor, rtol: float = 1e-4, atol: float = 1e-3) -> bool:
    return bool(torch.allclose(a.detach().float(), b.detach().float(), rtol=rtol, atol=atol))


class Checker:
    """The checks. Each returns None when it passed or a reason when it does not apply, and raises on failure."""

    def __init__(self, model_class: type, name: str) -> None:
        self.model_class = model_class
        self.name = name

    # --- building ------------------------------------------------------------------------------
    def config(self, input_shape: tuple[int, ...]) -> Any:
        presets = getattr(self.model_class, "presets", {})
        tiny = presets.get("tiny", {}) if isinstance(presets, dict) else {}
        config = replace_config(self.model_class.config_class(), source=f"preset 'tiny' of {self.name!r}", **tiny)
        extra = {"num_classes": NUM_CLASSES} if self.model_class.is_conditional else {}
        return replace_config(config, source="check_model", input_shape=input_shape, **extra)

    def build(self, input_shape: tuple[int, ...] = IMAGE_SHAPE) -> VAE:
        return build_model(self.model_class, self.config(input_shape), self.name)

    def inputs(self, model: VAE, input_shape: tuple[int, ...], n: int = BATCH) -> tuple[Tensor, Tensor | None]:
        x = torch.rand(n, *input_shape)
        y = torch.arange(n) % model.config.num_classes if model.is_conditional else None
        return x, y

    # --- the checks ----------------------------------------------------------------------------
    def contract(self) -> None:
        check_model_class(self.model_class, f"check_model({self.name!r})")
        config_class = self.model_class.config_class
        if not (dataclasses.is_dataclass(config_class) and config_class.__dataclass_params__.frozen):
            _fail(f"{config_class.__name__} must be a frozen dataclass: decorate it with @dataclass(frozen=True)")
        presets = self.model_class.presets
        if not isinstance(presets, dict) or "tiny" not in presets:
            _fail(f"{self.model_class.__name__}.presets has no 'tiny' entry; add small sizes there, e.g. "
                  "presets = {'tiny': {'hidden_dims': (32,), 'latent_dim': 4}}")
        name = self.model_class.__name__
        if not isinstance(self.model_class.capabilities, Capabilities):
            _fail(f"{name}.capabilities must be a vaezoo.Capabilities, e.g. Capabilities(conditional=True)")
        metrics = self.model_class.reported_metrics
        if not (isinstance(metrics, dict) and all(isinstance(k, str) and k.isidentifier() and isinstance(v, str) and v
                                                  for k, v in metrics.items())):
            _fail(f"{name}.reported_metrics must map metric names (identifiers) to what they mean, e.g. "
                  "{'perplexity': 'exp of the entropy of the codes used'}")

    def config_json_round_trip(self) -> None:
        for shape in (IMAGE_SHAPE, VECTOR_SHAPE):
            config = self.config(shape)
            try:
                text = json.dumps(config_to_dict(config))
            except (TypeError, ValueError) as error:
                _fail(f"the config is not JSON-serializable ({error}); use numbers, strings, bools, None and tuples")
            restored = config_from_dict(type(config), json.loads(text), source="JSON round trip")
            if restored != config:
                changed = [f.name for f in dataclasses.fields(config) if getattr(restored, f.name) != getattr(config, f.name)]
                _fail(f"fields {changed} change in a JSON round trip; keep them JSON types (tuples for sequences)")

    def forward_backward(self, input_shape: tuple[int, ...]) -> None:
        model = self.build(input_shape).train()
        x, y = self.inputs(model, input_shape)
        out = model(x, y)
        if not isinstance(out, VAEOutput):
            _fail(f"forward returned {type(out).__name__}, not a vaezoo.VAEOutput")
        for attr in ("loss", "recon", "kl"):
            value = getattr(out, attr)
            if not (isinstance(value, Tensor) and value.dim() == 0):
                _fail(f"out.{attr} must be a scalar tensor (a batch mean), got {_describe(value)}")
        if not (isinstance(out.neg_elbo, Tensor) and tuple(out.neg_elbo.shape) == (BATCH,)):
            _fail(f"out.neg_elbo must have shape ({BATCH},) (one value per example), got {_describe(out.neg_elbo)}")
        if not (isinstance(out.params, Tensor) and out.params.shape == (BATCH, *param_shape(model.config))):  # x's shape or wider
            _fail(f"out.params must have shape {(BATCH, *param_shape(model.config))}, got {_describe(out.params)}")
        if not _close(out.neg_elbo.mean(), out.recon + out.kl):
            _fail(f"neg_elbo.mean()={float(out.neg_elbo.mean()):.4f} but recon + kl={float(out.recon + out.kl):.4f}; "
                  "neg_elbo is recon + kl per example")
        if not out.loss.requires_grad:
            _fail("out.loss does not require grad: it is not computed from the parameters")
        out.loss.backward()
        parameters = dict(model.named_parameters())
        first_stage = {id(p) for p in model.stages()[0].parameters()}
        trained = {n: p for n, p in parameters.items() if id(p) in first_stage}
        no_grad = [n for n, p in trained.items() if p.grad is None]
        if no_grad:
            _fail(f"parameters {no_grad[:4]} of the first stage get no gradient from the loss; leave them out of "
                  "that stage's parameters() or use them in forward")
        bad = [n for n, p in trained.items() if not bool(torch.isfinite(p.grad).all())]
        if bad:
            _fail(f"the gradients of {bad[:4]} hold NaN or Inf")
        moving = sum(bool(p.grad.abs().sum() > 0) for p in trained.values())
        if trained and moving < 0.5 * len(trained):
            _fail(f"only {moving} of {len(trained)} parameter tensors get a non-zero gradient")

    def loss_terms(self) -> None:
        model = self.build()
        x, y = self.inputs(model, IMAGE_SHAPE)
        if not isinstance(model.encode(x, y), Posterior):
            _fail("encode must return a vaezoo.Posterior (mean, layers, mode, rsample, log_prob, kl, is_gaussian); "
                  "DiagonalGaussian is one")
        for mode in ("train", "eval"):
            model.train(mode == "train")
            with torch.no_grad():
                out = model(x, y)
            _check_reported_metrics(out.metrics, type(model).reported_metrics, mode)
            scalars = out.scalars()
            missing = {"loss", "recon", "kl"} - set(scalars)
            if missing:
                _fail(f"scalars() lacks {sorted(missing)}")
            for term, value in scalars.items():
                if not (isinstance(term, str) and term.isidentifier()):
                    _fail(f"loss term {term!r} needs a name that is an identifier, e.g. 'kl_0'")
                if not (isinstance(value, Tensor) and value.dim() == 0):
                    _fail(f"loss term {term!r} must be a scalar tensor, got {_describe(value)}")
                if not bool(torch.isfinite(value)) and (term != "kl" or model.capabilities.elbo):  # else +inf: NO_ELBO
                    _fail(f"loss term {term!r} is {float(value)} in {mode} mode on inputs in [0, 1]")

    def input_checks(self) -> None:
        model = self.build().eval()
        x, y = self.inputs(model, IMAGE_SHAPE)
        wrong = torch.rand(BATCH, IMAGE_SHAPE[0] + 1, 9, 9)  # wrong channels: wrong even where any H, W is taken
        cases = [(wrong, y, f"x of shape {tuple(wrong.shape)}"), ((x * 255).to(torch.uint8), y, "x of dtype uint8")]
        if model.is_conditional:
            cases.append((x, None, "no labels y (it is conditional)"))
        for bad_x, bad_y, what in cases:
            try:
                model(bad_x, bad_y)
            except InputError:
                continue
            except Exception as error:
                _fail(f"forward given {what} raised {type(error).__name__} instead of vaezoo.InputError; "
                      "start forward with self.check_input(x, y)")
            _fail(f"forward accepted {what}; start forward with self.check_input(x, y)")

    def sample(self) -> None:
        for shape in (IMAGE_SHAPE, VECTOR_SHAPE):
            model = self.build(shape).eval()
            n = 5
            y = torch.arange(n) % model.config.num_classes if model.is_conditional else None
            samples = model.sample(n, y=y)
            if not (isinstance(samples, Tensor) and tuple(samples.shape) == (n, *shape)):
                _fail(f"sample({n}) must have shape {(n, *shape)}, got {_describe(samples)}")
            if not bool(torch.isfinite(samples).all()):
                _fail(f"sample({n}) holds NaN or Inf")
            if model.config.likelihood != "gaussian" and not 0 <= samples.min() <= samples.max() <= 1:  # a mean in [0, 1]
                _fail(f"sample({n}) must lie in [0, 1] ({model.config.likelihood}), got {samples.min():g} to {samples.max():g}")

    def reconstruct(self) -> None:
        for shape in (IMAGE_SHAPE, VECTOR_SHAPE):
            model = self.build(shape).eval()
            x, y = self.inputs(model, shape)
            recon = model.reconstruct(x, y)
            if not (isinstance(recon, Tensor) and recon.shape == x.shape):
                _fail(f"reconstruct(x) must have x's shape {tuple(x.shape)}, got {_describe(recon)}")
            if not bool(torch.isfinite(recon).all()):
                _fail("reconstruct(x) holds NaN or Inf")
        if self.model_class.capabilities.any_image_size:  # the claim holds at a size other than the config's
            model = self.build(IMAGE_SHAPE).eval()
            other = torch.rand(2, IMAGE_SHAPE[0], IMAGE_SHAPE[1] + 3, IMAGE_SHAPE[2] + 5)
            recon = model.reconstruct(other)
            if not (isinstance(recon, Tensor) and recon.shape == other.shape):
                _fail(f"capabilities.any_image_size is set, so reconstruct(x) of shape {tuple(other.shape)} must "
                      f"keep that shape, got {_describe(recon)}")

    def save_load(self) -> None:
        model = self.build().eval()
        x, y = self.inputs(model, IMAGE_SHAPE)
        with tempfile.TemporaryDirectory() as folder, _named(self.model_class, self.name):
            model.save_pretrained(folder)
            if not (Path(folder) / CONFIG_NAME).is_file() or not (Path(folder) / WEIGHTS_NAME).is_file():
                _fail(f"save_pretrained must write {CONFIG_NAME} and {WEIGHTS_NAME}")
            entry = REGISTRY.entries.get(self.name)
            if entry is not None and entry.load() is self.model_class:
                loaded = load_model_dir(folder)
            else:  # an unregistered class: the same steps as load_model_dir, without the registry lookup
                loaded = self.model_class.from_pretrained(folder)
        if type(loaded) is not self.model_class or loaded.config != model.config:
            _fail("the reloaded model has another class or config")
        original, restored = model.state_dict(), loaded.state_dict()
        different = [k for k in original if k not in restored or not torch.equal(original[k], restored[k])]
        if different or set(restored) != set(original):
            _fail(f"state_dict entries {different[:4]} differ after save and load; keep every tensor the outputs "
                  "depend on in parameters or persistent buffers")
        for method in ("reconstruct", "forward"):
            outputs = []
            for candidate in (model, loaded):
                torch.manual_seed(1)
                with torch.no_grad():
                    result = candidate.reconstruct(x, y) if method == "reconstruct" else candidate(x, y).neg_elbo
                outputs.append(result)
            if not torch.equal(outputs[0], outputs[1]):
                _fail(f"{method} differs between the model and its saved-and-loaded copy under the same seed")

    def log_likelihood(self) -> str | None:
        model = self.build().eval()
        test = load_data("digits").test
        x, y = test.x[:32], test.y[:32] if model.is_conditional else None
        if not model.capabilities.log_likelihood:
            try:
                model.log_likelihood(x, y, iw_samples=10)
            except CapabilityError:
                return "n/a: has_log_likelihood is False, and log_likelihood raises CapabilityError as it should"
            _fail("capabilities.log_likelihood is False but log_likelihood did not raise vaezoo.CapabilityError")
        log_px = model.log_likelihood(x, y, iw_samples=100)
        if not (isinstance(log_px, Tensor) and tuple(log_px.shape) == (x.shape[0],)):
            _fail(f"log_likelihood(x) must have shape ({x.shape[0]},), got {_describe(log_px)}")
        if not bool(torch.isfinite(log_px).all()):
            _fail("log_likelihood(x) holds NaN or Inf")
        with torch.no_grad():
            elbo = -torch.stack([model(x, y).neg_elbo for _ in range(10)]).mean()
        # The importance-weighted bound tightens with k (Burda et al. 2016, theorem 1): at k = 100 it
        # must lie above the ELBO (k = 1) by far more than the noise of this estimate.
        if not float(log_px.mean()) > float(elbo):
            _fail(f"the importance-weighted log p(x) with k=100 ({float(log_px.mean()):.3f}) is not above the ELBO "
                  f"({float(elbo):.3f}); check importance_sample: log p(z) - log q(z | x) of one z ~ q(z | x)")
        return None

    def latent_sampler(self) -> str | None:
        model = self.build().eval()
        x, y = self.inputs(model, IMAGE_SHAPE, n=4 * BATCH)
        if not model.capabilities.latent_sampler:
            try:
                model.sample(2, y=None if y is None else y[:2], sampler="gmm")
            except CapabilityError:
                return "n/a: capabilities.latent_sampler is False, and sample(sampler='gmm') raises CapabilityError as it should"
            _fail("capabilities.latent_sampler is False but sample(n, sampler='gmm') did not raise vaezoo.CapabilityError")
        # Ghosh et al. 2020's ex-post density on the codes: encode_mean must give (B, latent_dim) and decode take it.
        fit_sampler(model, x, y, components=2, seed=0)
        with tempfile.TemporaryDirectory() as folder, _named(self.model_class, self.name):
            model.save_pretrained(folder)
            entry = REGISTRY.entries.get(self.name)
            loaded = load_model_dir(folder) if entry is not None and entry.load() is self.model_class \
                else self.model_class.from_pretrained(folder)
        if loaded.latent_sampler is None:
            _fail("the fitted latent sampler is lost by save_pretrained and loading; keep it in the saved config and "
                  "weights (fit_sampler records it through set_latent_sampler)")
        draws = []
        for candidate in (model, loaded):
            torch.manual_seed(1)
            draws.append(candidate.sample(BATCH, y=None if y is None else y[:BATCH], sampler="gmm"))
        if not (isinstance(draws[0], Tensor) and draws[0].shape == (BATCH, *IMAGE_SHAPE)):
            _fail(f"sample({BATCH}, sampler='gmm') must have shape {(BATCH, *IMAGE_SHAPE)}, got {_describe(draws[0])}")
        if not bool(torch.isfinite(draws[0]).all()):
            _fail("sample(n, sampler='gmm') holds NaN or Inf")
        if not torch.equal(draws[0], draws[1]):
            _fail("sample(n, sampler='gmm') differs after save_pretrained and loading under the same seed; the fitted "
                  "sampler must be saved with the model")
        return None

    def train_on_digits(self) -> None:
        splits = load_data("digits")
        model = self.build()
        val_y, figure = (splits.val.y if model.is_conditional else None), ("neg_elbo" if model.capabilities.elbo else "loss")
        before = evaluate(model, splits.val.x, val_y)[figure]
        try:
            result = train(model, splits, epochs=TRAIN_EPOCHS, batch_size=64, lr=3e-3, progress=False, seed=0)
        except VAEZooError as error:
            _fail(f"training on digits stopped: {error}")
        after = evaluate(model, splits.val.x, val_y)[figure]
        if not (math.isfinite(after) and after < MIN_IMPROVEMENT * before):
            _fail(f"{TRAIN_EPOCHS} epochs on digits took the validation {'-ELBO' if figure == 'neg_elbo' else 'loss'} from "
                  f"{before:.2f} to {after:.2f} nats; it must fall below {MIN_IMPROVEMENT} x the untrained value")
        for stage in dict.fromkeys(record["stage"] for record in result.history):
            losses = [r["train"]["loss"] for r in result.history if r["stage"] == stage]
            if len(losses) > 1 and not losses[-1] < losses[0]:
                _fail(f"the training loss of stage {stage!r} did not fall over {len(losses)} epochs "
                      f"({losses[0]:.3f} -> {losses[-1]:.3f})")


def _check_reported_metrics(metrics: dict[str, Any], declared: dict[str, str], mode: str) -> None:
    """VAEOutput.metrics holds exactly the declared names, each a finite scalar or a dict of finite scalars."""
    if set(metrics) != set(declared):
        _fail(f"VAEOutput.metrics holds {sorted(metrics)} in {mode} mode but reported_metrics declares "
              f"{sorted(declared)}; declare every reported metric, and report every declared one")
    for name, value in metrics.items():
        parts = value.values() if isinstance(value, dict) else [value]
        if not all(isinstance(v, Tensor) and v.dim() == 0 and bool(torch.isfinite(v)) for v in parts):
            _fail(f"reported metric {name!r} must be a finite scalar tensor or a dict of them, got {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
