"""Downstream task and sample efficiency, as disentanglement_lib's ``compute_downstream_task``.

For each training size in ``num_train`` (in order), fresh train and test codes are sampled
and one classifier per factor predicts it from the code; per size, the mean/min train and
test accuracies and the per-factor ones are reported. ``predictor`` is dlib's
``gradient_boosting_classifier`` (default GBT: what DyGA+SD reports) or
``logistic_regression_cv`` (LogisticRegressionCV, 10 Cs, 5 unshuffled folds).

Added to dlib's keys: ``<n>:sample_efficiency``, the mean test accuracy with n training points
divided by that with the largest size, as the DyGA+SD paper reports it.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import KFold

from bench.metrics.dci import seeded_gbt_fits
from bench.metrics.spec import MetricSpec, check_codes, check_factor_sizes
from bench.metrics.utils import RepresentationFunction, generate_batch_factor_code
from bench.registry import BenchError

PREDICTORS = ("gradient_boosting_classifier", "logistic_regression_cv")


def compute_downstream_task(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: tuple[int, ...] = (10000, 1000, 100),
    num_test: int = 5000,
    batch_size: int = 16,
    predictor: str = "gradient_boosting_classifier",
    global_seed: int = 0,
    n_jobs: int = -1,
) -> dict[str, float]:
    del artifact_dir
    if predictor not in PREDICTORS:
        raise BenchError(f"downstream_task: unknown predictor {predictor!r}; choose {PREDICTORS}")
    check_factor_sizes("downstream_task", ground_truth_data)
    tasks, sizes = [], []
    for size in num_train:
        mus, ys = generate_batch_factor_code(
            ground_truth_data, representation_function, size, random_state, batch_size
        )
        mus_test, ys_test = generate_batch_factor_code(
            ground_truth_data, representation_function, num_test, random_state, batch_size
        )
        check_codes("downstream_task", mus)
        tasks += [(mus.T, ys[k], mus_test.T, ys_test[k]) for k in range(ys.shape[0])]
        sizes += [size] * ys.shape[0]
    if predictor == "gradient_boosting_classifier":
        accuracies = [
            (train, test) for _, train, test in seeded_gbt_fits(tasks, global_seed, n_jobs)
        ]
    else:
        accuracies = [_logistic_regression_cv(*task) for task in tasks]

    scores: dict[str, float] = {}
    for size in num_train:
        train = np.array([a[0] for a, s in zip(accuracies, sizes, strict=True) if s == size])
        test = np.array([a[1] for a, s in zip(accuracies, sizes, strict=True) if s == size])
        scores[f"{size}:mean_train_accuracy"] = float(np.mean(train))
        scores[f"{size}:mean_test_accuracy"] = float(np.mean(test))
        scores[f"{size}:min_train_accuracy"] = float(np.min(train))
        scores[f"{size}:min_test_accuracy"] = float(np.min(test))
        for k in range(len(train)):
            scores[f"{size}:train_accuracy_factor_{k}"] = float(train[k])
            scores[f"{size}:test_accuracy_factor_{k}"] = float(test[k])
    largest = max(num_train)
    for size in num_train:
        if size != largest:
            scores[f"{size}:sample_efficiency"] = (
                scores[f"{size}:mean_test_accuracy"] / scores[f"{largest}:mean_test_accuracy"]
            )
    return scores


def _logistic_regression_cv(x_train, y_train, x_test, y_test) -> tuple[float, float]:
    # scoring pinned to accuracy: dlib's (and today's) default, which sklearn 1.11 changes
    model = LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), scoring="accuracy")
    model.fit(x_train, y_train)
    return np.mean(model.predict(x_train) == y_train), np.mean(model.predict(x_test) == y_test)


SPEC = MetricSpec(
    name="downstream_task",
    function=compute_downstream_task,
    version="1",
    higher_is_better=True,
    keys=("1000:sample_efficiency", "100:sample_efficiency"),
)
