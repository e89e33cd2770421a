"""SAP score (Kumar et al. 2018), as disentanglement_lib computes it (discrete factors).

For every code dimension and factor, a 1-D ``LinearSVC(C=0.01, class_weight="balanced")``
predicts the factor from that dimension alone; SAP is the mean over factors of the gap
between the best and second-best dimension's test accuracy.
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from bench.metrics.helpers.legacy import legacy_linear_svc
from bench.metrics.spec import MetricSpec, fixed_data_codes, sample_train_test
from bench.metrics.utils import RepresentationFunction, dlib_configurable, split_train_test


@dlib_configurable("sap_score", ["num_train", "num_test", "batch_size", "continuous_factors"])
def compute_sap(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    continuous_factors: bool = False,
    sklearn_legacy: bool = False,
) -> dict[str, float]:
    """``sklearn_legacy``: scikit-learn 0.21's dual LinearSVC, seeded as dlib's run after
    ``np.random.seed(0)`` would seed it (bench.metrics.helpers.legacy)."""
    del artifact_dir
    mus, ys, mus_test, ys_test = sample_train_test(
        "sap",
        ground_truth_data,
        representation_function,
        random_state,
        num_train,
        num_test,
        batch_size,
        min_dims=2,
    )
    return _compute_sap(mus, ys, mus_test, ys_test, continuous_factors, sklearn_legacy)


@dlib_configurable("sap_score_validation", ["train_percentage", "continuous_factors", "batch_size"])
def compute_sap_on_fixed_data(
    observations: np.ndarray,
    labels: np.ndarray,
    representation_function: RepresentationFunction,
    train_percentage: float,
    continuous_factors: bool,
    batch_size: int = 100,
) -> dict[str, float]:
    """SAP on fixed observations and their factors (K, N), the first ``train_percentage`` of
    them for training (dlib's ``sap_score_validation``)."""
    codes = fixed_data_codes("sap", observations, labels, representation_function, batch_size)
    mus_train, mus_test = split_train_test(codes, train_percentage)
    ys_train, ys_test = split_train_test(labels, train_percentage)
    return _compute_sap(mus_train, ys_train, mus_test, ys_test, continuous_factors)


def _compute_sap(
    mus, ys, mus_test, ys_test, continuous_factors: bool, sklearn_legacy: bool = False
) -> dict[str, float]:
    """SAP of train and test codes (D, N) against factors (K, N)."""
    score = compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors, sklearn_legacy)
    return {"SAP_score": compute_avg_diff_top_two(score)}


def compute_avg_diff_top_two(matrix: np.ndarray) -> float:
    """Mean over columns of the gap between the two largest entries."""
    ordered = np.sort(matrix, axis=0)
    return float(np.mean(ordered[-1] - ordered[-2]))


def compute_score_matrix(
    mus, ys, mus_test, ys_test, continuous_factors: bool, sklearn_legacy: bool = False
) -> np.ndarray:
    """S (D, K): how well each single code dimension predicts each factor."""
    num_codes, num_factors = mus.shape[0], ys.shape[0]
    global_stream = np.random.RandomState(0)  # the legacy fits' seeds, in dlib's order
    score = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        for j in range(num_factors):
            if continuous_factors:
                cov = np.cov(mus[i, :], ys[j, :], ddof=1)
                variance = cov[0, 0]
                score[i, j] = cov[0, 1] ** 2 / (variance * cov[1, 1]) if variance > 1e-12 else 0.0
            else:
                if sklearn_legacy:
                    classifier = legacy_linear_svc(global_stream)
                else:
                    classifier = LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(mus[i, :][:, np.newaxis], ys[j, :])
                predicted = classifier.predict(mus_test[i, :][:, np.newaxis])
                score[i, j] = np.mean(predicted == ys_test[j, :])
    return score


SPEC = MetricSpec(
    name="sap_score",
    function=compute_sap.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("SAP_score",),
    headline="SAP_score",
    label="SAP",
)
