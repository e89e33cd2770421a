"""Downstream task and sample efficiency, as disentanglement_lib's ``compute_downstream_task``.

For each training size in ``num_train`` (in order), fresh train and test codes are sampled
and one classifier per factor predicts it from the code; per size, the mean/min train and
test accuracies and the per-factor ones are reported. ``predictor`` is dlib's
``gradient_boosting_classifier`` (default GBT: what DyGA+SD reports) or
``logistic_regression_cv`` (LogisticRegressionCV, 10 Cs, 5 unshuffled folds); None takes
dlib's ``predictor.predictor_fn`` binding, which may name any classifier factory. GBTs fit in
parallel with dlib's seeds (``bench.metrics.dci.seeded_gbt_fits``); other classifiers one
after the other, as dlib does.

Added to dlib's keys: ``<n>:sample_efficiency``, the mean test accuracy with n training points
divided by that with the largest size, as the DyGA+SD paper reports it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.errors import BenchError
from bench.metrics.dci import seeded_gbt_fits
from bench.metrics.spec import MetricSpec, check_codes, check_factors
from bench.metrics.utils import (
    RepresentationFunction,
    dlib_configurable,
    generate_batch_factor_code,
    gradient_boosting_classifier,
    logistic_regression_cv,
    make_predictor_fn,
)

PREDICTORS = {
    "gradient_boosting_classifier": gradient_boosting_classifier,
    "logistic_regression_cv": logistic_regression_cv,
}


@dlib_configurable("downstream_task", ["num_train", "num_test", "batch_size"])
def compute_downstream_task(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: tuple[int, ...] = (10000, 1000, 100),
    num_test: int = 5000,
    batch_size: int = 16,
    predictor: str | None = None,
    global_seed: int | None = None,
    n_jobs: int = -1,
) -> dict[str, float]:
    """``global_seed``: the GBTs' seed stream (None: numpy's global RNG, as dlib)."""
    del artifact_dir
    if predictor is not None and predictor not in PREDICTORS:
        raise BenchError(
            f"downstream_task: unknown predictor {predictor!r}; choose {', '.join(PREDICTORS)}"
        )
    predictor_fn = make_predictor_fn() if predictor is None else PREDICTORS[predictor]
    tasks, sizes = [], []
    for size in num_train:
        mus, ys = generate_batch_factor_code(
            ground_truth_data, representation_function, size, random_state, batch_size
        )
        mus_test, ys_test = generate_batch_factor_code(
            ground_truth_data, representation_function, num_test, random_state, batch_size
        )
        check_codes("downstream_task", mus)
        check_factors("downstream_task", ys)
        tasks += [(mus.T, ys[k], mus_test.T, ys_test[k]) for k in range(ys.shape[0])]
        sizes += [size] * ys.shape[0]
    if predictor_fn is gradient_boosting_classifier:
        accuracies = [
            (train, test) for _, train, test in seeded_gbt_fits(tasks, global_seed, n_jobs)
        ]
    else:
        accuracies = [_fit_and_score(predictor_fn, *task) for task in tasks]

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


def _fit_and_score(predictor_fn: Callable, x_train, y_train, x_test, y_test):
    model = predictor_fn()
    model.fit(x_train, y_train)
    return np.mean(model.predict(x_train) == y_train), np.mean(model.predict(x_test) == y_test)


def _compute_loss(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    predictor_fn: Callable,
) -> tuple[list[float], list[float]]:
    """dlib's helper: per factor, the train and test accuracy of a ``predictor_fn()`` fitted
    on codes (N, D) to that factor's row of (K, N)."""
    accuracies = [
        _fit_and_score(predictor_fn, x_train, y, x_test, y_t)
        for y, y_t in zip(y_train, y_test, strict=True)
    ]
    return [a[0] for a in accuracies], [a[1] for a in accuracies]


SPEC = MetricSpec(
    name="downstream_task",
    function=compute_downstream_task.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("10000:mean_test_accuracy", "1000:sample_efficiency", "100:sample_efficiency"),
    headline="10000:mean_test_accuracy",
    label="Downstream acc.",
    evaluation_values={"predictor": "gradient_boosting_classifier", "global_seed": 0},
)
