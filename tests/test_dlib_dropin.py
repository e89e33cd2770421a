"""bench.metrics as a drop-in for disentanglement_lib's ``evaluation.metrics``: dlib's own
metric tests, a script written for dlib, and dlib's gin names all work after changing the
import line, with the same numbers."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import gin
import numpy as np
import pytest

import bench.metrics
from bench.metrics import utils as our_utils
from bench.metrics.helpers.dlib_reference import dlib_metric_module
from tests.conftest import DLIB_METRIC_MODULES
from tests.grid_data import FactorGrid

DLIB_METRICS = Path(inspect.getfile(dlib_metric_module("utils"))).parent
DLIB_IMPORT = "from disentanglement_lib.evaluation.metrics import"
# dlib 1.5's metric test files for metrics bench does not offer (they are outside the
# issue's list: fairness, the strong downstream task, the unified scores).
NOT_OURS = {"fairness_test.py", "strong_downstream_task_test.py", "unified_scores_test.py"}
# dlib's tests import gin.tf, which imports TensorFlow; plain gin stands in for it.
GIN_TF_SHIM = "import sys\n\nimport gin\n\nsys.modules.setdefault('gin.tf', gin)\n"


def our_module_exists(test_file: Path) -> bool:
    return (Path(bench.metrics.__file__).parent / test_file.name.replace("_test", "")).exists()


def test_dlibs_own_metric_tests_pass_against_ours(tmp_path):
    test_files = sorted(DLIB_METRICS.glob("*_test.py"))
    assert {f.name for f in test_files if not our_module_exists(f)} == NOT_OURS
    for test_file in test_files:
        if test_file.name in NOT_OURS:
            continue
        text = test_file.read_text()
        assert text.count(DLIB_IMPORT) == 1, test_file.name
        (tmp_path / test_file.name).write_text(
            text.replace(DLIB_IMPORT, "from bench.metrics import")
        )
    (tmp_path / "conftest.py").write_text(GIN_TF_SHIM)
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "python_files=*_test.py", f"--junitxml={report}", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    suite = ET.parse(report).getroot().find("testsuite")
    failed = [
        f"{case.get('classname')}.{case.get('name')}: {problem.get('message')}"
        for case in suite.iter("testcase")
        for problem in [*case.findall("failure"), *case.findall("error")]
    ]
    assert not failed, failed
    # dlib 1.5 ships 44 tests for these metrics: all of them ran, none skipped.
    assert int(suite.get("tests")) == 44 and int(suite.get("skipped")) == 0


def run_script(path: Path) -> dict:
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_dlib_script_with_its_import_switched_gives_dlibs_numbers(tmp_path):
    script = Path(__file__).with_name("dlib_style_evaluation.py")
    switched = tmp_path / script.name
    text = script.read_text()
    switched.write_text(text.replace("disentanglement_lib.evaluation.metrics", "bench.metrics"))
    dlib, ours = run_script(script), run_script(switched)
    # The one key we correct: FactorVAE's num_active_dims (the README says why); equal here
    # because every dimension is active.
    assert ours == dlib


# The modules whose gin configurables are compared: the metrics and their helpers.
DLIB_MODULES = (*DLIB_METRIC_MODULES, "utils")


def configurables(package: str) -> dict[tuple[str, str], set[str]]:
    """(module, configurable name) -> the parameters a binding may set, for every gin
    configurable registered under ``package``."""
    registry = gin.config._REGISTRY
    found = {}
    for _, configurable in registry.items():
        if configurable.module.rsplit(".", 1)[0] != package:
            continue
        names = set(inspect.signature(configurable.wrapped).parameters)
        if configurable.allowlist:
            names &= set(configurable.allowlist)
        names -= set(configurable.denylist or ())
        found[configurable.module.rsplit(".", 1)[1], configurable.name] = names
    return found


def test_every_dlib_configurable_has_ours_with_the_same_bindable_parameters():
    for module in DLIB_MODULES:
        dlib_metric_module(module)
        __import__(f"bench.metrics.{module}")
    theirs = configurables("disentanglement_lib.evaluation.metrics")
    ours = configurables("bench.metrics")
    theirs = {key: params for key, params in theirs.items() if key[0] in DLIB_MODULES}
    assert len(theirs) == 18  # 12 metric functions (3 on fixed data) and 6 helpers
    differing = {key: (params, ours.get(key)) for key, params in theirs.items()
                 if ours.get(key) != params}  # fmt: skip
    assert not differing, differing


def test_bindings_reach_the_dlib_named_functions():
    """The gin API is live: a binding changes what the function computes, a caller's argument
    wins over a binding, and a parameter dlib does not take is refused."""
    from bench.metrics.mig import compute_mig

    data = FactorGrid((4, 5))

    def represent(x):
        return x.reshape(len(x), -1).astype(float) + 0.3 * np.arange(2)

    def mig(**kwargs):
        return compute_mig(data, represent, np.random.RandomState(0), **kwargs)

    default = mig(num_train=300)
    try:
        gin.bind_parameter("bench.metrics.utils.discretizer.num_bins", 2)
        coarse = mig(num_train=300)
        assert coarse != default
        assert mig(num_train=300, num_bins=20) == default  # an explicit argument wins
        gin.bind_parameter("bench.metrics.mig.mig.num_train", 300)
        assert mig() == coarse
        with pytest.raises(ValueError, match="allowlist"):
            gin.bind_parameter("bench.metrics.mig.mig.num_bins", 3)
    finally:
        gin.clear_config()


def test_gbt_fits_follow_the_global_rng_as_dlibs_do():
    """With ``global_seed=None`` (the drop-in default), DCI draws its trees from numpy's
    global RNG whatever its state, and leaves it where dlib's sequential fits leave it."""
    from bench.metrics.dci import compute_dci

    dlib_dci = dlib_metric_module("dci")
    data = FactorGrid((3, 4, 2))

    def represent(x):
        return x.reshape(len(x), -1).astype(float) + np.random.RandomState(len(x)).normal(
            0, 0.5, (len(x), 3)
        )

    outcomes = []
    for compute in (dlib_dci.compute_dci, compute_dci):
        np.random.seed(123)
        np.random.normal(size=7)  # any state, not just a fresh seed
        scores = compute(data, represent, np.random.RandomState(0), None, 120, 60)
        outcomes.append((scores, np.random.randint(2**31 - 1)))
    assert outcomes[0] == outcomes[1]


