"""The disentanglement scores as disentanglement_lib defines them: BetaVAE, FactorVAE, MIG, SAP and DCI.

Each follows google-research/disentanglement_lib, ``disentanglement_lib/evaluation/metrics/`` (read at commit
86a644d): ``beta_vae.py``, ``factor_vae.py``, ``mig.py``, ``sap_score.py``, ``dci.py`` and ``utils.py``, with the
sample counts of ``config/unsupervised_study_v1/metric_configs/*.gin`` (Locatello et al. 2019, arXiv:1811.12359)
as defaults. With N observations, factors v_k (k = 1..F) and codes z_j (j = 1..D):

- BetaVAE score (Higgins et al. 2017): a point fixes a random factor k in two batches of ``batch_size``
  observations; its feature is mean_b |z(x1_b) - z(x2_b)| (D,); a logistic regression (scikit-learn 0.20's default,
  liblinear one-vs-rest) learns k from it; the score is its accuracy on ``num_eval`` new points (chance: 1/F).
- FactorVAE score (Kim and Mnih 2018): codes are divided by their std over ``num_variance_estimate``
  observations (dimensions with std < ``prune_threshold`` = 0.05 are dropped); a point fixes factor k in one
  batch and votes for (k, argmin_j Var_batch[z_j] / Var[z_j]); a majority-vote classifier maps each j to the
  factor it was voted with most; the score is its accuracy on new votes (chance: about 1/F).
- MIG (Chen et al. 2018): each z_j is cut into 20 equal-width bins between its min and max (a histogram);
  I(z_j; v_k) in nats (sklearn ``mutual_info_score``); MIG = mean_k (I_(1)k - I_(2)k) / H(v_k), the gap between
  the two codes that tell most about v_k, over v_k's entropy. Range [0, 1].
- SAP (Kumar et al. 2018): S_jk = accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` predicting v_k
  from z_j alone on ``num_test`` new points (discrete factors, the study's setting), or the squared correlation
  of z_j and v_k with ``continuous_factors``; SAP = mean_k (top S_jk - second S_jk). Range [0, 1].
- DCI (Eastwood and Williams 2018): ``GradientBoostingClassifier`` (scikit-learn's defaults) predicts v_k from z;
  R_jk = |feature importance|. Disentanglement = sum_j rho_j (1 - H_F(R_j.)), rho_j = sum_k R_jk / sum R;
  completeness = sum_k rho_k (1 - H_D(R_.k)) with entropies in base F and D; informativeness = the mean test
  accuracy of the classifiers (disentanglement_lib's ``informativeness_test``; higher is better).

Where disentanglement_lib leaves a scikit-learn model unseeded (GradientBoostingClassifier, LinearSVC), it is
seeded here from ``seed``, so the same seed gives the same numbers.

>>> mig(lambda x: x, data, seed=0, num_train=2000)  # doctest: +SKIP
0.98...
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from vaezoo.core.validation import check_count, check_non_negative_number
from vaezoo.errors import ConfigError
from vaezoo.eval.factor_codes import GroundTruthData, Represent, check_factors, fixed_factor_blocks, sample_codes

Seed = int | np.random.Generator
NUM_BINS = 20  # disentanglement_lib's discretizer.num_bins (unsupervised_study_v1/metric_configs/mig.gin)


def _generator(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_count(seed, "seed", minimum=0, error=ConfigError))


def _sklearn_seed(generator: np.random.Generator) -> int:
    """An int seed for a scikit-learn model, drawn from the metric's generator (sklearn takes no Generator)."""
    return int(generator.integers(2**31 - 1))


def _counts(**counts: int) -> None:
    for name, value in counts.items():
        check_count(value, name, minimum=2, error=ConfigError)


# --- BetaVAE (beta_vae.py) -------------------------------------------------------------------------
def beta_vae_score(represent: Represent, data: GroundTruthData, seed: Seed = 0, *, batch_size: int = 64,
                   num_train: int = 10000, num_eval: int = 5000) -> float:
    """Accuracy of a logistic regression telling which factor two batches share, from mean |z1 - z2|.

    >>> beta_vae_score(lambda x: x, data, num_train=500, num_eval=250)  # doctest: +SKIP
    1.0
    """
    check_factors(data)
    _counts(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    generator = _generator(seed)
    train_features, train_labels = _beta_vae_points(represent, data, batch_size, num_train, generator)
    model = _beta_vae_classifier(_sklearn_seed(generator)).fit(train_features, train_labels)
    eval_features, eval_labels = _beta_vae_points(represent, data, batch_size, num_eval, generator)
    return float(model.score(eval_features, eval_labels))


def _beta_vae_classifier(random_state: int) -> OneVsRestClassifier:
    """beta_vae.py's ``LogisticRegression(random_state=...)`` as scikit-learn then (0.20) built it: liblinear, one
    versus rest, C=1. Today's default (lbfgs, multinomial) is another model, and stops short of convergence on
    these unscaled features at disentanglement_lib's sizes; liblinear now needs the one-vs-rest wrapper."""
    return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=random_state))


