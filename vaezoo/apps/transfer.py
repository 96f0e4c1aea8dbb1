"""Style transfer: examples re-rendered as another class by a conditional model, their style kept in z."""
from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.apps._common import as_batch, checked_labels, decode_to_cpu, mean_code, require_conditional
from vaezoo.core.model import VAE


@torch.no_grad()
def transfer(model: VAE, x: Tensor, y: Tensor | int, to_label: Tensor | int) -> Tensor:
    """Re-render examples as another class: z = mean of q(z | x, y) with the true labels y, decoded with
    ``to_label`` (the analogies of Kingma et al. 2014, arXiv:1406.5298; Sohn et al. 2015). z holds
    what the label does not (the style: slant, thickness), so it carries over. Conditional models only.

    >>> apps.transfer(cvae, test.x[:8], test.y[:8], to_label=7)  # doctest: +SKIP
    """
    require_conditional(model, "style transfer (encode with the true label, decode with another)")
    x = as_batch(model, x)
    source = checked_labels(model, y, x.shape[0], "y")
    target = checked_labels(model, to_label, x.shape[0], "to_label")
    model.eval()
    return decode_to_cpu(model, mean_code(model, x, source), target)
