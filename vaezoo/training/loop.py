"""One stage's optimizer steps, an epoch at a time: seeded batches, the learning-rate schedule, autocast, EMA, progress."""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vaezoo.core.contract import StepOutput, TrainingStage
from vaezoo.core.distributed import DistributedContext, all_reduce_mean
from vaezoo.core.model import VAE
from vaezoo.data.streaming import StreamedArray
from vaezoo.errors import TrainingDivergedError
from vaezoo.training.batches import batch_source
from vaezoo.training.config import TrainConfig, compile_this_stage, lr_at
from vaezoo.training.divergence import check_finite_loss
from vaezoo.training.ema import WeightEMA


def make_optimizer(stage: TrainingStage, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam/AdamW over the stage's parameter groups (TrainingStage.optimizer_groups), with the fused kernel where
    this torch has one for the device, else foreach."""
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    groups = stage.optimizer_groups()
    try:
        return cls(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, lr=config.lr, weight_decay=config.weight_decay, foreach=True)


class StageStep(nn.Module):
    """Wraps one stage's objective as a module, so DDP and torch.compile see an ordinary forward."""

    def __init__(self, model: VAE, stage: TrainingStage) -> None:
        super().__init__()
        self.model = model
        self.stage_loss = stage.loss

    def forward(self, x: Tensor, y: Tensor | None) -> StepOutput:
        return self.stage_loss(x, y)


class StageLoop:
    """Trains one stage's parameters on the training split, one epoch per :meth:`run_epoch`.

    Built once per stage: the optimizer over the stage's parameters, the step module (DDP under
    torchrun, compiled where ``compile`` says so: see compile_this_stage), and the step counts. Every step sees one full global
    batch; each rank takes its ``local_batch`` slice of it. ``train_x`` is a tensor on ``device``, or a
    streamed split (vaezoo.data.streaming), whose batches are read from disk in the same order.

    >>> loop = StageLoop(model, stage, config, context, device, x, y, epochs=5, ema=None, show_stage=False)  # doctest: +SKIP
    >>> train_metrics = loop.run_epoch(0, generator)  # doctest: +SKIP
    >>> loop.end_epoch("neg_elbo", 31.2)  # doctest: +SKIP
    """

    def __init__(self, model: VAE, stage: TrainingStage, config: TrainConfig, context: DistributedContext,
                 device: torch.device, train_x: Tensor | StreamedArray, train_y: Tensor | None, epochs: int,
                 ema: WeightEMA | None, show_stage: bool) -> None:
        self.model, self.stage, self.config, self.context, self.device = model, stage, config, context, device
        self.train_x, self.train_y, self.epochs, self.ema, self.show_stage = train_x, train_y, epochs, ema, show_stage
        self.optimizer = make_optimizer(stage, config, device)
        step_module: nn.Module = StageStep(model, stage)
        if context.enabled:
            step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
        self.batches = batch_source(train_x, train_y, device)  # tensor slices, or streamed rows in the same order
        self.steps_per_epoch = max(1, train_x.shape[0] // config.batch_size)  # full global batches only
        self.total_steps = epochs * self.steps_per_epoch
        self.eager_step = step_module
        self.compiled = compile_this_stage(config, type(model), self.total_steps, device, context.enabled)
        self.step_module = torch.compile(step_module) if self.compiled else step_module
        self._compile_checked = not self.compiled or config.compile is True  # asked for: its errors are the user's
        self.local_batch = max(1, config.batch_size // context.world_size)
        self._bar: Any = None  # the running epoch's progress bar, until end_epoch
        self._postfix: dict[str, str] = {}

    def run_epoch(self, epoch: int, generator: torch.Generator) -> dict[str, float]:
        """Train one epoch (0-based) in the order ``generator`` draws; return the loss terms' means over all ranks."""
        self.model.train()
        order = torch.randperm(self.train_x.shape[0], generator=generator)  # on the CPU; the batch source moves it
        self.end_epoch()
        self._bar = self._progress_bar(epoch)
        try:
            return self._steps(epoch, order, self._bar)
        except BaseException:
            self.end_epoch()  # so that the CLI's one-line message starts on a clean line
            raise

    def end_epoch(self, val_name: str | None = None, val_value: float | None = None) -> None:
        """Close the epoch's progress bar, which stays on screen as the epoch's line, with the validation
        figure when given. The trainer calls it once it has validated; a second call does nothing."""
        bar, self._bar = self._bar, None
        if bar is None:
            return
        if val_name is not None and val_value is not None:
            bar.set_postfix({**self._postfix, f"val {val_name}": f"{val_value:.2f}"}, refresh=False)
        bar.close()

    def _compiled_step_settings(self) -> contextlib.AbstractContextManager:
        """Under ``compile``: model.train_step (a Python int that kl_weight's warm-up and annealing read) is traced
        as a symbolic int; dynamo would otherwise specialise on it and compile a new graph at every step of a
        warm-up, until its recompile limit, then fall back to eager."""
        if not self.compiled:
            return contextlib.nullcontext()
        return torch._dynamo.config.patch(allow_unspec_int_on_nn_module=True)

    def _steps(self, epoch: int, order: Tensor, bar: Any) -> dict[str, float]:
        config, context, optimizer, steps_per_epoch = self.config, self.context, self.optimizer, self.steps_per_epoch
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16 and self.device.type == "cuda")
        sums: Tensor | None = None  # the loss terms of the updates taken; skipped ones stay out
        names: list[str] = []
        counted, skipped = 0, 0
        tick, seen_since_tick = time.perf_counter(), 0
        batches = self.batches.epoch(order, steps_per_epoch, config.batch_size, context.rank, self.local_batch)
        for step, (xb, yb) in enumerate(batches):
            global_step = epoch * steps_per_epoch + step
            lr = lr_at(global_step, self.total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # a ParamGroup's own share of the schedule
            self.model.train_step = global_step
            out = self._forward_backward(xb, yb, autocast)
            if self._gradient_is_sane():
                optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                scalars = out.scalars()
                if sums is None:
                    names = list(scalars)
                    sums = torch.zeros(len(names), device=self.device)
                sums += torch.stack([scalars[name].detach().float() for name in names])
                counted += 1
            else:
                skipped += 1
            seen_since_tick += self.local_batch * context.world_size
            if sums is not None and ((step + 1) % config.log_every == 0 or step + 1 == steps_per_epoch):
                means = sums / counted  # the one host sync, at the display's pace
                values = means.tolist()
                check_finite_loss(dict(zip(names, values)), self.stage, epoch, step)
                now = time.perf_counter()
                if bar is not None:
                    self._postfix = {**{k: f"{v:.2f}" for k, v in zip(names, values)},
                                     "samples/s": f"{seen_since_tick / max(now - tick, 1e-9):.0f}"}
                    bar.set_postfix(self._postfix, refresh=False)
                    bar.update((step + 1) - bar.n)
                tick, seen_since_tick = now, 0
        if sums is None:
            raise TrainingDivergedError(
                f"every update of epoch {epoch + 1} of stage {self.stage.name!r} was skipped: gradient norms above "
                f"grad_skip_threshold={config.grad_skip_threshold} or not finite; raise it (--set grad_skip_threshold=...) "
                "or lower the learning rate (--lr)")
        means = dict(zip(names, all_reduce_mean(sums / counted, context).tolist()))
        if config.grad_skip_threshold:
            means["skipped_updates"] = float(skipped)
        return means

    def _forward_backward(self, x: Tensor, y: Tensor | None, autocast: Any) -> StepOutput:
        """The step's forward and backward, gradients zeroed first. The first compiled step of a compile the user did
        not ask for falls back to eager, with a warning, when torch.compile cannot run here (no C++ compiler for
        Inductor, say); forward and backward both, as Inductor compiles the backward graph at the first backward."""
        def run() -> StepOutput:
            with self._compiled_step_settings(), autocast:
                out = self.step_module(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            return out

        if self._compile_checked:
            return run()
        cuda = self.device.type == "cuda"
        states = torch.random.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None
        try:
            out = run()
        except Exception as error:  # any backend failure; a bug in the model fails again eagerly, as it should
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                          "training eagerly instead (pass compile=False, or --no-compile, to skip the attempt)",
                          RuntimeWarning, stacklevel=2)
            self.step_module, self.compiled = self.eager_step, False
            torch.random.set_rng_state(states[0])  # the failed attempt's noise draws are not the run's
            if cuda:
                torch.cuda.set_rng_state(states[1], self.device)
            out = run()
        self._compile_checked = True
        return out

    def _gradient_is_sane(self) -> bool:
        """Clip (grad_clip) and, with grad_skip_threshold, say whether every norm before clipping is finite and below it.

        Each parameter group is clipped on its own, as it would be with an optimiser of its own (an adversary's
        gradients do not scale the VAE's); a stage without ParamGroups has one group, the global norm.
        """
        config = self.config
        if not (config.grad_clip or config.grad_skip_threshold):
            return True
        norms = [torch.nn.utils.clip_grad_norm_(group["params"], config.grad_clip or float("inf"))
                 for group in self.optimizer.param_groups]
        if not config.grad_skip_threshold:
            return True
        norm = float(torch.stack(norms).max())  # a host sync per step, only when skipping is on
        return math.isfinite(norm) and norm < config.grad_skip_threshold

    def _progress_bar(self, epoch: int) -> Any:
        if not (self.config.progress and self.context.is_main):
            return None
        from tqdm.auto import tqdm  # here, not at the top: only a run that shows progress needs it

        label = f"{self.stage.name} " if self.show_stage else ""
        return tqdm(total=self.steps_per_epoch, desc=f"{label}epoch {epoch + 1}/{self.epochs}", leave=True,
                    dynamic_ncols=True)  # leave: one line per epoch stays on screen
