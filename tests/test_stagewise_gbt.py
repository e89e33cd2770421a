"""The stage-parallel GBT is scikit-learn's GradientBoostingClassifier, bit for bit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from bench.metrics.stagewise_gbt import StagewiseGradientBoostingClassifier, seed_states


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
