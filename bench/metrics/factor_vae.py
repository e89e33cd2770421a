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

from bench.metrics.spec import MetricSpec, check_codes, check_factor_sizes
from bench.metrics.utils import RepresentationFunction, obtain_representation


def compute_factor_vae(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    del artifact_dir
    check_factor_sizes("factor_vae", ground_truth_data)
    observations = ground_truth_data.sample_observations(num_variance_estimate, random_state)
    # dlib encodes these in chunks of 64 whatever the vote batch size is.
    codes = obtain_representation(observations, representation_function, 64)
    check_codes("factor_vae", codes.T)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    def votes(num_points: int) -> np.ndarray:
        counts = np.zeros((ground_truth_data.num_factors, len(global_variances)), dtype=np.int64)
        for _ in range(num_points):
            factor = random_state.randint(ground_truth_data.num_factors)
            factors = ground_truth_data.sample_factors(batch_size, random_state)
            factors[:, factor] = factors[0, factor]
            batch = ground_truth_data.sample_observations_from_factors(factors, random_state)
            local = np.var(representation_function(batch), axis=0, ddof=1)
            counts[factor, np.argmin(local[active] / global_variances[active])] += 1
        return counts

    train_votes = votes(num_train)
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    eval_votes = votes(num_eval)
    return {
        "train_accuracy": float(np.sum(train_votes[classifier, columns]) / np.sum(train_votes)),
        "eval_accuracy": float(np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes)),
        "num_active_dims": int(active.sum()),
    }


SPEC = MetricSpec(
    name="factor_vae",
    function=compute_factor_vae,
    version="1",
    higher_is_better=True,
    keys=("train_accuracy", "eval_accuracy", "num_active_dims"),
)
