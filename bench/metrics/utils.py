"""Helpers shared by the metrics, with disentanglement_lib's semantics (metrics.md §1.2-1.3),
and dlib's ``evaluation/metrics/utils.py`` surface: the same functions and the gin
configurables scripts bind (``discretizer``, ``histogram_discretizer``, ``predictor``,
``gradient_boosting_classifier``, ``logistic_regression_cv``).

Our configurables live under our module path (``bench.metrics.utils.discretizer``), as
dlib's live under theirs. In a process that imports only one of the two, the short names
(``discretizer.num_bins``) work; where both are imported, gin refuses a short name as
ambiguous and a longer one says which is meant (``bench.metrics.utils.discretizer`` or
``evaluation.metrics.utils.discretizer``). Nothing is ever bound to the other library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gin
import numpy as np
import sklearn.metrics
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import KFold

RepresentationFunction = Callable[[np.ndarray], np.ndarray]


def dlib_configurable(name: str, parameters: Sequence[str] = ()) -> Callable:
    """Register a function with gin as dlib's configurable ``name``, bindable in exactly the
    ``parameters`` dlib's own takes (our extra keyword arguments are Python-only)."""
    return gin.configurable(name, allowlist=list(parameters) or None)


def generate_batch_factor_code(
    ground_truth_data,
    representation_function: RepresentationFunction,
    num_points: int,
    random_state: np.random.RandomState,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes (D, N) and factors (K, N) of ``num_points`` sampled observations.

    Sampling goes batch by batch, as dlib does: the batch size changes which factors are drawn.
    """
    codes, factors = [], []
    done = 0
    while done < num_points:
        n = min(num_points - done, batch_size)
        batch_factors, observations = ground_truth_data.sample(n, random_state)
        codes.append(np.asarray(representation_function(observations)))
        factors.append(batch_factors)
        done += n
    return np.transpose(np.concatenate(codes)), np.transpose(np.concatenate(factors))


def histogram_discretize(target: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per row, labels 1..num_bins of equal-width bins from the row's min to its max.

    The output keeps the input's dtype, as dlib's ``np.zeros_like`` does.
    """
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        edges = np.histogram(target[i, :], num_bins)[1][:-1]
        discretized[i, :] = np.digitize(target[i, :], edges)
    return discretized


# dlib's names for the discretizers (``@histogram_discretizer`` in gin files).
_histogram_discretize = dlib_configurable("histogram_discretizer", ["num_bins"])(
    histogram_discretize
)


@dlib_configurable("identity_discretizer", ["num_bins"])
def _identity_discretizer(target: np.ndarray, num_bins: int | None = None) -> np.ndarray:
    """No discretisation: for codes that are already discrete (dlib's tests use it)."""
    del num_bins
    return target


@dlib_configurable("discretizer", ["num_bins", "discretizer_fn"])
def make_discretizer(
    target: np.ndarray,
    num_bins: int = 20,
    discretizer_fn: Callable[[np.ndarray, int], np.ndarray] = _histogram_discretize,
) -> np.ndarray:
    """``target`` (D, N) discretised as the ``discretizer`` bindings say (dlib requires both
    bindings; unbound, these are its study's: 20 histogram bins)."""
    return discretizer_fn(target, num_bins)


def discretize(target: np.ndarray, num_bins: int | None) -> np.ndarray:
    """Histogram labels with ``num_bins`` bins (bench's evaluation, which names every setting),
    or with None, whatever dlib's ``discretizer`` bindings say (the drop-in path)."""
    return make_discretizer(target) if num_bins is None else histogram_discretize(target, num_bins)


@dlib_configurable("predictor", ["predictor_fn"])
def make_predictor_fn(predictor_fn: Callable | None = None) -> Callable:
    """The classifier factory ``predictor.predictor_fn`` names (unbound: dlib's study's GBT)."""
    return gradient_boosting_classifier if predictor_fn is None else predictor_fn


@dlib_configurable("logistic_regression_cv")
def logistic_regression_cv() -> LogisticRegressionCV:
    """Logistic regression over 10 Cs with 5 unshuffled folds; scoring pinned to accuracy,
    dlib's (and today's) default, which scikit-learn 1.11 changes."""
    return LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), scoring="accuracy")


@dlib_configurable("gradient_boosting_classifier")
def gradient_boosting_classifier() -> GradientBoostingClassifier:
    """scikit-learn's default GBT; its trees draw from numpy's global RNG, as in dlib."""
    return GradientBoostingClassifier()


def discrete_mutual_info(mus: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (nats) of every code row of ``mus`` with every factor row of
    ``ys``: (D, K)."""
    m = np.zeros((mus.shape[0], ys.shape[0]))
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = sklearn.metrics.mutual_info_score(ys[j, :], mus[i, :])
    return m


def discrete_entropy(ys: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of each factor row."""
    return np.array([sklearn.metrics.mutual_info_score(row, row) for row in ys])


def obtain_representation(
    observations: np.ndarray, representation_function: RepresentationFunction, batch_size: int
) -> np.ndarray:
    """Codes (D, N) of observations, in batches of ``batch_size`` (no random draws)."""
    return np.transpose(
        np.concatenate(
            [
                np.asarray(representation_function(observations[start : start + batch_size]))
                for start in range(0, len(observations), batch_size)
            ]
        )
    )


def split_train_test(
    observations: np.ndarray, train_percentage: float
) -> tuple[np.ndarray, np.ndarray]:
    """The first ceil(N · train_percentage) columns of (D, N) ``observations``, and the rest."""
    num_train = int(np.ceil(observations.shape[1] * train_percentage))
    return observations[:, :num_train], observations[:, num_train:]


def normalize_data(
    data: np.ndarray, mean: np.ndarray | None = None, stddev: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise each row of (D, N) data (np.std, ddof 0), with given or own statistics."""
    if mean is None:
        mean = np.mean(data, axis=1)
    if stddev is None:
        stddev = np.std(data, axis=1)
    return (data - mean[:, np.newaxis]) / stddev[:, np.newaxis], mean, stddev


def unit_slices(code_units: int | list[int] | None, width: int) -> list[slice]:
    """Where each latent unit sits in a flat code of ``width`` numbers: ``code_units`` equal
    units, or units of the listed widths in order, or (None) one unit per number."""
    if code_units is None:
        code_units = width
    if isinstance(code_units, int):
        code_units = [width // code_units] * code_units
    if sum(code_units) != width:
        raise ValueError(f"units of widths {code_units} do not tile a code of {width} numbers")
    ends = np.cumsum(code_units)
    return [slice(int(end - size), int(end)) for size, end in zip(code_units, ends, strict=True)]
