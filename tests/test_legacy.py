"""sklearn_legacy=True: scikit-learn 0.21's defaults, as the published dlib numbers used."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from bench.metrics.beta_vae import compute_beta_vae_sklearn
from bench.metrics.helpers.legacy import LegacyLogisticRegression
from bench.metrics.modularity_explicitness import compute_modularity_explicitness
from bench.metrics.sap_score import compute_sap
from tests.grid_data import FactorGrid
from tests.test_metrics import make_representation


def test_binary_fit_equals_todays_liblinear_logistic_regression():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    ours = LegacyLogisticRegression(random_state=np.random.RandomState(1)).fit(x, y)
    reference = LogisticRegression(solver="liblinear", random_state=np.random.RandomState(1))
    reference.fit(x, y)
    np.testing.assert_allclose(ours.predict_proba(x), reference.predict_proba(x), rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(x), reference.predict(x))


def test_one_seed_per_fit_and_one_vs_rest_probabilities():
    rng = np.random.RandomState(0)
    x, y = rng.normal(size=(300, 3)), rng.randint(0, 4, size=300)
    state, reference = np.random.RandomState(7), np.random.RandomState(7)
    model = LegacyLogisticRegression(random_state=state).fit(x, y)
    reference.randint(np.iinfo("i").max)  # 0.21 drew exactly one seed for the whole fit
    assert state.randint(10**9) == reference.randint(10**9)
    probabilities = model.predict_proba(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert model.coef_.shape == (4, 3)  # one binary problem per class
    np.testing.assert_array_equal(model.predict(x), np.argmax(probabilities, axis=1))


@pytest.mark.parametrize(
    ("function", "settings", "keys"),
    [
        (
            compute_beta_vae_sklearn,
            {"batch_size": 16, "num_train": 300, "num_eval": 200},
            ("eval_accuracy",),
        ),
        (
            compute_modularity_explicitness,
            {"num_train": 600, "num_test": 300},
            ("explicitness_score_test",),
        ),
        (compute_sap, {"num_train": 600, "num_test": 300}, ("SAP_score",)),
    ],
)
def test_legacy_scores_move_a_little(function, settings, keys):
    data = FactorGrid((4, 5, 3))
    kinds = ["factor", "mixture", "factor", "noise"]
    scores = [
        function(
            data,
            make_representation(kinds, 3, 5),
            np.random.RandomState(5),
            sklearn_legacy=legacy,
            **settings,
        )
        for legacy in (False, True)
    ]
    for key in keys:
        assert abs(scores[0][key] - scores[1][key]) < 0.1
    assert any(scores[0][k] != scores[1][k] for k in scores[0]) or function is compute_sap