def test_utils_functions_have_dlibs_signatures_and_results():
    dlib_utils = dlib_metric_module("utils")
    for name in [
        "generate_batch_factor_code",
        "make_discretizer",
        "discrete_mutual_info",
        "discrete_entropy",
        "split_train_test",
        "obtain_representation",
        "normalize_data",
        "_histogram_discretize",
        "make_predictor_fn",
        "logistic_regression_cv",
        "gradient_boosting_classifier",
    ]:
        # inspect.signature looks through gin's wrappers (functools.wraps) on both sides.
        ours = list(inspect.signature(getattr(our_utils, name)).parameters)
        theirs = list(inspect.signature(getattr(dlib_utils, name)).parameters)
        assert ours == theirs, name
    observations = np.arange(23)[:, None] * np.array([[1.0, -2.0, 0.5]])
    np.testing.assert_array_equal(
        our_utils.obtain_representation(observations, np.sin, 5),
        dlib_utils.obtain_representation(observations, np.sin, 5),
    )
    codes = np.random.RandomState(0).normal(size=(4, 31))
    for ours, theirs in zip(
        our_utils.split_train_test(codes, 0.66),
        dlib_utils.split_train_test(codes, 0.66),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs)


def test_the_fixed_data_variants_equal_dlibs():
    """dlib's ``*_validation`` configurables: DCI, MIG and SAP on a given set of observations
    and labels, split into train and test by ``train_percentage``."""
    from bench.metrics.dci import compute_dci_on_fixed_data
    from bench.metrics.helpers.dlib_reference import qualify_bindings
    from bench.metrics.mig import compute_mig_on_fixed_data
    from bench.metrics.sap_score import compute_sap_on_fixed_data

    grid = FactorGrid((3, 4, 2))
    labels, observations = grid.sample(150, np.random.RandomState(0))
    labels = labels.T

    def represent(x):
        x = x.reshape(len(x), -1)
        return np.stack([x[:, 0] + 0.2 * np.sin(7 * x[:, 1]), x[:, 1] - x[:, 2], x[:, 2]], 1)

    discretizer = [
        "discretizer.discretizer_fn = @histogram_discretizer",
        "discretizer.num_bins = 5",
    ]
    calls = {
        "dci": (dict(train_percentage=0.7, batch_size=32), compute_dci_on_fixed_data),
        "mig": (dict(batch_size=32), compute_mig_on_fixed_data),
        "sap_score": (
            dict(train_percentage=0.7, continuous_factors=False, batch_size=32),
            compute_sap_on_fixed_data,
        ),
    }
    for module, (settings, ours) in calls.items():
        function = ours.__name__
        results = []
        for compute, package in [
            (getattr(dlib_metric_module(module), function), "evaluation.metrics"),
            (ours, "bench.metrics"),
        ]:
            gin.parse_config_files_and_bindings([], qualify_bindings(discretizer, package))
            try:
                np.random.seed(0)
                results.append(compute(observations, labels, represent, **settings))
            finally:
                gin.clear_config()
        assert results[0] == results[1], module
