"""WeightEMA: an exponential moving average of a model's parameters, for evaluation and export."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


class WeightEMA:
    """Exponential moving average of the parameters (Polyak averaging), kept beside the model.

    Only parameters are averaged: buffers (a VQ codebook that is itself an EMA, running statistics)
    are taken from the live model as they are.

    >>> ema = WeightEMA(model, decay=0.999)  # doctest: +SKIP
    >>> ema.update(model)  # after each optimizer step  # doctest: +SKIP
    >>> with ema.applied(model): ...  # evaluate the averaged weights  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow: dict[str, Tensor] = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = dict(model.named_parameters())
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [current[n].detach() for n in names], 1 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily swap the averaged weights into ``model``."""
        backup = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict({**backup, **self.shadow})
        try:
            yield
        finally:
            model.load_state_dict(backup)


def averaged(ema: WeightEMA | None, model: nn.Module) -> contextlib.AbstractContextManager:
    """``ema.applied(model)``, or a context that changes nothing when there is no EMA."""
    return ema.applied(model) if ema is not None else contextlib.nullcontext()
