"""Every metric equals disentanglement_lib 1.5's, run side by side on the same inputs and seeds.

Inputs are drawn by hypothesis: factor layouts, and codes mixing factor copies, linear
mixtures, constant dims, duplicated dims and pure noise. Representation functions draw their
noise from their own RandomState, so the two implementations agree only if they call them
with the same batches in the same order.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.metrics.beta_vae import compute_beta_vae_sklearn
from bench.metrics.dci import compute_dci
from bench.metrics.downstream_task import compute_downstream_task
from bench.metrics.factor_vae import compute_factor_vae
from bench.metrics.helpers.dlib_reference import qualify_bindings
from bench.metrics.irs import compute_irs
from bench.metrics.modularity_explicitness import compute_modularity_explicitness
from bench.metrics.sap_score import compute_sap
from bench.metrics.unsupervised_metrics import unsupervised_metrics
from tests.grid_data import FactorGrid
from tests.test_metrics import CODE_KINDS, make_representation

DISCRETIZER = ["discretizer.discretizer_fn = @histogram_discretizer", "discretizer.num_bins = 20"]

# metric -> (dlib module, dlib function, hyperparameters for both, extra gin bindings,
#            tolerance, keys where ours corrects a dlib bug)
CASES = {
    "dci": ("dci", "compute_dci", {"num_train": 300, "num_test": 150}, [], 1e-6, ()),
    "factor_vae": (
        "factor_vae",
        "compute_factor_vae",
        {"batch_size": 16, "num_train": 60, "num_eval": 40, "num_variance_estimate": 300},
        ["prune_dims.threshold = 0.05"],
        1e-9,
        ("num_active_dims",),
    ),
    "sap": (
        "sap_score",
        "compute_sap",
        {"num_train": 300, "num_test": 150, "continuous_factors": False},
        [],
        0.0,
        (),
    ),
    "modularity_explicitness": (
        "modularity_explicitness",
        "compute_modularity_explicitness",
        {"num_train": 300, "num_test": 150},
        DISCRETIZER,
        1e-9,
        (),
    ),
    "beta_vae": (
        "beta_vae",
        "compute_beta_vae_sklearn",
        {"batch_size": 8, "num_train": 80, "num_eval": 40},
        [],
        0.0,
        (),
    ),
    "irs": (
        "irs",
        "compute_irs",
        {"num_train": 400, "batch_size": 16},
        DISCRETIZER,
        1e-9,
        ("num_active_dims",),
    ),
    "unsupervised": (
        "unsupervised_metrics",
        "unsupervised_metrics",
        {"num_train": 400},
        DISCRETIZER,
        1e-9,
        (),
    ),
    "downstream_gbt": (
        "downstream_task",
        "compute_downstream_task",
        {"num_train": [80, 30], "num_test": 40},
        ["predictor.predictor_fn = @gradient_boosting_classifier"],
        0.0,
        (),
    ),
    "downstream_lr": (
        "downstream_task",
        "compute_downstream_task",
        {"num_train": [80, 30], "num_test": 40},
        ["predictor.predictor_fn = @logistic_regression_cv"],
        0.0,
        (),
    ),
}
# Only ours takes these: parallel fits (same numbers).
OUR_EXTRA = {"dci": {"n_jobs": 2}, "downstream_gbt": {"n_jobs": 2}}
OURS = {
    "dci": compute_dci,
    "factor_vae": compute_factor_vae,
    "sap": compute_sap,
    "modularity_explicitness": compute_modularity_explicitness,
    "beta_vae": compute_beta_vae_sklearn,
    "irs": compute_irs,
    "unsupervised": unsupervised_metrics,
    "downstream_gbt": compute_downstream_task,
    "downstream_lr": compute_downstream_task,
}


def run_with_bindings(function, package, data, represent, seed, hyperparams, bindings):
    """``function`` the way a dlib script calls it: gin bindings (written for ``package``'s
    configurables, as both libraries are imported here), the global RNG seeded to 0 (how
    dlib's reference numbers are made, metrics.md §1), then ``RandomState(seed)``."""
    import gin

    gin.parse_config_files_and_bindings([], qualify_bindings(bindings, package))
    try:
        np.random.seed(0)
        return function(data, represent, np.random.RandomState(seed), **hyperparams)
    finally:
        gin.clear_config()


def outcome(call):
    try:
        return call(), None
    except (ValueError, BenchError, IndexError, ZeroDivisionError) as error:
        return None, error


# Examples per metric (default 12): the downstream probes fit one classifier per factor and
# training size (the logistic one: 10 Cs × 5 folds each), for dlib and for us, so fewer
# examples cover them; the logistic probe is sklearn's estimator on both sides.
EXAMPLES = {"downstream_lr": 2, "downstream_gbt": 6}
CODE_SHAPES = {
    "sizes": st.lists(st.integers(2, 6), min_size=2, max_size=4),
    "kinds": st.lists(st.sampled_from(CODE_KINDS), min_size=2, max_size=5),
    "seed": st.integers(0, 2**31 - 1),
}


@pytest.mark.parametrize("metric", list(CASES))
def test_metric_equals_disentanglement_lib(dlib_metrics, metric):
    examples = settings(max_examples=EXAMPLES.get(metric, 12), deadline=None)
    examples(given(**CODE_SHAPES)(check_equivalence))(dlib_metrics, metric)


def check_equivalence(dlib_metrics, metric, sizes, kinds, seed):
    module_name, function, hyperparams, bindings, tolerance, corrected = CASES[metric]
    data = FactorGrid(tuple(sizes))
    expected, dlib_error = outcome(
        lambda: run_with_bindings(
            getattr(dlib_metrics[module_name], function),
            "evaluation.metrics",
            data,
            make_representation(kinds, len(sizes), seed),
            seed,
            hyperparams,
            bindings,
        )
    )
    ours, our_error = outcome(
        lambda: run_with_bindings(
            OURS[metric],
            "bench.metrics",
            data,
            make_representation(kinds, len(sizes), seed),
            seed,
            {**hyperparams, **OUR_EXTRA.get(metric, {})},
            bindings,
        )
    )
    if dlib_error is not None:  # e.g. explicitness on a constant code: both must refuse
        assert our_error is not None, f"dlib raised {dlib_error!r}, ours returned {ours}"
        return
    assert our_error is None, our_error
    assert set(expected) <= set(ours)
    for key in expected:
        if key in corrected:
            continue
        want, got = float(expected[key]), float(ours[key])
        if not np.isfinite(want):  # nan or ±inf (e.g. total correlation of duplicated dims)
            assert np.array_equal(want, got, equal_nan=True), (key, got, want)
        else:
            assert abs(got - want) <= tolerance, (key, got, want)
