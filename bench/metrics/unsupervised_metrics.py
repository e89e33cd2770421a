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
    discretize,
    dlib_configurable,
    generate_batch_factor_code,
)


@dlib_configurable("unsupervised_metrics", ["num_train", "batch_size"])
def unsupervised_metrics(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int | None = None,
) -> dict[str, float]:
    """``num_bins``: histogram bins for the codes; None, dlib's ``discretizer`` bindings."""
    del artifact_dir
    mus, _ = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    check_codes("unsupervised_metrics", mus, min_dims=2)
    num_codes = mus.shape[0]
    cov = np.cov(mus)
    wasserstein = gaussian_wasserstein_correlation(cov)
    discrete = discretize(mus, num_bins)
    mutual_info = discrete_mutual_info(discrete, discrete)
    np.fill_diagonal(mutual_info, 0)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": float(wasserstein / np.sum(np.diag(cov))),
        "mutual_info_score": float(np.sum(mutual_info) / (num_codes**2 - num_codes)),
    }


def kl_gaussians_numerically_unstable(
    mean_0: np.ndarray, cov_0: np.ndarray, mean_1: np.ndarray, cov_1: np.ndarray, k: int
) -> float:
    """KL(N(mean_0, cov_0) || N(mean_1, cov_1)) in k dimensions by the textbook formula
    (dlib's tests check ``gaussian_total_correlation`` against it)."""
    inverse_1 = np.linalg.inv(cov_1)
    difference = mean_1 - mean_0
    log_ratio = np.log(np.linalg.det(cov_1) / np.linalg.det(cov_0))
    return float(
        0.5 * (np.trace(inverse_1 @ cov_0) + difference @ inverse_1 @ difference - k + log_ratio)
    )


def gaussian_total_correlation(cov: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    root = scipy.linalg.sqrtm(cov * np.expand_dims(np.diag(cov), axis=1))
    return float(np.real(2 * np.trace(cov) - 2 * np.trace(root)))


SPEC = MetricSpec(
    name="unsupervised",
    function=unsupervised_metrics.__wrapped__,
    version="1",
    higher_is_better=False,
    keys=(
        "gaussian_total_correlation",
        "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm",
        "mutual_info_score",
    ),
    headline="gaussian_total_correlation",
    label="Gaussian TC",
    evaluation_values={"num_bins": 20},
)
