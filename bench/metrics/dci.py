"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), as
disentanglement_lib computes it.

One scikit-learn ``GradientBoostingClassifier()`` (all defaults) per factor predicts the
factor from the code; its feature importances form the (codes × factors) importance matrix R.
Disentanglement is 1 − the entropy (base K) of each code's row of R, weighted by the code's
share of R; completeness is 1 − the entropy (base D) of each factor's column;
informativeness is the mean train / test accuracy.

dlib's trees take their tie-breaking seeds from the *global* numpy RNG, and its reference
numbers are made with ``np.random.seed(0)`` before the metric. Here factor k's classifier gets
that stream advanced past the trees of factors 0..k-1, which is what it would see in dlib's
sequential loop: the fits run in parallel (and, given more cores than factors, the trees of
each boosting stage too: ``bench.metrics.helpers.stagewise_gbt``) and the numbers stay identical.
``global_seed=None`` (the default, as a drop-in for dlib) starts from the global RNG's
current state and leaves it advanced as dlib's fits would; bench's own evaluation passes
``global_seed=0``, a stream of its own, so its numbers never depend on what ran before.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial

import joblib
import numpy as np
import scipy.stats
from joblib import Parallel, delayed

from bench.metrics.helpers.fast_gbt import HistogramGBT
from bench.metrics.helpers.stagewise_gbt import StagewiseGradientBoostingClassifier
from bench.metrics.spec import MetricSpec, fixed_data_codes, sample_train_test
from bench.metrics.utils import RepresentationFunction, dlib_configurable, split_train_test
from bench.progress import log as progress

MAX_INT = np.iinfo(np.int32).max


@dlib_configurable("dci", ["num_train", "num_test", "batch_size"])
def compute_dci(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    global_seed: int | None = None,
    n_jobs: int = -1,
) -> dict[str, float]:
    """``global_seed``: the trees' seed stream (None: numpy's global RNG, as dlib). ``n_jobs``
    parallel fits change the time, never the numbers."""
    del artifact_dir
    mus_train, ys_train, mus_test, ys_test = sample_train_test(
        "dci",
        ground_truth_data,
        representation_function,
        random_state,
        num_train,
        num_test,
        batch_size,
    )
    return _compute_dci(mus_train, ys_train, mus_test, ys_test, global_seed, n_jobs)


@dlib_configurable("dci_validation", ["train_percentage", "batch_size"])
def compute_dci_on_fixed_data(
    observations: np.ndarray,
    labels: np.ndarray,
    representation_function: RepresentationFunction,
    train_percentage: float,
    batch_size: int = 100,
) -> dict[str, float]:
    """DCI on fixed observations and their factors (K, N), the first ``train_percentage`` of
    them for training; its trees seeded from numpy's global RNG, as dlib's."""
    codes = fixed_data_codes("dci", observations, labels, representation_function, batch_size)
    mus_train, mus_test = split_train_test(codes, train_percentage)
    ys_train, ys_test = split_train_test(labels, train_percentage)
    return _compute_dci(mus_train, ys_train, mus_test, ys_test)


def compute_dci_fast(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    max_bins: int = 255,
    n_jobs: int = -1,
) -> dict[str, float]:
    """DCI's ``fast`` profile: the same samples, scored with a histogram GBT that keeps
    scikit-learn's split criterion and importances (``bench.metrics.helpers.fast_gbt``)."""
    del artifact_dir
    mus_train, ys_train, mus_test, ys_test = sample_train_test(
        "dci",
        ground_truth_data,
        representation_function,
        random_state,
        num_train,
        num_test,
        batch_size,
    )
    fits = _largest_first(
        [
            partial(_fit_histogram_gbt, mus_train.T, y, mus_test.T, y_test, max_bins)
            for y, y_test in zip(ys_train, ys_test, strict=True)
        ],
        [_trees_per_fit(y) for y in ys_train],
        n_jobs,
    )
    return scores_from_importance(*importance_from_fits(fits))


def _fit_histogram_gbt(x_train, y_train, x_test, y_test, max_bins: int):
    model = HistogramGBT(max_bins=max_bins).fit(x_train, y_train)
    return (
        model.feature_importances_,
        np.mean(model.predict(x_train) == y_train),
        np.mean(model.predict(x_test) == y_test),
    )


def _compute_dci(
    mus_train: np.ndarray,
    ys_train: np.ndarray,
    mus_test: np.ndarray,
    ys_test: np.ndarray,
    global_seed: int | None = None,
    n_jobs: int = -1,
) -> dict[str, float]:
    """DCI of codes (D, N) against factors (K, N)."""
    return scores_from_importance(
        *compute_importance_gbt(mus_train, ys_train, mus_test, ys_test, global_seed, n_jobs)
    )


def compute_importance_gbt(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    global_seed: int | None = None,
    n_jobs: int = -1,
) -> tuple[np.ndarray, float, float]:
    """The importance matrix R (D, K) of codes (D, N) for factors (K, N), and the mean train
    and test accuracies of the factors' GBTs."""
    tasks = [(x_train.T, y, x_test.T, y_t) for y, y_t in zip(y_train, y_test, strict=True)]
    return importance_from_fits(seeded_gbt_fits(tasks, global_seed, n_jobs))


