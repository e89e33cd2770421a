"""Our metrics (exact and fast profiles) next to disentanglement_lib's, side by side.

    pip install --no-deps disentanglement-lib==1.5   # plus gin-config, absl-py, six
    python benchmarks/metrics_vs_dlib.py [--case shapes3d|mpi3d] [--cores N] [--metrics dci,...]

A full factor grid of a real dataset's sizes (``shapes3d``: 10, 10, 10, 8, 4, 15;
``mpi3d``: 6, 6, 2, 3, 3, 40, 40, where exact DCI fits two 40-class GBTs) and a 10-d
continuous code (a noisy mixture of the factors), looked up by row index, so both sides time
only the metric machinery. dlib runs with the global numpy RNG seeded to 0, as its reference
numbers are made. ``--cores N`` pins the process (and the workers it starts) to N cores and
N BLAS threads: dlib fits one classifier after another whatever the count, ours spread the
per-factor fits over processes and, with cores to spare, each GBT stage's per-class trees
over threads. The exact profile is compared with dlib, the fast one with the exact one.
Prints a table and writes ``benchmarks/results/metrics_vs_dlib-<case>-<N>cores-<host>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench.datasets.ground_truth import GroundTruthData
from bench.fileio import atomic_write_json
from bench.metrics import METRICS
from bench.metrics.helpers.dlib_reference import dlib_metric_module, qualify_bindings

CASES = {
    "shapes3d": {
        "floor_hue": 10,
        "wall_hue": 10,
        "object_hue": 10,
        "scale": 8,
        "shape": 4,
        "orientation": 15,
    },
    "mpi3d": {
        "object_color": 6,
        "object_shape": 6,
        "object_size": 2,
        "camera_height": 3,
        "background_color": 3,
        "horizontal_axis": 40,
        "vertical_axis": 40,
    },
}
# ours -> (dlib module, dlib function, hyperparameters of the unsupervised study, gin bindings)
DLIB = {
    "dci": ("dci", "compute_dci", {"num_train": 10000, "num_test": 5000}, []),
    "factor_vae": (
        "factor_vae",
        "compute_factor_vae",
        {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000},
        ["prune_dims.threshold = 0.05"],
    ),
    "mig": (
        "mig",
        "compute_mig",
        {"num_train": 10000},
        ["discretizer.num_bins = 20", "discretizer.discretizer_fn = @histogram_discretizer"],
    ),
    "sap_score": (
        "sap_score",
        "compute_sap",
        {"num_train": 10000, "num_test": 5000, "continuous_factors": False},
        [],
    ),
    "modularity_explicitness": (
        "modularity_explicitness",
        "compute_modularity_explicitness",
        {"num_train": 10000, "num_test": 5000},
        ["discretizer.num_bins = 20", "discretizer.discretizer_fn = @histogram_discretizer"],
    ),
    "beta_vae": (
        "beta_vae",
        "compute_beta_vae_sklearn",
        {"batch_size": 64, "num_train": 10000, "num_eval": 5000},
        [],
    ),
    "irs": (
        "irs",
        "compute_irs",
        {"num_train": 10000, "batch_size": 16},
        ["discretizer.num_bins = 20", "discretizer.discretizer_fn = @histogram_discretizer"],
    ),
    "unsupervised": (
        "unsupervised_metrics",
        "unsupervised_metrics",
        {"num_train": 10000},
        ["discretizer.num_bins = 20", "discretizer.discretizer_fn = @histogram_discretizer"],
    ),
}


class IndexedGrid(GroundTruthData):
    """A factor grid of a dataset's sizes whose observations are row indices."""

    image_shape = (1, 1, 1)

    def __init__(self, factors: dict[str, int]) -> None:
        self.state_names, self.state_sizes = tuple(factors), tuple(factors.values())

    def sample_observations_from_factors(self, factors, random_state):
        return self.index_of(factors)[:, None]

    def images(self, indices):
        return np.asarray(indices)


def code_table(data: IndexedGrid) -> np.ndarray:
    rng = np.random.RandomState(0)
    sizes = np.array(data.state_sizes)
    factors = data.factors_of(np.arange(int(np.prod(sizes)))) / sizes
    mix = np.eye(len(sizes), 10) + 0.3 * rng.normal(size=(len(sizes), 10))
    return factors @ mix + 0.05 * rng.normal(size=(len(factors), 10))


