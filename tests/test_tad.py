"""TAD: closed forms on hand-built attributes, NashAE's edge cases, a loop reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.metrics.tad import auroc_matrix, entropy_redundancy, pca1_per_unit, tad_score


def two_independent_attributes(repeats: int = 25) -> np.ndarray:
    """Every (a0, a1) combination equally often: their mutual information is exactly 0."""
    return np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * repeats)


def test_closed_form_for_perfect_latents():
    # z0 = a0, z1 = a1, z2 constant. For (a0, z0) the "≥" detector gives (FPR, TPR) = (1, 1)
    # at t = 0 and (0, 1) above it: area 1. For (a0, z1) the best detector gives 0.5, and the
    # constant z2 is skipped (0.5). So each attribute has best 1, runner-up 0.5: TAD = 2 × 0.5.
    y = two_independent_attributes()
    z = np.stack([y[:, 0], y[:, 1], np.full(len(y), 3.0)], axis=1).astype(float)
    np.testing.assert_allclose(auroc_matrix(z, y, 0.01), [[1.0, 0.5, 0.5], [0.5, 1.0, 0.5]])
    for step in (0.01, 0.1):
        assert tad_score(z, y, step) == {"tad": pytest.approx(1.0), "num_attributes_captured": 2}


def test_redundant_attributes_are_filtered_whatever_the_model():
    y = two_independent_attributes()
    y = np.concatenate([y, y[:, :1]], axis=1)  # a2 copies a0: all its entropy is shared
    np.testing.assert_allclose(entropy_redundancy(y), [1.0, 0.0, 1.0])
    z = y.astype(float)
    assert tad_score(z, y) == {"tad": pytest.approx(0.5), "num_attributes_captured": 1}


def test_edge_cases_constant_attribute_tied_and_low_range_latents():
    y = two_independent_attributes()
    constant = np.concatenate([y, np.ones((len(y), 1), int)], axis=1)
    z = y.astype(float)
    assert tad_score(z, constant) == {"tad": pytest.approx(1.0), "num_attributes_captured": 2}
    tied = np.concatenate([z, z[:, :1]], axis=1)  # a0 held by two latents: kept, but gap 0
    assert tad_score(tied, y) == {"tad": pytest.approx(0.5), "num_attributes_captured": 2}
    low_range = z * np.array([0.1, 1.0])  # z0 spans 0.1 ≤ 0.2: skipped, a0 not captured
    assert tad_score(low_range, y) == {"tad": pytest.approx(0.5), "num_attributes_captured": 1}


def reference_auroc(z: np.ndarray, y: np.ndarray, step: float) -> np.ndarray:
    """NashAE's algorithm with plain loops, in float32 like its torch code."""
    z, result = z.astype(np.float32), np.full((y.shape[1], z.shape[1]), 0.5)
    grid = np.arange(0.0, 1.0001, step, dtype=np.float32)
    for a in range(y.shape[1]):
        positives, negatives = np.sum(y[:, a] == 1), np.sum(y[:, a] == 0)
        for latent in range(z.shape[1]):
            low, high = z[:, latent].min(), z[:, latent].max()
            if high - low <= 0.2:
                continue
            areas = []
            for above in (True, False):
                fprs, tprs = [], []
                for t in grid:
                    threshold = t * (high - low) + low
                    predicted = z[:, latent] >= threshold if above else z[:, latent] < threshold
                    tprs.append(np.sum(predicted & (y[:, a] == 1)) / positives)
                    fprs.append(np.sum(predicted & (y[:, a] == 0)) / negatives)
                fprs, tprs = sorted(fprs), sorted(tprs)
                areas.append(sum(tprs[i] * (fprs[i] - fprs[i - 1]) for i in range(1, len(grid))))
            result[a, latent] = max(areas)
    return result


@pytest.mark.parametrize("step", [0.01, 0.1])
def test_vectorised_aurocs_equal_the_loop_reference(step):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(400, 4))
    z = np.concatenate(
        [
            y[:, :2] + rng.normal(scale=0.7, size=(400, 2)),
            rng.normal(size=(400, 2)),
            0.05 * rng.normal(size=(400, 1)),
        ],
        axis=1,
    )
    np.testing.assert_allclose(auroc_matrix(z, y, step), reference_auroc(z, y, step), atol=1e-6)


def test_pca_units_of_equal_or_listed_widths_are_each_reduced_by_their_own_pca():
    from sklearn.decomposition import PCA

    codes = np.random.default_rng(0).normal(size=(200, 6)) * [1, 2, 3, 1, 0.5, 2]
    for units, edges in ((2, [0, 3, 6]), ([1, 3, 2], [0, 1, 4, 6])):
        reduced = pca1_per_unit(codes, units)
        expected = [
            PCA(n_components=1).fit_transform(codes[:, a:b])[:, 0]
            for a, b in itertools.pairwise(edges)
        ]
        np.testing.assert_allclose(reduced, np.stack(expected, axis=1), rtol=1e-5, atol=1e-5)