def importance_from_fits(
    fits: list[tuple[np.ndarray, float, float]],
) -> tuple[np.ndarray, float, float]:
    """R (D, K) and the mean accuracies from one (importances, train, test accuracy) per factor."""
    importance = np.stack([f[0] for f in fits], axis=1)
    return importance, float(np.mean([f[1] for f in fits])), float(np.mean([f[2] for f in fits]))


def scores_from_importance(
    importance: np.ndarray, train_accuracy: float, test_accuracy: float
) -> dict[str, float]:
    return {
        "informativeness_train": train_accuracy,
        "informativeness_test": test_accuracy,
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
    }


def _trees_per_fit(labels: np.ndarray, n_estimators: int = 100) -> int:
    """Trees (= seed draws) of one GBT fit: one per stage, or one per class and stage."""
    classes = len(np.unique(labels))
    return n_estimators * (classes if classes > 2 else 1)


def _fit_gbt(x_train, y_train, x_test, y_test, stream: tuple, skip: int, threads: int):
    """One default GBT whose trees draw from ``stream`` (a RandomState's state) after
    ``skip`` draws."""
    rng = np.random.RandomState()
    rng.set_state(stream)
    if skip:
        rng.randint(0, MAX_INT, size=skip)  # the draws of the trees fitted before this one
    model = StagewiseGradientBoostingClassifier(random_state=rng)
    with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as tree_pool:
        model.executor = tree_pool
        model.fit(x_train, y_train)
    return (
        np.abs(model.feature_importances_),
        np.mean(model.predict(x_train) == y_train),
        np.mean(model.predict(x_test) == y_test),
    )


def seeded_gbt_fits(
    tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    global_seed: int | None = 0,
    n_jobs: int = -1,
) -> list[tuple[np.ndarray, float, float]]:
    """(importances, train accuracy, test accuracy) of one default GBT per task
    (x_train, y_train, x_test, y_test), equal to fitting them one after the other with the
    global RNG seeded to ``global_seed``, as dlib does. With None, they draw from the global
    RNG as it stands, and leave it advanced past every tree, exactly as dlib's loop would.

    The fits run in parallel processes, the largest first. With more workers than fits
    (more cores than factors), each fit also spreads the trees of every boosting stage over
    threads, the spare cores going to the fits with the most trees, in proportion: on 16
    cores MPI3D's two 40-class factors get 6 threads each and its five small ones one. (With
    fewer cores than fits, threads would only add contention for the GIL: measured 78 s
    against 71 s on the 2-core benchmark case.)
    """
    trees = [_trees_per_fit(y_train) for _, y_train, _, _ in tasks]
    skips = np.cumsum([0, *trees[:-1]])
    workers = joblib.cpu_count() if n_jobs < 0 else n_jobs
    threads = _threads_per_fit(trees, workers)
    source = np.random if global_seed is None else np.random.RandomState(global_seed)
    stream = source.get_state()
    fits = _largest_first(
        [
            partial(_fit_gbt, *task, stream, int(skip), fit_threads)
            for task, skip, fit_threads in zip(tasks, skips, threads, strict=True)
        ],
        trees,
        min(workers, len(tasks)),
    )
    if global_seed is None:
        np.random.randint(0, MAX_INT, size=sum(trees))  # where dlib's loop leaves it
    return fits


def _threads_per_fit(trees: list[int], workers: int) -> list[int]:
    """Threads for each fit's per-class trees: one each unless there are more workers than
    fits, then the workers shared out in proportion to the fits' trees."""
    if workers <= len(trees):
        return [1] * len(trees)
    return [max(1, round(workers * count / sum(trees))) for count in trees]


def _largest_first(calls: list, costs: list[int], n_jobs: int) -> list:
    """Run ``calls`` in parallel, the costliest first (so the longest fit does not start
    last), and return their results in the original order."""
    order = np.argsort(costs, kind="stable")[::-1]
    results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(calls[i])() for i in order)
    ordered = [None] * len(calls)
    start = time.perf_counter()
    for done, (i, result) in enumerate(zip(order, results, strict=True), start=1):
        ordered[i] = result
        elapsed = time.perf_counter() - start
        progress.info(f"  fitted {done} of {len(calls)} classifiers ({elapsed:.0f} s)")
    return ordered


def disentanglement_per_code(importance: np.ndarray) -> np.ndarray:
    """1 − the entropy (base K) of each code's row of R (D, K)."""
    return 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])


def completeness_per_factor(importance: np.ndarray) -> np.ndarray:
    """1 − the entropy (base D) of each factor's column of R (D, K)."""
    return 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])


def disentanglement(importance: np.ndarray) -> float:
    per_code = disentanglement_per_code(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    code_importance = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_importance))


def completeness(importance: np.ndarray) -> float:
    per_factor = completeness_per_factor(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    factor_importance = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_importance))


SPEC = MetricSpec(
    name="dci",
    function=compute_dci.__wrapped__,
    version="1",
    higher_is_better=True,
    keys=("disentanglement", "completeness", "informativeness_train", "informativeness_test"),
    headline="disentanglement",
    label="DCI disent.",
    fast_function=compute_dci_fast,
    fast_version="1-fast",
    evaluation_values={"global_seed": 0},
)
