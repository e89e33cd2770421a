"""Interventional Robustness Score (Suter et al. 2019), as disentanglement_lib computes it.

Factors are histogram-discretised (20 bins), constant code dimensions dropped; for each code
dimension and factor, the 99th percentile of the deviation from the conditional mean given
each factor value, averaged over values and normalised by the dimension's largest deviation.

dlib reports ``num_active_dims`` as the *sum of the active codes' values*; this returns the
number of active (non-constant) dimensions, which is what the key says.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.spec import MetricSpec, check_codes, check_factor_sizes
from bench.metrics.utils import (
    RepresentationFunction,
    generate_batch_factor_code,
    histogram_discretize,
)


def compute_irs(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    diff_quantile: float = 0.99,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    del artifact_dir
    check_factor_sizes("irs", ground_truth_data)
    mus, ys = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    check_codes("irs", mus)
    ys_discrete = histogram_discretize(ys, num_bins)
    active = mus[mus.var(axis=1) > 0.0]
    score = 0.0 if not active.any() else irs_score(ys_discrete.T, active.T, diff_quantile)
    return {"IRS": float(score), "num_active_dims": len(active)}


def irs_score(factors: np.ndarray, latents: np.ndarray, diff_quantile: float = 0.99) -> float:
    """IRS of latents (N, L) against discrete factors (N, K)."""
    max_deviations = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)
    cum_deviations = np.zeros((latents.shape[1], factors.shape[1]))
    for i in range(factors.shape[1]):
        values = np.unique(factors[:, i])
        for value in values:
            group = latents[factors[:, i] == value]
            deviations = np.abs(group - np.mean(group, axis=0))
            cum_deviations[:, i] += np.percentile(deviations, q=diff_quantile * 100, axis=0)
        cum_deviations[:, i] /= len(values)
    scores = (1.0 - cum_deviations / max_deviations[:, np.newaxis]).max(axis=1)
    if np.sum(max_deviations) > 0.0:
        return float(np.average(scores, weights=max_deviations))
    return float(np.mean(scores))


SPEC = MetricSpec(
    name="irs",
    function=compute_irs,
    version="1",
    higher_is_better=True,
    keys=("IRS", "num_active_dims"),
)
