"""Divergence: the finiteness checks on losses, validation figures and weights, and the last good weights to go back to."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vaezoo.core.contract import TrainingStage
from vaezoo.errors import TrainingDivergedError


def check_finite_loss(values: dict[str, float], stage: TrainingStage, epoch: int, step: int) -> None:
    """TrainingDivergedError naming the loss terms that are NaN or Inf at this step."""
    if all(math.isfinite(v) for v in values.values()):
        return
    bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
    raise TrainingDivergedError(f"training diverged in stage {stage.name!r} at epoch {epoch + 1}, step {step + 1}: {bad}")


def check_epoch_end(model: nn.Module, stage: TrainingStage, epoch: int, val_metrics: dict[str, Any]) -> None:
    """The last optimizer step of an epoch can still break the weights after its loss was checked."""
    where = f"training diverged in stage {stage.name!r} after epoch {epoch + 1}"
    bad = ", ".join(_non_finite(val_metrics))
    if bad:
        raise TrainingDivergedError(f"{where}: validation {bad}")
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    if floats and not bool(torch.stack([torch.isfinite(t).all() for t in floats]).all()):
        raise TrainingDivergedError(f"{where}: the weights hold NaN or Inf")


def _non_finite(metrics: dict[str, Any]) -> list[str]:
    """``name=value`` for each NaN or Inf figure; a metric of named parts (e.g. per layer) as ``name['part']=value``."""
    bad = []
    for name, value in metrics.items():
        parts = value.items() if isinstance(value, dict) else [(None, value)]
        bad += [f"{name}{'' if part is None else f'[{part!r}]'}={v}" for part, v in parts if not math.isfinite(v)]
    return bad


class LastGood:
    """The weights (and EMA weights) of the last epoch that ended finite, kept on the CPU.

    >>> last_good.remember(model, ema_shadow, "epoch 3")  # doctest: +SKIP
    >>> last_good.put_back(model)  # after a TrainingDivergedError  # doctest: +SKIP
    'epoch 3'
    """

    def __init__(self) -> None:
        self.label: str | None = None  # where the weights come from; None: the initial weights
        self.weights: dict[str, Tensor] = {}
        self.ema: dict[str, Tensor] | None = None

    def remember(self, model: nn.Module, ema_shadow: dict[str, Tensor] | None, label: str | None) -> None:
        self.label = label
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.ema = None if ema_shadow is None else {k: v.detach().to("cpu", copy=True) for k, v in ema_shadow.items()}

    def put_back(self, model: nn.Module) -> str | None:
        """Load them into ``model`` (the EMA weights over them, as a finished run exports); return their label."""
        model.load_state_dict(self.weights)
        if self.ema is not None:
            model.load_state_dict({**model.state_dict(), **self.ema})
        model.eval()
        return self.label
