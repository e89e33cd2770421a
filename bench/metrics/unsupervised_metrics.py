"""Unsupervised scores of a code, as disentanglement_lib computes them: Gaussian total
correlation and Wasserstein dependency of the code covariance, and the mean pairwise mutual
information of the histogram-discretised code dimensions. Lower means more independent."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from bench.metrics.spec import MetricSpec, check_codes
from bench.metrics.utils import (
    RepresentationFunction,
    discrete_mutual_info,
    generate_batch_factor_code,
    histogram_discretize,
)


def unsupervised_metrics(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    del artifact_dir
    mus, _ = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    check_codes("unsupervised_metrics", mus, min_dims=2)
    num_codes = mus.shape[0]
    cov = np.cov(mus)
    wasserstein = gaussian_wasserstein_correlation(cov)
    discrete = histogram_discretize(mus, num_bins)
    mutual_info = discrete_mutual_info(discrete, discrete)
    np.fill_diagonal(mutual_info, 0)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": float(wasserstein / np.sum(np.diag(cov))),
        "mutual_info_score": float(np.sum(mutual_info) / (num_codes**2 - num_codes)),
    }


def gaussian_total_correlation(cov: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    root = scipy.linalg.sqrtm(cov * np.expand_dims(np.diag(cov), axis=1))
    return float(np.real(2 * np.trace(cov) - 2 * np.trace(root)))


SPEC = MetricSpec(
    name="unsupervised",
    function=unsupervised_metrics,
    version="1",
    higher_is_better=False,
    keys=(
        "gaussian_total_correlation",
        "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm",
        "mutual_info_score",
    ),
)
