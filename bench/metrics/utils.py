"""Helpers shared by the metrics, with disentanglement_lib's semantics (metrics.md §1.2-1.3)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sklearn.metrics

RepresentationFunction = Callable[[np.ndarray], np.ndarray]


def generate_batch_factor_code(
    ground_truth_data,
    representation_function: RepresentationFunction,
    num_points: int,
    random_state: np.random.RandomState,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes (D, N) and factors (K, N) of ``num_points`` sampled observations.

    Sampling goes batch by batch, as dlib does: the batch size changes which factors are drawn.
    """
    codes, factors = [], []
    done = 0
    while done < num_points:
        n = min(num_points - done, batch_size)
        batch_factors, observations = ground_truth_data.sample(n, random_state)
        codes.append(np.asarray(representation_function(observations)))
        factors.append(batch_factors)
        done += n
    return np.transpose(np.concatenate(codes)), np.transpose(np.concatenate(factors))


def histogram_discretize(target: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per row, labels 1..num_bins of equal-width bins from the row's min to its max.

    The output keeps the input's dtype, as dlib's ``np.zeros_like`` does.
    """
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        edges = np.histogram(target[i, :], num_bins)[1][:-1]
        discretized[i, :] = np.digitize(target[i, :], edges)
    return discretized


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (nats) of every code row with every factor row: (D, K)."""
    m = np.zeros((codes.shape[0], factors.shape[0]))
    for i in range(codes.shape[0]):
        for j in range(factors.shape[0]):
            m[i, j] = sklearn.metrics.mutual_info_score(factors[j, :], codes[i, :])
    return m


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of each factor row."""
    return np.array([sklearn.metrics.mutual_info_score(row, row) for row in factors])


def obtain_representation(
    observations: np.ndarray, representation_function: RepresentationFunction, batch_size: int
) -> np.ndarray:
    """Codes (N, D) of observations, in batches of ``batch_size`` (no random draws)."""
    return np.concatenate(
        [
            np.asarray(representation_function(observations[start : start + batch_size]))
            for start in range(0, len(observations), batch_size)
        ]
    )


def normalize_data(
    data: np.ndarray, mean: np.ndarray | None = None, stddev: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise each row of (D, N) data (np.std, ddof 0), with given or own statistics."""
    if mean is None:
        mean = np.mean(data, axis=1)
    if stddev is None:
        stddev = np.std(data, axis=1)
    return (data - mean[:, np.newaxis]) / stddev[:, np.newaxis], mean, stddev


def unit_slices(code_units: int | list[int] | None, width: int) -> list[slice]:
    """Where each latent unit sits in a flat code of ``width`` numbers: ``code_units`` equal
    units, or units of the listed widths in order, or (None) one unit per number."""
    if code_units is None:
        code_units = width
    if isinstance(code_units, int):
        code_units = [width // code_units] * code_units
    if sum(code_units) != width:
        raise ValueError(f"units of widths {code_units} do not tile a code of {width} numbers")
    ends = np.cumsum(code_units)
    return [slice(int(end - size), int(end)) for size, end in zip(code_units, ends, strict=True)]
