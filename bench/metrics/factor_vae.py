"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib computes it.

Each vote fixes one random factor over a batch of 64 samples, and the code dimension with the
smallest variance (relative to its global variance) votes for that factor; a majority-vote
classifier from code dimension to factor is scored on 10,000 training and 5,000 eval votes.
Dimensions whose global standard deviation is below ``prune_threshold`` (the study's 0.05)
do not vote.

dlib reports ``num_active_dims`` as the length of the activity mask, i.e. always the code
size; this returns the number of active dimensions, which is what the key says.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.spec import MetricSpec, check_codes
from bench.metrics.utils import RepresentationFunction, dlib_configurable, obtain_representation


@dlib_configurable(
    "factor_vae_score", ["batch_size", "num_train", "num_eval", "num_variance_estimate"]
)
def compute_factor_vae(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float | None = None,
) -> dict[str, float]:
    """``prune_threshold``: the least standard deviation of a voting dimension; None, dlib's
    ``prune_dims.threshold`` binding (unbound: 0, every dimension votes)."""
    del artifact_dir
    global_variances = _compute_variances(
        ground_truth_data, representation_function, num_variance_estimate, random_state
    )
    # An explicit threshold wins over a binding, as a caller's argument always does in gin.
    active = (
        _prune_dims(global_variances)
        if prune_threshold is None
        else _prune_dims(global_variances, prune_threshold)
    )
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    sample = (ground_truth_data, representation_function, batch_size)
    train_votes = _generate_training_batch(
        *sample, num_train, random_state, global_variances, active
    )
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    eval_votes = _generate_training_batch(*sample, num_eval, random_state, global_variances, active)
    return {
        "train_accuracy": float(np.sum(train_votes[classifier, columns]) / np.sum(train_votes)),
        "eval_accuracy": float(np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes)),
        "num_active_dims": int(active.sum()),
    }


@dlib_configurable("prune_dims", ["threshold"])
def _prune_dims(variances: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Mask of the dimensions whose standard deviation reaches ``threshold``."""
    return np.sqrt(variances) >= threshold


def _compute_variances(
    ground_truth_data, representation_function, batch_size, random_state, eval_batch_size=64
) -> np.ndarray:
    """Variance (ddof 1) of each code dimension over ``batch_size`` sampled observations,
    encoded in chunks of ``eval_batch_size`` (64 whatever the vote batch size is, as dlib)."""
    observations = ground_truth_data.sample_observations(batch_size, random_state)
    codes = obtain_representation(observations, representation_function, eval_batch_size)
    check_codes("factor_vae", codes)
    return np.var(codes, axis=1, ddof=1)


def _generate_training_sample(
    ground_truth_data,
    representation_function,
    batch_size,
    random_state,
    global_variances,
    active_dims,
) -> tuple[int, int]:
    """One vote: a random factor fixed over a batch, and the dimension (counted among the
    active ones) whose variance shrinks most."""
    factor = random_state.randint(ground_truth_data.num_factors)
    factors = ground_truth_data.sample_factors(batch_size, random_state)
    factors[:, factor] = factors[0, factor]
    batch = ground_truth_data.sample_observations_from_factors(factors, random_state)
    local = np.var(representation_function(batch), axis=0, ddof=1)
    return factor, int(np.argmin(local[active_dims] / global_variances[active_dims]))


def _generate_training_batch(
    ground_truth_data,
    representation_function,
    batch_size,
    num_points,
    random_state,
    global_variances,
    active_dims,
) -> np.ndarray:
    """Votes (factors × code dimensions) of ``num_points`` samples."""
    votes = np.zeros((ground_truth_data.num_factors, len(global_variances)), dtype=np.int64)
    for _ in range(num_points):
        factor, dimension = _generate_training_sample(
            ground_truth_data,
            representation_function,
            batch_size,
            random_state,
            global_variances,
            active_dims,
        )
        votes[factor, dimension] += 1
    return votes


SPEC = MetricSpec(
    name="factor_vae",
    function=compute_factor_vae.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("train_accuracy", "eval_accuracy", "num_active_dims"),
    headline="eval_accuracy",
    label="FactorVAE acc.",
    evaluation_values={"prune_threshold": 0.05},
)