def pin_to_cores(cores: int) -> None:
    """Run on ``cores`` cores: the worker processes joblib starts inherit the affinity, and
    joblib counts the cores it may use from it."""
    available = sorted(os.sched_getaffinity(0))
    if cores > len(available):
        raise SystemExit(f"--cores {cores}: this machine lets us use {len(available)}")
    os.sched_setaffinity(0, available[:cores])


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=",".join(DLIB))
    parser.add_argument("--case", choices=list(CASES), default="shapes3d")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    names = args.metrics.split(",")
    pin_to_cores(args.cores)
    with threadpool_limits(args.cores):
        rows = compare(names, IndexedGrid(CASES[args.case]))
    out = (
        Path(__file__).parent
        / "results"
        / (f"metrics_vs_dlib-{args.case}-{args.cores}cores-{platform.node()}.json")
    )
    atomic_write_json(
        out,
        {
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "cores": args.cores,
            "case": f"{args.case}-size grid {CASES[args.case]}, 10-d code",
            "rows": rows,
        },
    )


def compare(names: list[str], data: IndexedGrid) -> list[dict]:
    import gin

    table = code_table(data)

    def represent(observations):
        return table[observations[:, 0]]

    print(
        f"{'metric':<24}{'dlib s':>8}{'exact s':>8}{'ratio':>8}{'max|Δ|':>10}"
        f"{'fast s':>8}{'ratio':>8}{'Δ exact':>10}"
    )
    rows = []
    for name in names:
        module, function, hyperparams, bindings = DLIB[name]
        dlib_fn = getattr(dlib_metric_module(module), function)
        gin.parse_config_files_and_bindings([], qualify_bindings(bindings))
        np.random.seed(0)
        expected, dlib_s = timed(
            partial(dlib_fn, data, represent, np.random.RandomState(0), **hyperparams)
        )
        gin.clear_config()
        spec = METRICS.get(name)
        ours, ours_s = timed(
            partial(
                spec.function,
                data,
                represent,
                np.random.RandomState(0),
                **{**spec.hyperparameters(spec.function), **hyperparams},
            )
        )
        fast_fn, _ = spec.for_profile("fast")
        fast, fast_s = timed(
            partial(
                fast_fn,
                data,
                represent,
                np.random.RandomState(0),
                **{**spec.hyperparameters(fast_fn), **hyperparams},
            )
        )
        keys = [k for k in expected if k != "num_active_dims"]  # dlib's key is buggy there
        diff = max(abs(float(ours[k]) - float(expected[k])) for k in keys)
        fast_diff = max(abs(float(fast[k]) - float(ours[k])) for k in keys)
        rows.append(
            {
                "metric": name,
                "dlib_s": round(dlib_s, 2),
                "exact_s": round(ours_s, 2),
                "exact_speedup": round(dlib_s / ours_s, 2),
                "exact_max_abs_diff_vs_dlib": diff,
                "fast_s": round(fast_s, 2),
                "fast_speedup": round(dlib_s / fast_s, 2),
                "fast_max_abs_diff_vs_exact": fast_diff,
                "exact": {k: float(v) for k, v in ours.items()},
                "fast": {k: float(v) for k, v in fast.items()},
            }
        )
        print(
            f"{name:<24}{dlib_s:>8.2f}{ours_s:>8.2f}{dlib_s / ours_s:>7.1f}x{diff:>10.1e}"
            f"{fast_s:>8.2f}{dlib_s / fast_s:>7.1f}x{fast_diff:>10.1e}",
            flush=True,
        )
    total = {key: sum(r[key] for r in rows) for key in ("dlib_s", "exact_s", "fast_s")}
    print(
        f"{'all':<24}{total['dlib_s']:>8.2f}{total['exact_s']:>8.2f}"
        f"{total['dlib_s'] / total['exact_s']:>7.1f}x{'':>10}{total['fast_s']:>8.2f}"
        f"{total['dlib_s'] / total['fast_s']:>7.1f}x"
    )
    return rows


if __name__ == "__main__":
    main()
