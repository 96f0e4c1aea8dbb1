"""Reconstruction: each input decoded from its posterior mean, in batches, on the CPU."""
from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.apps._common import BATCH_SIZE, as_batch, checked_labels
from vaezoo.core.model import VAE


@torch.no_grad()
def reconstruct(model: VAE, x: Tensor, y: Tensor | int | None = None) -> Tensor:
    """Decode the posterior mean of each input: (B, *input_shape) -> (B, *input_shape), on the CPU.

    >>> apps.reconstruct(model, test.x[:8]).shape  # doctest: +SKIP
    torch.Size([8, 1, 8, 8])
    """
    x = as_batch(model, x)
    y = checked_labels(model, y, x.shape[0])
    model.eval()
    output = torch.empty(x.shape, dtype=torch.float32)  # filled batch by batch; no examples give an empty batch
    # (a variant that takes any image size returns x's own H, W: see VAE.reconstruct)
    for i in range(0, x.shape[0], BATCH_SIZE):
        output[i:i + BATCH_SIZE] = model.reconstruct(x[i:i + BATCH_SIZE], None if y is None else y[i:i + BATCH_SIZE])
    return output
