"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), as
disentanglement_lib computes it.

One scikit-learn ``GradientBoostingClassifier()`` (all defaults) per factor predicts the
factor from the code; its feature importances form the (codes × factors) importance matrix R.
Disentanglement is 1 − the entropy (base K) of each code's row of R, weighted by the code's
share of R; completeness is 1 − the entropy (base D) of each factor's column;
informativeness is the mean train / test accuracy.

dlib's trees take their tie-breaking seeds from the *global* numpy RNG, and its reference
numbers are made with ``np.random.seed(0)`` before the metric. Here factor k's classifier gets
``RandomState(global_seed)`` advanced past the trees of factors 0..k-1, which is the stream it
would see in dlib's sequential loop: the fits run in parallel (and, given more cores than
factors, the trees of each boosting stage too: ``bench.metrics.stagewise_gbt``) and the
numbers stay identical, without touching the global RNG.
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

from bench.metrics.fast_gbt import HistogramGBT
from bench.metrics.spec import MetricSpec, sample_train_test
from bench.metrics.stagewise_gbt import StagewiseGradientBoostingClassifier
from bench.metrics.utils import RepresentationFunction
from bench.progress import log as progress

MAX_INT = np.iinfo(np.int32).max


def compute_dci(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    global_seed: int = 0,
    n_jobs: int = -1,
) -> dict[str, float]:
    """``n_jobs`` parallel fits change the time, never the numbers."""
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
    return dci_from_codes(mus_train, ys_train, mus_test, ys_test, global_seed, n_jobs)


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
    scikit-learn's split criterion and importances (``bench.metrics.fast_gbt``)."""
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
    return scores_from_fits(fits)


def _fit_histogram_gbt(x_train, y_train, x_test, y_test, max_bins: int):
    model = HistogramGBT(max_bins=max_bins).fit(x_train, y_train)
    return (
        model.feature_importances_,
        np.mean(model.predict(x_train) == y_train),
        np.mean(model.predict(x_test) == y_test),
    )


def dci_from_codes(
    mus_train: np.ndarray,
    ys_train: np.ndarray,
    mus_test: np.ndarray,
    ys_test: np.ndarray,
    global_seed: int = 0,
    n_jobs: int = -1,
) -> dict[str, float]:
    """DCI of codes (D, N) against factors (K, N)."""
    tasks = [
        (mus_train.T, y, mus_test.T, y_test) for y, y_test in zip(ys_train, ys_test, strict=True)
    ]
    return scores_from_fits(seeded_gbt_fits(tasks, global_seed, n_jobs))


def scores_from_fits(fits: list[tuple[np.ndarray, float, float]]) -> dict[str, float]:
    """DCI from one (importances, train accuracy, test accuracy) per factor: R is (D, K)."""
    importance = np.stack([f[0] for f in fits], axis=1)
    return {
        "informativeness_train": float(np.mean([f[1] for f in fits])),
        "informativeness_test": float(np.mean([f[2] for f in fits])),
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
    }


def _trees_per_fit(labels: np.ndarray, n_estimators: int = 100) -> int:
    """Trees (= seed draws) of one GBT fit: one per stage, or one per class and stage."""
    classes = len(np.unique(labels))
    return n_estimators * (classes if classes > 2 else 1)


def _fit_gbt(x_train, y_train, x_test, y_test, global_seed: int, skip: int, threads: int):
    rng = np.random.RandomState(global_seed)
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
    global_seed: int = 0,
    n_jobs: int = -1,
) -> list[tuple[np.ndarray, float, float]]:
    """(importances, train accuracy, test accuracy) of one default GBT per task
    (x_train, y_train, x_test, y_test), equal to fitting them one after the other with the
    global RNG seeded to ``global_seed``, as dlib does.

    The fits run in parallel processes, the largest first. With more workers than fits
    (more cores than factors), each fit also spreads the trees of every boosting stage over
    threads, so the spare cores help too. (With fewer, threads would only add contention for
    the GIL: measured 78 s against 71 s on the 2-core benchmark case.)
    """
    trees = [_trees_per_fit(y_train) for _, y_train, _, _ in tasks]
    skips = np.cumsum([0, *trees[:-1]])
    workers = joblib.cpu_count() if n_jobs < 0 else n_jobs
    threads = max(1, workers // len(tasks))
    return _largest_first(
        [
            partial(_fit_gbt, *task, global_seed, int(skip), threads)
            for task, skip in zip(tasks, skips, strict=True)
        ],
        trees,
        min(workers, len(tasks)),
    )


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


def disentanglement(importance: np.ndarray) -> float:
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    code_importance = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_importance))


def completeness(importance: np.ndarray) -> float:
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    factor_importance = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_importance))


SPEC = MetricSpec(
    name="dci",
    function=compute_dci,
    version="1",
    higher_is_better=True,
    keys=("disentanglement", "completeness", "informativeness_train", "informativeness_test"),
    fast_function=compute_dci_fast,
    fast_version="1-fast",
)
