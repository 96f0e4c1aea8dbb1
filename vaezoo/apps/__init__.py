"""What VAEs are used for (the seed's sections 3 and 7), as functions of a model and tensors.

Every function takes a :class:`vaezoo.VAE` and tensors shaped ``(B, *input_shape)`` and returns tensors,
arrays or a small dataclass; ``vaezoo.apps.runs`` wraps each one as a command (``vaezoo sample``, ...).

>>> import vaezoo
>>> from vaezoo import apps
>>> from vaezoo.data import load_data
>>> test = load_data("digits").test
>>> model = vaezoo.from_pretrained("vae-mlp.digits")
>>> apps.generate(model, 16, seed=0).shape                        # generation
torch.Size([16, 1, 8, 8])
>>> apps.generate(apps.fit_sampler(model, load_data("digits").train.x), 16, sampler="gmm").shape  # doctest: +SKIP
torch.Size([16, 1, 8, 8])
>>> apps.interpolate(model, test.x[0], test.x[1], steps=5, method="slerp").shape
torch.Size([5, 1, 8, 8])
>>> filled = apps.impute(model, test.x, apps.bottom_half_mask((1, 8, 8)))   # NaN means missing when no mask
>>> report = apps.detect_anomalies(model, test.x, reference=load_data("digits").val.x)
>>> cvae = vaezoo.from_pretrained("cvae.digits")
>>> apps.transfer(cvae, test.x[:4], test.y[:4], to_label=7).shape  # re-rendered as sevens
torch.Size([4, 1, 8, 8])

Latents are what ``decode`` takes: a tensor, or for a hierarchy a list of tensors, bottom first.
The applications read a model through the contract only (vaezoo.core.contract): ``encode_mean`` for the
deterministic code, the posterior's ``is_gaussian``, and ``capabilities``. Methods that need a Gaussian
posterior (slerp, attribute vectors, traversals) or a declared capability (Metropolis-within-Gibbs,
temperature, labels) raise :class:`CapabilityError` otherwise and say what works instead.

One module per application: generation, samplers (a density fitted on the codes after training, to
sample from instead of the prior), reconstruction, interpolation (and latent arithmetic), anomaly,
imputation, transfer, exploration, augmentation; _common holds what they share.
"""
from __future__ import annotations

from vaezoo.apps._common import (
    BATCH_SIZE,
    check_label,
    decode_latents,
    encode_means,
    model_label,
    require_conditional,
    seeded,
)
from vaezoo.apps.anomaly import (
    ANOMALY_METHODS,
    AnomalyReport,
    anomaly_scores,
    detect_anomalies,
    neg_elbo_scores,
    nll_scores,
)
from vaezoo.apps.augmentation import augment
from vaezoo.apps.exploration import MAP_METHODS, Traversal, latent_map, posterior_means, traverse
from vaezoo.apps.generation import generate, sample_labels
from vaezoo.apps.imputation import (
    IMPORTANCE_ROUNDS,
    IMPUTATION_ITERATIONS,
    IMPUTATION_IW_SAMPLES,
    IMPUTATION_METHODS,
    MWG_ITERATIONS,
    bottom_half_mask,
    default_imputation_method,
    impute,
    model_mean_fill,
    observed_mean_fill,
)
from vaezoo.apps.interpolation import INTERPOLATION_METHODS, add_attribute, attribute_vector, interpolate, lerp, slerp
from vaezoo.apps.reconstruction import reconstruct
from vaezoo.apps.samplers import fit_sampler
from vaezoo.apps.transfer import transfer
from vaezoo.core.contract import Latent
from vaezoo.core.samplers import LATENT_SAMPLERS

__all__ = [
    "ANOMALY_METHODS", "BATCH_SIZE", "IMPORTANCE_ROUNDS", "IMPUTATION_ITERATIONS", "IMPUTATION_IW_SAMPLES", "IMPUTATION_METHODS", "INTERPOLATION_METHODS",
    "LATENT_SAMPLERS", "MAP_METHODS", "MWG_ITERATIONS", "AnomalyReport", "Latent", "Traversal",
    "add_attribute", "anomaly_scores", "attribute_vector", "augment", "bottom_half_mask", "check_label",
    "decode_latents", "default_imputation_method", "detect_anomalies", "encode_means", "fit_sampler", "generate", "impute", "interpolate", "latent_map", "lerp",
    "model_label", "model_mean_fill", "neg_elbo_scores", "nll_scores", "observed_mean_fill", "posterior_means", "reconstruct",
    "require_conditional", "sample_labels", "seeded", "slerp", "transfer", "traverse",
]
