"""Interventional Robustness Score (Suter et al. 2019), as disentanglement_lib computes it.

Factors are histogram-discretised (20 bins), constant code dimensions dropped; for each code
dimension and factor, the 99th percentile of the deviation from the conditional mean given
each factor value, averaged over values and normalised by the dimension's largest deviation.

dlib reports ``num_active_dims`` as the *sum of the active codes' values*; this returns the
number of active (non-constant) dimensions, which is what the key says.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.spec import MetricSpec, check_codes
from bench.metrics.utils import (
    RepresentationFunction,
    discretize,
    dlib_configurable,
    generate_batch_factor_code,
)


@dlib_configurable("irs", ["diff_quantile", "num_train", "batch_size"])
def compute_irs(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    diff_quantile: float = 0.99,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int | None = None,
) -> dict[str, float]:
    """``num_bins``: histogram bins for the factors; None, dlib's ``discretizer`` bindings."""
    del artifact_dir
    mus, ys = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    check_codes("irs", mus)
    ys_discrete = discretize(ys, num_bins)
    active = _drop_constant_dims(mus)
    score = (
        0.0
        if not active.any()
        else scalable_disentanglement_score(ys_discrete.T, active.T, diff_quantile)["avg_score"]
    )
    return {"IRS": float(score), "num_active_dims": len(active)}


def _drop_constant_dims(ys: np.ndarray) -> np.ndarray:
    """The rows of a matrix that are not constant."""
    ys = np.asarray(ys)
    if ys.ndim != 2:
        raise ValueError("Expecting a matrix.")
    return ys[ys.var(axis=1) > 0.0]


def scalable_disentanglement_score(
    gen_factors: np.ndarray, latents: np.ndarray, diff_quantile: float = 0.99
) -> dict[str, float | np.ndarray]:
    """IRS of latents (N, L) against discrete factors (N, K): ``avg_score``, and per latent
    ``disentanglement_scores`` and ``parents`` (the factor it is most robust to)."""
    max_deviations = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)
    cum_deviations = np.zeros((latents.shape[1], gen_factors.shape[1]))
    for i in range(gen_factors.shape[1]):
        values = np.unique(gen_factors[:, i])
        for value in values:
            group = latents[gen_factors[:, i] == value]
            deviations = np.abs(group - np.mean(group, axis=0))
            cum_deviations[:, i] += np.percentile(deviations, q=diff_quantile * 100, axis=0)
        cum_deviations[:, i] /= len(values)
    irs_matrix = 1.0 - cum_deviations / max_deviations[:, np.newaxis]
    scores = irs_matrix.max(axis=1)
    if np.sum(max_deviations) > 0.0:
        average = np.average(scores, weights=max_deviations)
    else:
        average = np.mean(scores)
    return {
        "disentanglement_scores": scores,
        "avg_score": float(average),
        "parents": irs_matrix.argmax(axis=1),
        "IRS_matrix": irs_matrix,
        "max_deviations": max_deviations,
    }


SPEC = MetricSpec(
    name="irs",
    function=compute_irs.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("IRS", "num_active_dims"),
    headline="IRS",
    label="IRS",
    evaluation_values={"num_bins": 20},
)