def _beta_vae_points(represent: Represent, data: GroundTruthData, batch_size: int, num_points: int,
                     generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D): mean over the batch of |z(x1) - z(x2)|, and labels (N,): the shared factor."""
    blocks = list(fixed_factor_blocks(represent, data, num_points, batch_size, generator, pairs=True))
    features = [np.abs(codes[:, 0] - codes[:, 1]).mean(axis=1) for _, codes in blocks]  # (n, 2, B, D) -> (n, D)
    return np.concatenate(features), np.concatenate([fixed for fixed, _ in blocks])


# --- FactorVAE (factor_vae.py) ---------------------------------------------------------------------
def factor_vae_score(represent: Represent, data: GroundTruthData, seed: Seed = 0, *, batch_size: int = 64,
                     num_train: int = 10000, num_eval: int = 5000, num_variance_estimate: int = 10000,
                     prune_threshold: float = 0.05) -> float:
    """Accuracy of the majority vote from the code dimension of least normalised variance to the fixed factor.

    0 when no dimension has a std of at least ``prune_threshold`` (every unit collapsed), as in disentanglement_lib.

    >>> factor_vae_score(lambda x: x, data, num_train=500, num_eval=250)  # doctest: +SKIP
    1.0
    """
    num_factors = check_factors(data)
    _counts(batch_size=batch_size, num_train=num_train, num_eval=num_eval, num_variance_estimate=num_variance_estimate)
    check_non_negative_number(prune_threshold, "prune_threshold", error=ConfigError)
    generator = _generator(seed)
    codes, _ = sample_codes(represent, data, num_variance_estimate, generator)
    global_variances = np.var(codes, axis=0, ddof=1)
    # A zero variance is also dropped, which only matters for prune_threshold=0 (it would divide by zero).
    active = (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)
    if not active.any():
        return 0.0
    train_votes = _factor_vae_votes(represent, data, batch_size, num_train, generator, global_variances, active,
                                    num_factors)
    classifier = np.argmax(train_votes, axis=0)  # (D_active,): the factor each dimension was voted with most
    eval_votes = _factor_vae_votes(represent, data, batch_size, num_eval, generator, global_variances, active,
                                   num_factors)
    return float(eval_votes[classifier, np.arange(eval_votes.shape[1])].sum() / eval_votes.sum())


def _factor_vae_votes(represent: Represent, data: GroundTruthData, batch_size: int, num_points: int,
                      generator: np.random.Generator, global_variances: np.ndarray, active: np.ndarray,
                      num_factors: int) -> np.ndarray:
    """Votes (F, D_active): how often fixing factor k left active dimension j with the least normalised variance."""
    votes = np.zeros((num_factors, int(active.sum())), dtype=np.int64)
    for fixed, codes in fixed_factor_blocks(represent, data, num_points, batch_size, generator, pairs=False):
        local_variances = np.var(codes, axis=1, ddof=1)  # (n, B, D) -> (n, D)
        least = np.argmin(local_variances[:, active] / global_variances[active], axis=1)  # (n,)
        np.add.at(votes, (fixed, least), 1)
    return votes


# --- MIG (mig.py, utils.py) ------------------------------------------------------------------------
def mig(represent: Represent, data: GroundTruthData, seed: Seed = 0, *, num_train: int = 10000,
        num_bins: int = NUM_BINS) -> float:
    """Mutual information gap: mean over factors of the gap between the two most informative codes, over H(v_k).

    >>> mig(lambda x: x, data, num_train=2000)  # doctest: +SKIP
    1.0
    """
    check_factors(data)
    _counts(num_train=num_train, num_bins=num_bins)
    codes, factors = sample_codes(represent, data, num_train, _generator(seed))
    return mig_from_codes(codes, factors, num_bins)


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> float:
    """MIG of codes (N, D) with factors (N, F), after the histogram discretisation into ``num_bins`` bins."""
    information = mutual_information(histogram_discretize(codes, num_bins), factors)  # (D, F)
    entropy = factor_entropies(factors)
    top = np.sort(information, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy))


def factor_of_each_code(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """For each code dimension (N, D), the factor (N, F) it shares the most information with and that information
    as a share of the factor's entropy, I(z_j; v_k) / H(v_k) in [0, 1] (MIG's normalisation): (D,) ints, (D,) floats.

    >>> best, share = factor_of_each_code(np.array([[0.0, 5], [1, 5], [0, 6], [1, 6]]), np.array([[0, 1], [1, 1], [0, 0], [1, 0]]))
    >>> best.tolist(), share.round(3).tolist()
    ([0, 1], [1.0, 1.0])
    """
    information = mutual_information(histogram_discretize(codes, num_bins), factors)  # (D, F)
    entropy = factor_entropies(factors)
    shares = information / np.where(entropy > 0, entropy, 1.0)
    best = shares.argmax(axis=1)
    return best, shares[np.arange(len(best)), best]


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Bin ids (N, D) of each code dimension in ``num_bins`` equal-width bins over its range (utils.py's
    ``_histogram_discretize``: ``np.digitize`` on the histogram's edges but the last, so ids run 1..num_bins)."""
    columns = [np.digitize(column, np.histogram(column, num_bins)[1][:-1]) for column in codes.T]
    return np.stack(columns, axis=1)


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """H(v_k) in nats of each factor column (N, F) -> (F,), as I(v_k; v_k) (mig.py's normaliser)."""
    return np.array([mutual_info_score(factor, factor) for factor in factors.T])


