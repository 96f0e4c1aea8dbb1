"""beta-TCVAE (Chen, Li, Grosse and Duvenaud 2018, "Isolating Sources of Disentanglement in Variational
Autoencoders", arXiv:1802.04942), with vae-mlp's networks.

Chen et al.'s eq. 2 splits the KL term of the ELBO, averaged over the data (index n uniform over the N
training examples, q(z) = 1/N sum_n q(z | n) the aggregate posterior), into three parts:

    E_n[KL(q(z | n) || p(z))] = I_q(z; n)                                  index-code mutual information (mi)
                              + KL(q(z) || prod_d q(z_d))                   total correlation (tc)
                              + sum_d KL(q(z_d) || p(z_d))                  dimension-wise KL (dwkl)

and eq. 4 weights them: loss = E[-log p(x | z)] + alpha * mi + beta * tc + gamma * dwkl. Per example, with one
z ~ q(z | x_i) and estimates of log q(z) and log prod_d q(z_d) from the batch,

    mi_i = log q(z | x_i) - log q(z),   tc_i = log q(z) - sum_d log q(z_d),   dwkl_i = sum_d log q(z_d) - log p(z)

The three telescope: mi_i + tc_i + dwkl_i = log q(z | x_i) - log p(z), the one-sample Monte Carlo KL, whatever
the estimate of q(z). So eq. 4 is the ELBO plus (alpha - 1) mi + (beta - 1) tc + (gamma - 1) dwkl, and that is
what ``forward`` minimises, with the analytic KL in place of its one-sample estimate (the same expectation and
expected gradient, less noise; disentanglement_lib's BetaTCVAE does the same: "ELBO + (beta - 1) * TC").
alpha = beta = gamma = 1 is then exactly vae-mlp's loss; the defaults are Chen et al.'s dSprites setting
(alpha = gamma = 1, beta = 6). ``kl_warmup_steps`` ramps the whole regulariser. ``neg_elbo`` is recon + the
analytic KL with weight 1, as every variant reports it, and ``metrics`` holds the batch means of mi, tc and dwkl.

The estimators of log q(z_i) from a batch {x_1..x_B} drawn from N examples (``estimator``; the same weights for
each marginal q(z_d)):

- "mws", minibatch weighted sampling (Chen et al. eq. 6):   log q(z_i) ~= log sum_j q(z_i | x_j) - log(N B).
  As in the paper and the reference code; it is a lower bound of log q(z), low by about log N, so its mi is
  high by about log N and its tc by about (D - 1) log N (exactly so when the batch is the data set, N = B).
- "mss", minibatch stratified sampling (Chen et al. appendix C.2): the data set as two strata, the example z_i
  was drawn from (weight 1/N) and the N - 1 others, of which the batch holds B - 1 drawn without replacement:
      q(z_i) ~= 1/N q(z_i | x_i) + (N - 1) / (N (B - 1)) sum_{j != i} q(z_i | x_j)
  unbiased for q(z_i) and exact when the batch is the data set (N = B). The paper spreads the others' weight
  (N - 1)/N unevenly (M - 1 of them at 1/M, one at (N - M)/(N M), M = B - 1); any split with that sum is
  unbiased under a random batch, and the even one has the least variance.

N is ``dataset_size``, which the trainer does not pass: set it to the number of training examples
(``vaezoo train beta-tcvae --data fmnist --set dataset_size=60000`` or ``create_model("beta-tcvae",
dataset_size=len(train_x))``). 0 (the default) takes each batch as the whole data set, N = B, as pythae does
when no size is given and as disentanglement_lib's estimator (uniform weights, constant dropped) does: the
weights of a plug-in estimate, which puts too much weight on q(z_i | x_i) when N >> B (mi then cannot exceed
log B). A dataset_size below the batch size is taken as the batch size. The terms depend on the batch: compare
them at one batch size.

References read: rtqichen/beta-tcvae vae_quant.py (``VAE.elbo`` and ``_log_importance_weight_matrix``; its
MSS matrix fills column 0 and column 1 of every row rather than the diagonal and one entry per row, as
YannDubs/disentangling-vae issue 58 asks about), pythae
(clementchadebec/benchmark_VAE src/pythae/models/beta_tc_vae/beta_tc_vae_model.py, the same matrix, and
``dataset_size`` defaulting to the batch size) and google-research/disentanglement_lib
disentanglement_lib/methods/unsupervised/vae.py (``total_correlation``, ``BetaTCVAE``).

    >>> import torch
    >>> model = BetaTCVAE(BetaTCVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4, dataset_size=1000))
    >>> sorted(model(torch.rand(8, 64)).metrics)
    ['dwkl', 'mi', 'tc']
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vaezoo.core.config import VAEConfig
from vaezoo.core.contract import VAEOutput
from vaezoo.core.distributions import LOG_2PI, DiagonalGaussian, at_least_float32, standard_normal_log_prob
from vaezoo.core.gaussian_vae import GaussianLatentVAE
from vaezoo.errors import ConfigError, did_you_mean
from vaezoo.zoo.tags import PretrainedTag

ESTIMATORS = ("mss", "mws")


@dataclass(frozen=True)
class BetaTCVAEConfig(VAEConfig):
    encoder: str = "mlp"  # vae-mlp's networks: the MLP, also for images
    decoder: str = "mlp"
    hidden_dims: tuple[int, ...] = (512,)  # as vae-mlp
    latent_dim: int = 10  # few latents, as in the paper (10 on dSprites), so that each can take one factor
    alpha: float = 1.0  # weight of the index-code mutual information (eq. 4)
    beta: float = 6.0  # weight of the total correlation (Chen et al. use 6 on dSprites; 1 gives the ELBO)
    gamma: float = 1.0  # weight of the dimension-wise KL
    estimator: str = "mss"  # log q(z) from the batch: "mss" (stratified) | "mws" (weighted, eq. 6)
    dataset_size: int = 0  # N, the number of training examples; 0 = the batch size (the batch as the data set)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("alpha", "beta", "gamma"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (1 keeps that part of the KL as in the ELBO)")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator={self.estimator!r} is unknown; use 'mss' (minibatch stratified sampling) or "
                              f"'mws' (minibatch weighted sampling)" + did_you_mean(str(self.estimator), ESTIMATORS))
        if isinstance(self.dataset_size, bool) or not isinstance(self.dataset_size, int) or self.dataset_size < 0:
            raise ConfigError(f"dataset_size={self.dataset_size!r} must be a whole number >= 0: the number of training "
                              "examples N (e.g. 60000 for Fashion-MNIST), or 0 to take each batch as the data set")


class TCDecomposition(NamedTuple):
    """Chen et al.'s eq. 2 per example, each (B,): mi + tc + dwkl = log q(z | x) - log p(z)."""

    mi: Tensor  # log q(z | x_i) - log q(z)
    tc: Tensor  # log q(z) - sum_d log q(z_d)
    dwkl: Tensor  # sum_d log q(z_d) - log p(z)


