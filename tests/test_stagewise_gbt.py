"""The stage-parallel GBT is scikit-learn's GradientBoostingClassifier, bit for bit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from bench.metrics.dci import _threads_per_fit, seeded_gbt_fits
from bench.metrics.helpers.stagewise_gbt import StagewiseGradientBoostingClassifier, seed_states


@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("threads", [None, 3])
def test_same_model_as_scikit_learn(classes, threads):
    rng = np.random.RandomState(classes)
    y = rng.randint(0, classes, 600)
    x = rng.randn(600, 5)
    x[:, 0] += 0.5 * y
    x[:, 1] = x[:, 0]  # duplicated dims: tie-breaking follows the seeds
    x[:, 2] = np.round(x[:, 2])
    reference = GradientBoostingClassifier(n_estimators=15, random_state=np.random.RandomState(4))
    reference.fit(x, y)
    model = StagewiseGradientBoostingClassifier(
        n_estimators=15, random_state=np.random.RandomState(4)
    )
    with ThreadPoolExecutor(threads) if threads else nullcontext() as pool:
        model.executor = pool
        model.fit(x, y)
    np.testing.assert_array_equal(model.feature_importances_, reference.feature_importances_)
    np.testing.assert_array_equal(model.predict_proba(x), reference.predict_proba(x))


def test_seed_states_replay_the_sequential_draws():
    sequential = np.random.RandomState(9)
    expected = [sequential.randint(0, 2**31 - 1) for _ in range(4)]
    shared = np.random.RandomState(9)
    states = seed_states(shared, 4)
    assert [s.randint(0, 2**31 - 1) for s in states] == expected
    assert shared.randint(0, 2**31 - 1) == sequential.randint(0, 2**31 - 1)


def test_dci_fits_spread_over_threads_equal_the_sequential_ones():
    rng = np.random.RandomState(0)
    x = rng.randn(300, 4)
    labels = [rng.randint(0, 3, 300), rng.randint(0, 5, 300)]
    tasks = [(x, y, x[:100], y[:100]) for y in labels]
    sequential = seeded_gbt_fits(tasks, global_seed=3, n_jobs=1)
    threaded = seeded_gbt_fits(tasks, global_seed=3, n_jobs=8)  # 2 processes: 3 and 5 threads
    for (a, *scores_a), (b, *scores_b) in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
        assert scores_a == scores_b


def test_spare_cores_go_to_the_fits_with_the_most_trees():
    mpi3d = [600, 600, 100, 300, 300, 4000, 4000]  # trees of MPI3D's seven factors' GBTs
    assert _threads_per_fit(mpi3d, 16) == [1, 1, 1, 1, 1, 6, 6]
    assert _threads_per_fit(mpi3d, 2) == [1] * 7  # fewer cores than fits: processes only
    assert _threads_per_fit([300, 500], 8) == [3, 5]
