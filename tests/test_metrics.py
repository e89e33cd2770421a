"""MIG and its helpers: equal to disentanglement_lib's, and to closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.metrics import METRICS
from bench.metrics.helpers.dlib_reference import qualify_bindings
from bench.metrics.mig import _compute_mig, compute_mig
from bench.metrics.utils import discrete_entropy, discrete_mutual_info, histogram_discretize
from tests.grid_data import FactorGrid, factors_from_observations

CODE_KINDS = ("factor", "mixture", "constant", "duplicate", "noise")


def make_representation(kinds: list[str], num_factors: int, seed: int):
    """A representation function with code dims of the given kinds, drawing noise from its
    own RandomState so that two metric implementations calling it in the same order see
    the same codes."""
    rng = np.random.RandomState(seed)
    mix = rng.normal(size=(num_factors, len(kinds)))
    which = rng.randint(num_factors, size=len(kinds))

    def represent(observations: np.ndarray) -> np.ndarray:
        factors = factors_from_observations(observations)
        codes = []
        for d, kind in enumerate(kinds):
            if kind == "factor":
                column = factors[:, which[d]] + 0.1 * rng.normal(size=len(factors))
            elif kind == "mixture":
                column = factors @ mix[:, d]
            elif kind == "constant":
                column = np.full(len(factors), 3.5)
            elif kind == "duplicate" and codes:
                column = codes[0]
            else:
                column = rng.normal(size=len(factors))
            codes.append(column)
        return np.stack(codes, axis=1)

    return represent


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 12), min_size=1, max_size=4),
    kinds=st.lists(st.sampled_from(CODE_KINDS), min_size=2, max_size=6),
    num_train=st.integers(50, 600),
    batch_size=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_mig_equals_disentanglement_lib(dlib_metrics, sizes, kinds, num_train, batch_size, seed):
    import gin

    data = FactorGrid(tuple(sizes))
    gin.parse_config_files_and_bindings(
        [],
        qualify_bindings(
            ["discretizer.discretizer_fn = @histogram_discretizer", "discretizer.num_bins = 20"]
        ),
    )
    try:
        expected = dlib_metrics["mig"].compute_mig(
            data,
            make_representation(kinds, len(sizes), seed),
            np.random.RandomState(seed),
            num_train=num_train,
            batch_size=batch_size,
        )
    finally:
        gin.clear_config()
    ours = compute_mig(
        data,
        make_representation(kinds, len(sizes), seed),
        np.random.RandomState(seed),
        num_train=num_train,
        batch_size=batch_size,
    )
    assert ours.keys() == expected.keys()
    if np.isnan(expected["discrete_mig"]):
        assert np.isnan(ours["discrete_mig"])
    else:
        assert abs(ours["discrete_mig"] - expected["discrete_mig"]) <= 1e-9


def test_histogram_discretize_labels_min_first_max_last():
    codes = np.array([[0.0, 0.5, 1.0, 0.05, 0.97], [2.0, 2.0, 2.0, 2.0, 2.0]])
    labels = histogram_discretize(codes, num_bins=20)
    # Bins of width 0.05 from 0 to 1; a value on an interior edge goes to the upper bin.
    np.testing.assert_array_equal(labels[0], [1, 11, 20, 2, 20])
    assert len(set(labels[1])) == 1  # a constant row gets one label
    assert labels.dtype == codes.dtype


def test_mutual_info_and_entropy_match_the_contingency_table_formula():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(1, 500))
    y = (x + rng.integers(0, 2, size=(1, 500))) % 5
    joint = np.zeros((4, 5))
    np.add.at(joint, (x[0], y[0]), 1)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nonzero = joint > 0
    mi = np.sum(joint[nonzero] * np.log(joint[nonzero] / (px @ py)[nonzero]))
    assert discrete_mutual_info(x, y)[0, 0] == pytest.approx(mi, abs=1e-12)
    assert discrete_entropy(y)[0] == pytest.approx(-np.sum(py * np.log(py)), abs=1e-12)


def test_mig_closed_forms_on_a_full_factor_grid():
    # On a full grid every pair of factors is exactly independent, so plug-in MI between
    # different factors is exactly 0: codes equal to the factors give MIG = 1, and a factor
    # captured by two identical code dims has a gap of 0.
    grid = FactorGrid((3, 5, 4))
    factors = grid.factors_of(np.arange(len(grid))).T.astype(float)
    assert _compute_mig(factors, factors.astype(int), 20)["discrete_mig"] == pytest.approx(
        1.0, abs=1e-12
    )
    duplicated = np.concatenate([factors, factors[:1]])
    assert _compute_mig(duplicated, factors.astype(int), 20)["discrete_mig"] == pytest.approx(
        2 / 3, abs=1e-12
    )


def test_mig_rejects_bad_input():
    grid = FactorGrid((3, 4))

    def nan_codes(observations):
        return np.full((len(observations), 3), np.nan)

    with pytest.raises(BenchError, match="mig: the representation contains NaN"):
        compute_mig(grid, nan_codes, np.random.RandomState(0), num_train=32)
    with pytest.raises(BenchError, match="mig: factor 1 has a single value in the 32 sampled"):
        compute_mig(
            FactorGrid((3, 1)),
            lambda x: np.ones((len(x), 2)),
            np.random.RandomState(0),
            num_train=32,
        )
    with pytest.raises(BenchError, match="at least 2 code dimensions"):
        compute_mig(grid, lambda x: np.zeros((len(x), 1)), np.random.RandomState(0), num_train=32)


def test_metric_spec_is_registered():
    spec = METRICS.get("mig")
    assert (
        spec.function is compute_mig.__wrapped__
        and spec.higher_is_better
        and spec.keys == ("discrete_mig",)
    )


FACTOR_METRICS = [
    "beta_vae",
    "dci",
    "downstream_task",
    "factor_vae",
    "irs",
    "mig",
    "modularity_explicitness",
    "sap_score",
]
TINY = {
    "beta_vae": {"num_train": 4, "num_eval": 4},
    "dci": {"num_train": 40, "num_test": 20},
    "downstream_task": {"num_train": (40,), "num_test": 20},
    "factor_vae": {"num_train": 4, "num_eval": 4, "num_variance_estimate": 40},
    "irs": {"num_train": 40},
    "mig": {"num_train": 40},
    "modularity_explicitness": {"num_train": 40, "num_test": 20},
    "sap_score": {"num_train": 40, "num_test": 20},
    "unsupervised": {"num_train": 40},
}


@pytest.mark.parametrize("name", [*FACTOR_METRICS, "unsupervised"])
def test_every_metric_refuses_nan_codes_in_one_line(name):
    def nan_codes(observations):
        codes = np.ones((len(observations), 3))
        codes[0, 1] = np.nan
        return codes

    with pytest.raises(BenchError) as error:
        METRICS.get(name).function(
            FactorGrid((3, 4)), nan_codes, np.random.RandomState(0), None, **TINY[name]
        )
    assert str(error.value).startswith(f"{name.split('_score')[0]}") or name in str(error.value)
    assert "NaN or inf" in str(error.value) and "\n" not in str(error.value)


# Their numbers need a classifier per factor or a factor's entropy: undefined for a factor that
# takes one value. (BetaVAE, FactorVAE and IRS are defined there, and dlib's own test data
# declares every factor single-valued while sampling ten values: the check is on the sample.)
@pytest.mark.parametrize(
    "name", ["dci", "downstream_task", "mig", "modularity_explicitness", "sap_score"]
)
def test_every_metric_undefined_for_a_single_valued_factor_refuses_it(name):
    with pytest.raises(BenchError, match="has a single value"):
        METRICS.get(name).function(
            FactorGrid((3, 1)),
            lambda x: x.reshape(len(x), -1),
            np.random.RandomState(0),
            None,
            **TINY[name],
        )


def test_every_registered_metric_declares_the_column_reports_show():
    labels = []
    for name in METRICS.names():
        spec = METRICS.get(name)
        assert spec.name == name
        assert spec.headline in spec.keys, f"{name}: headline {spec.headline!r} not a key"
        assert spec.label.strip(), name
        labels.append(spec.label)
    assert len(set(labels)) == len(labels), "two metrics share a column header"