def pairwise_log_density(z: Tensor, posterior: DiagonalGaussian) -> Tensor:
    """log q(z_i,d | x_j) for every pair (i, j) of the batch and every dim d, shape (B, B, D)."""
    z = at_least_float32(z).unsqueeze(1)  # (B, 1, D): the codes, one row each
    mean = at_least_float32(posterior.mean).unsqueeze(0)  # (1, B, D): every posterior of the batch
    logvar = at_least_float32(posterior.logvar).unsqueeze(0)
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 / logvar.exp())


def log_importance_weights(batch: int, dataset_size: int, estimator: str, like: Tensor) -> Tensor:
    """log w_ij, (B, B): q(z_i) ~= sum_j w_ij q(z_i | x_j), for a batch of ``batch`` out of ``dataset_size``."""
    n = max(dataset_size or batch, batch)  # 0, or fewer examples than the batch holds: the batch is the data set
    if estimator == "mws":  # Chen et al. eq. 6: 1/(N B) for every pair
        return like.new_full((batch, batch), -math.log(n * batch))
    # "mss": 1/N for the example z_i was drawn from, (N - 1)/(N (B - 1)) for each of the B - 1 others
    others = math.log(n - 1) - math.log(n) - math.log(max(batch - 1, 1)) if n > 1 else -math.inf
    weights = like.new_full((batch, batch), others)
    weights.fill_diagonal_(-math.log(n))
    return weights


