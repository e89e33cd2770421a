"""BetaVAE score (Higgins et al. 2017), as disentanglement_lib's ``compute_beta_vae_sklearn``.

Each point fixes one random factor across two batches of 64 samples; its feature is the mean
absolute code difference between the batches, its label the fixed factor. A logistic
regression (given the metric's RandomState, as dlib does) is scored on 10,000 training and
5,000 eval points.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.metrics.helpers.legacy import LegacyLogisticRegression
from bench.metrics.spec import MetricSpec, check_codes
from bench.metrics.utils import RepresentationFunction, dlib_configurable


@dlib_configurable("beta_vae_sklearn", ["batch_size", "num_train", "num_eval"])
def compute_beta_vae_sklearn(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    sklearn_legacy: bool = False,
) -> dict[str, float]:
    """``sklearn_legacy``: scikit-learn 0.21's liblinear fit, which also draws one number from
    ``random_state`` between the training and eval samples (bench.metrics.helpers.legacy)."""
    del artifact_dir
    train_points, train_labels = _generate_training_batch(
        ground_truth_data, representation_function, batch_size, num_train, random_state
    )
    model_cls = LegacyLogisticRegression if sklearn_legacy else LogisticRegression
    model = model_cls(random_state=random_state)
    model.fit(train_points, train_labels)
    train_accuracy = np.mean(model.predict(train_points) == train_labels)
    eval_points, eval_labels = _generate_training_batch(
        ground_truth_data, representation_function, batch_size, num_eval, random_state
    )
    return {
        "train_accuracy": float(train_accuracy),
        "eval_accuracy": float(model.score(eval_points, eval_labels)),
    }


def _generate_training_batch(
    ground_truth_data, representation_function, batch_size, num_points, random_state
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` features (num_points, D) and their labels (the fixed factors)."""
    labels = np.zeros(num_points, dtype=np.int64)
    points = None
    for i in range(num_points):
        labels[i], feature = _generate_training_sample(
            ground_truth_data, representation_function, batch_size, random_state
        )
        if points is None:
            points = np.zeros((num_points, feature.shape[0]))
        points[i] = feature
    return points, labels


def _generate_training_sample(
    ground_truth_data, representation_function, batch_size, random_state
) -> tuple[int, np.ndarray]:
    """A random factor, fixed across two batches, and the mean absolute code difference."""
    factor = random_state.randint(ground_truth_data.num_factors)
    factors1 = ground_truth_data.sample_factors(batch_size, random_state)
    factors2 = ground_truth_data.sample_factors(batch_size, random_state)
    factors2[:, factor] = factors1[:, factor]
    observations1 = ground_truth_data.sample_observations_from_factors(factors1, random_state)
    observations2 = ground_truth_data.sample_observations_from_factors(factors2, random_state)
    codes1 = np.asarray(representation_function(observations1))
    codes2 = np.asarray(representation_function(observations2))
    check_codes("beta_vae", codes1.T)
    return factor, np.mean(np.abs(codes1 - codes2), axis=0)


SPEC = MetricSpec(
    name="beta_vae",
    function=compute_beta_vae_sklearn.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("train_accuracy", "eval_accuracy"),
    headline="eval_accuracy",
    label="BetaVAE acc.",
)
