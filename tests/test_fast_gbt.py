"""The fast profile: a histogram GBT with scikit-learn's criterion, and DCI scored with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.ensemble import GradientBoostingClassifier

from bench.config import EvalConfig
from bench.evaluate import evaluate
from bench.metrics.dci import compute_dci, compute_dci_fast
from bench.metrics.helpers.fast_gbt import HistogramGBT
from bench.store import RunRecord
from tests.grid_data import FactorGrid
from tests.test_evaluate import Elementwise, ElementwiseConfig


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_same_model_as_scikit_learn_when_every_value_has_its_own_bin(classes):
    # With at most max_bins distinct values per feature the candidate thresholds are
    # scikit-learn's own (midpoints of sorted values), so every stage must be scikit-learn's:
    # the same decision function to rounding. Importances may differ only where two features
    # induce the same partition of a small node (a tie scikit-learn breaks at random).
    rng = np.random.RandomState(classes)
    levels = rng.normal(size=(4, 30))
    x = np.stack([levels[f][rng.randint(0, 30, size=600)] for f in range(4)], axis=1)
    noisy = x[:, 0] + 2 * x[:, 1] + 0.5 * rng.normal(size=600)
    y = np.digitize(noisy, np.linspace(-3, 3, classes + 1)[1:-1])
    reference = GradientBoostingClassifier(random_state=0).fit(x, y)
    ours = HistogramGBT(max_bins=64).fit(x, y)
    np.testing.assert_allclose(
        ours.decision_function(x), reference.decision_function(x).reshape(len(x), -1), atol=1e-9
    )
    np.testing.assert_array_equal(ours.predict(x), reference.predict(x))
    np.testing.assert_allclose(ours.feature_importances_, reference.feature_importances_, atol=5e-3)


def test_fast_dci_is_within_002_of_exact():
    grid = FactorGrid((6, 5, 4, 3))
    rng = np.random.RandomState(0)
    mix = np.eye(4, 8) + 0.3 * rng.normal(size=(4, 8))

    def represent(observations):
        factors = np.rint(observations.reshape(len(observations), -1) * 255)
        return factors @ mix + 0.2 * np.sin(13 * factors.sum(1, keepdims=True) + np.arange(8))

    settings = {"num_train": 2000, "num_test": 1000}
    exact = compute_dci(grid, represent, np.random.RandomState(0), n_jobs=1, **settings)
    fast = compute_dci_fast(grid, represent, np.random.RandomState(0), n_jobs=1, **settings)
    for key in exact:
        assert abs(fast[key] - exact[key]) <= 0.02, (key, fast[key], exact[key])


def test_the_fast_profile_is_stamped_with_its_own_version(tmp_path):
    data, method = FactorGrid((3, 4, 5)), Elementwise(ElementwiseConfig(), (1, 1, 3))
    cfg = OmegaConf.merge(
        OmegaConf.structured(EvalConfig()),
        {
            "metrics": ["dci", "mig"],
            "profile": "fast",
            "hyperparams": {"dci": {"num_train": 200, "num_test": 100, "n_jobs": 1}},
        },
    )
    results = evaluate(method, data, cfg, RunRecord(tmp_path), torch.device("cpu"))
    assert results["dci"]["profile"] == "fast" and results["dci"]["version"] == "1-fast"
    # MIG has no fast variant: it scores exactly, and says so.
    assert results["mig"]["profile"] == "exact" and results["mig"]["version"] == "1"
