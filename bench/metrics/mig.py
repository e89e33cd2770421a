"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib computes it.

For each factor, the gap between the largest and second-largest mutual information of a
(histogram-discretised) code dimension with the factor, divided by the factor's entropy,
averaged over factors. Codes are always discretised; factors never are.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.spec import MetricSpec, check_codes, check_factors, fixed_data_codes
from bench.metrics.utils import (
    RepresentationFunction,
    discrete_entropy,
    discrete_mutual_info,
    discretize,
    dlib_configurable,
    generate_batch_factor_code,
)


@dlib_configurable("mig", ["num_train", "batch_size"])
def compute_mig(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int | None = None,
) -> dict[str, float]:
    """MIG of ``representation_function`` on ``num_train`` points: ``{"discrete_mig": ...}``.
    ``num_bins``: histogram bins; None, dlib's ``discretizer`` bindings."""
    del artifact_dir
    codes, factors = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    check_codes("mig", codes, min_dims=2)
    check_factors("mig", factors)
    return _compute_mig(codes, factors, num_bins)


@dlib_configurable("mig_validation", ["batch_size"])
def compute_mig_on_fixed_data(
    observations: np.ndarray,
    labels: np.ndarray,
    representation_function: RepresentationFunction,
    batch_size: int = 100,
) -> dict[str, float]:
    """MIG on fixed observations and their factors (K, N), discretised as ``discretizer``
    says (dlib's ``mig_validation``)."""
    codes = fixed_data_codes("mig", observations, labels, representation_function, batch_size)
    return _compute_mig(codes, labels)


def _compute_mig(
    mus_train: np.ndarray, ys_train: np.ndarray, num_bins: int | None = None
) -> dict[str, float]:
    """MIG of codes (D, N) against discrete factors (K, N)."""
    m = discrete_mutual_info(discretize(mus_train, num_bins), ys_train)
    entropy = discrete_entropy(ys_train)
    top_two = np.sort(m, axis=0)[::-1][:2]
    return {"discrete_mig": float(np.mean((top_two[0] - top_two[1]) / entropy))}


SPEC = MetricSpec(
    name="mig",
    function=compute_mig.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("discrete_mig",),
    headline="discrete_mig",
    label="MIG",
    evaluation_values={"num_bins": 20},
)