def tc_decomposition(z: Tensor, posterior: DiagonalGaussian, dataset_size: int, estimator: str) -> TCDecomposition:
    """The three parts of eq. 2 for the codes z (B, D), each z_i ~ q(z | x_i), with log q(z) from the batch.

    >>> q = DiagonalGaussian(torch.randn(5, 3), torch.zeros(5, 3))
    >>> z = q.rsample()
    >>> parts = tc_decomposition(z, q, dataset_size=100, estimator="mss")
    >>> bool(torch.allclose(sum(parts), q.log_prob(z) - standard_normal_log_prob(z), atol=1e-5))
    True
    """
    log_q_pairs = pairwise_log_density(z, posterior)  # (B, B, D)
    log_w = log_importance_weights(z.shape[0], dataset_size, estimator, log_q_pairs)  # (B, B)
    log_qz = torch.logsumexp(log_w + log_q_pairs.sum(2), dim=1)  # (B,): log q(z_i)
    log_prod_marginals = torch.logsumexp(log_w.unsqueeze(2) + log_q_pairs, dim=1).sum(1)  # (B,): sum_d log q(z_i,d)
    log_qz_given_x = log_q_pairs.diagonal(dim1=0, dim2=1).sum(0)  # (B,): log q(z_i | x_i)
    return TCDecomposition(mi=log_qz_given_x - log_qz, tc=log_qz - log_prod_marginals,
                           dwkl=log_prod_marginals - standard_normal_log_prob(z))


class BetaTCVAE(GaussianLatentVAE):
    """vae-mlp's networks trained on Chen et al.'s eq. 4 (the KL split into mi, tc and dwkl); reports the -ELBO.

    >>> import torch
    >>> model = BetaTCVAE(BetaTCVAEConfig(input_shape=(64,), hidden_dims=(32,), latent_dim=4, beta=1.0))
    >>> out = model(torch.rand(8, 64))
    >>> bool(torch.isclose(out.loss, out.neg_elbo.mean()))  # alpha = beta = gamma = 1: the ELBO loss
    True
    """

    config_class = BetaTCVAEConfig
    registry_name = "beta-tcvae"
    reported_metrics = {
        "mi": "index-code mutual information I(z; n), batch estimate (nats)",
        "tc": "total correlation KL(q(z) || prod_d q(z_d)), batch estimate (nats)",
        "dwkl": "dimension-wise KL sum_d KL(q(z_d) || p(z_d)), batch estimate (nats)",
    }
    train_defaults = {"lr": 2e-3}  # vae-mlp's, for the same networks; not re-measured on this objective
    presets = {"tiny": {"hidden_dims": (32,), "latent_dim": 4}}
    pretrained_tags = {
        # shapes2d (dSprites-like, 56k training images, 64x64): beta = 6 on the total correlation (Chen et al.
        # on dSprites), MSS; networks and budget of vae-mlp.shapes2d. A 64-wide hidden layer keeps the weights
        # near 1 MB (the zoo stays under 30 MB); an MLP, as Chen et al. use on dSprites, because conv nets train
        # 20x slower per step on this CPU (measured: 495 vs 21 ms at batch 64).
        "shapes2d": PretrainedTag(
            {"input_shape": (1, 64, 64), "encoder": "mlp", "decoder": "mlp", "hidden_dims": (64,), "latent_dim": 10, "dataset_size": 56000},
            dataset="shapes2d", hf_hub_id="vaezoo/beta-tcvae.shapes2d", recipe={"epochs": 100, "batch_size": 64},
        ),
        "digits": PretrainedTag(
            {"input_shape": (1, 8, 8), "hidden_dims": (256,), "latent_dim": 8}, dataset="digits",
            hf_hub_id="vaezoo/beta-tcvae.digits", recipe={"epochs": 200, "batch_size": 64},
        ),
    }

    def forward(self, x: Tensor, y: Tensor | None = None) -> VAEOutput:
        self.check_input(x, y)
        x = self.prepare_target(x)
        posterior = self.encode(x, y)
        z = posterior.rsample()  # (B, D), as vae-mlp draws it
        params = self.decode(z, y)
        recon = -self.likelihood.log_prob(params, x)  # (B,)
        kl = posterior.kl()  # (B,) analytic
        config = self.config
        parts = tc_decomposition(z, posterior, config.dataset_size, config.estimator)
        mi, tc, dwkl = parts.mi.mean(), parts.tc.mean(), parts.dwkl.mean()
        # eq. 4 = ELBO + (alpha - 1) mi + (beta - 1) tc + (gamma - 1) dwkl, since the three sum to the sampled KL
        regulariser = kl.mean() + (config.alpha - 1) * mi + (config.beta - 1) * tc + (config.gamma - 1) * dwkl
        loss = recon.mean() + self.kl_weight(1.0) * regulariser
        metrics = {"mi": mi.detach(), "tc": tc.detach(), "dwkl": dwkl.detach()}
        return VAEOutput(loss=loss, terms={"tc": tc.detach()}, recon=recon.mean(), kl=kl.mean(), neg_elbo=recon + kl,
                         params=params, metrics=metrics)