def mutual_information(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) in nats (D, F) of discrete codes (N, D) and factors (N, F)."""
    return np.array([[mutual_info_score(factor, code) for factor in factors.T] for code in discrete_codes.T])


# --- SAP (sap_score.py) ----------------------------------------------------------------------------
def sap(represent: Represent, data: GroundTruthData, seed: Seed = 0, *, num_train: int = 10000, num_test: int = 5000,
        continuous_factors: bool = False) -> float:
    """Separated attribute predictability: mean over factors of the gap between the two codes that predict it best.

    >>> sap(lambda x: x, data, num_train=2000, num_test=1000)  # doctest: +SKIP
    0.6...
    """
    check_factors(data)
    _counts(num_train=num_train, num_test=num_test)
    generator = _generator(seed)
    codes, factors = sample_codes(represent, data, num_train, generator)
    test_codes, test_factors = sample_codes(represent, data, num_test, generator)
    scores = sap_matrix(codes, factors, test_codes, test_factors, continuous_factors, _sklearn_seed(generator))
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def sap_matrix(codes: np.ndarray, factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray,
               continuous_factors: bool = False, random_state: int = 0) -> np.ndarray:
    """S (D, F): how well code j alone predicts factor k (test accuracy, or the squared correlation)."""
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for j, code in enumerate(codes.T):
        for k, factor in enumerate(factors.T):
            if continuous_factors:
                covariance = np.cov(code, factor, ddof=1)
                variance = covariance[0, 0]
                scores[j, k] = covariance[0, 1] ** 2 / (variance * covariance[1, 1]) if variance > 1e-12 else 0.0
            else:
                model = LinearSVC(C=0.01, class_weight="balanced", random_state=random_state)
                model.fit(code[:, None], factor)
                scores[j, k] = np.mean(model.predict(test_codes[:, j, None]) == test_factors[:, k])
    return scores


# --- DCI (dci.py) ----------------------------------------------------------------------------------
def dci(represent: Represent, data: GroundTruthData, seed: Seed = 0, *, num_train: int = 10000,
        num_test: int = 5000) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness from gradient-boosted trees' feature importances.

    >>> dci(lambda x: x, data, num_train=1000, num_test=500)  # doctest: +SKIP
    {'dci_disentanglement': 0.99..., 'dci_completeness': 0.99..., 'dci_informativeness': 1.0}
    """
    check_factors(data)
    _counts(num_train=num_train, num_test=num_test)
    generator = _generator(seed)
    codes, factors = sample_codes(represent, data, num_train, generator)
    test_codes, test_factors = sample_codes(represent, data, num_test, generator)
    importance, accuracy = gbt_importance(codes, factors, test_codes, test_factors, _sklearn_seed(generator))
    return {"dci_disentanglement": dci_disentanglement(importance), "dci_completeness": dci_completeness(importance),
            "dci_informativeness": accuracy}


def gbt_importance(codes: np.ndarray, factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray,
                   random_state: int = 0) -> tuple[np.ndarray, float]:
    """Importances R (D, F) of each code for each factor's classifier, and the classifiers' mean test accuracy."""
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    accuracies = []
    for k, factor in enumerate(factors.T):
        model = GradientBoostingClassifier(random_state=random_state).fit(codes, factor)
        importance[:, k] = np.abs(model.feature_importances_)
        accuracies.append(np.mean(model.predict(test_codes) == test_factors[:, k]))
    return importance, float(np.mean(accuracies))


def _one_minus_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """1 - H(p) in base ``base`` of each column p of ``weights`` normalised (scipy.stats.entropy, as dci.py)."""
    p = weights / weights.sum(axis=0, keepdims=True)
    return 1.0 + np.sum(p * np.log(p), axis=0) / np.log(base)


def dci_disentanglement(importance: np.ndarray) -> float:
    """sum_j rho_j (1 - H_F(R_j.)) of an importance matrix R (D, F); rho_j = code j's share of all importance."""
    per_code = _one_minus_entropy(importance.T + 1e-11, importance.shape[1])  # 1e-11 as dci.py, so 0 log 0 = 0
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def dci_completeness(importance: np.ndarray) -> float:
    """sum_k rho_k (1 - H_D(R_.k)) of an importance matrix R (D, F); rho_k = factor k's share of all importance."""
    per_factor = _one_minus_entropy(importance + 1e-11, importance.shape[0])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))
