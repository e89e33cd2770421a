"""Modularity and explicitness (Ridgeway & Zemel 2018), as disentanglement_lib computes them.

Modularity: per code dimension, how much of its (squared) mutual information goes to a
single factor. Explicitness: per factor, the macro one-vs-rest AUROC of a logistic regression
(scikit-learn defaults) from the standardised code.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from bench.errors import BenchError
from bench.metrics.helpers.legacy import LegacyLogisticRegression
from bench.metrics.spec import MetricSpec, sample_train_test
from bench.metrics.utils import (
    RepresentationFunction,
    discrete_mutual_info,
    discretize,
    dlib_configurable,
    normalize_data,
)


@dlib_configurable("modularity_explicitness", ["num_train", "num_test", "batch_size"])
def compute_modularity_explicitness(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    num_bins: int | None = None,
    sklearn_legacy: bool = False,
) -> dict[str, float]:
    """``num_bins``: histogram bins for the codes; None, dlib's ``discretizer`` bindings.
    ``sklearn_legacy``: scikit-learn 0.21's liblinear one-vs-rest fits, seeded as dlib's run
    after ``np.random.seed(0)`` would seed them (bench.metrics.helpers.legacy)."""
    del artifact_dir
    mus_train, ys_train, mus_test, ys_test = sample_train_test(
        "modularity_explicitness",
        ground_truth_data,
        representation_function,
        random_state,
        num_train,
        num_test,
        batch_size,
    )
    mutual_information = discrete_mutual_info(discretize(mus_train, num_bins), ys_train)
    if np.any(np.std(mus_train, axis=1) == 0):
        raise BenchError(
            "modularity_explicitness: a code dimension is constant, so it cannot be "
            "standardised for explicitness (disentanglement_lib raises here too)"
        )
    train_norm, mean, stddev = normalize_data(mus_train)
    test_norm, _, _ = normalize_data(mus_test, mean, stddev)
    global_stream = np.random.RandomState(0)  # the legacy fits' seeds, in dlib's order
    explicitness = np.array(
        [
            explicitness_per_factor(
                train_norm,
                ys_train[k],
                test_norm,
                ys_test[k],
                LegacyLogisticRegression(global_stream) if sklearn_legacy else LogisticRegression(),
            )
            for k in range(ys_train.shape[0])
        ]
    )
    return {
        "modularity_score": modularity(mutual_information),
        "explicitness_score_train": float(np.mean(explicitness[:, 0])),
        "explicitness_score_test": float(np.mean(explicitness[:, 1])),
    }


def explicitness_per_factor(
    mus_train, y_train, mus_test, y_test, classifier=None
) -> tuple[float, float]:
    """Train and test macro AUROC of ``classifier`` (default: ``LogisticRegression()``)
    predicting the factor from codes (D, N)."""
    classifier = LogisticRegression() if classifier is None else classifier
    classifier.fit(mus_train.T, y_train)
    binarizer = MultiLabelBinarizer()
    train = roc_auc_score(
        binarizer.fit_transform(y_train[:, None]), classifier.predict_proba(mus_train.T)
    )
    test = roc_auc_score(
        binarizer.fit_transform(y_test[:, None]), classifier.predict_proba(mus_test.T)
    )
    return train, test


def modularity(mutual_information: np.ndarray) -> float:
    squared = np.square(mutual_information)
    max_squared = np.max(squared, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (np.sum(squared, axis=1) - max_squared) / (max_squared * (squared.shape[1] - 1.0))
    score = 1.0 - delta
    score[max_squared == 0.0] = 0.0
    return float(np.mean(score))


SPEC = MetricSpec(
    name="modularity_explicitness",
    function=compute_modularity_explicitness.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("modularity_score", "explicitness_score_train", "explicitness_score_test"),
    headline="modularity_score",
    label="Modularity",
    evaluation_values={"num_bins": 20},
)
