"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib computes it.

For each factor, the gap between the largest and second-largest mutual information of a
(histogram-discretised) code dimension with the factor, divided by the factor's entropy,
averaged over factors. Codes are always discretised; factors never are.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.spec import MetricSpec, check_codes, check_factor_sizes
from bench.metrics.utils import (
    RepresentationFunction,
    discrete_entropy,
    discrete_mutual_info,
    generate_batch_factor_code,
    histogram_discretize,
)


def compute_mig(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    """MIG of ``representation_function`` on ``num_train`` points: ``{"discrete_mig": ...}``."""
    del artifact_dir
    check_factor_sizes("mig", ground_truth_data)
    codes, factors = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    check_codes("mig", codes, min_dims=2)
    return {"discrete_mig": mig_from_codes(codes, factors, num_bins)}


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """MIG of codes (D, N) against discrete factors (K, N)."""
    m = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    entropy = discrete_entropy(factors)
    top_two = np.sort(m, axis=0)[::-1][:2]
    return float(np.mean((top_two[0] - top_two[1]) / entropy))


SPEC = MetricSpec(
    name="mig",
    function=compute_mig,
    version="1",
    higher_is_better=True,
    keys=("discrete_mig",),
)
