"""What every metric module declares, and the input checks they share."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.metrics.utils import generate_batch_factor_code, obtain_representation


@dataclass(frozen=True)
class MetricSpec:
    name: str
    # The metric itself, not the gin wrapper its module exports for dlib's scripts: bench's
    # evaluation passes every setting, so no binding a user made reaches it.
    function: Callable[..., dict[str, float]]
    # Bumped whenever the numbers a metric gives for the same inputs change, so that
    # records scored by different versions are never mixed in one table.
    version: str
    higher_is_better: bool  # of the headline key
    keys: tuple[str, ...]
    # The key a paper reports, which summary tables and plots show, and its column header:
    # short enough for a paper's table.
    headline: str
    label: str
    # The "fast" profile's variant, where one exists (same signature, approximate numbers,
    # its own version so that its numbers never mix with exact ones).
    fast_function: Callable[..., dict[str, float]] | None = None
    fast_version: str | None = None
    # For a metric whose settings make numbers incomparable (TAD's grid step): a short text
    # of those settings from the hyperparameters, recorded with the score and shown by reports.
    protocol: Callable[[dict[str, Any]], str] | None = None
    # What bench's own evaluation passes for hyperparameters whose default (None) means "as
    # dlib does it": read from dlib's gin configurables (``discretizer``, ``prune_dims``,
    # ``predictor``) or drawn from numpy's global RNG. A run's settings are all explicit.
    evaluation_values: dict[str, Any] = field(default_factory=dict)
    # What the function's second argument is: "codes", a representation function (every
    # disentanglement metric), or "generated", a function giving the images the model
    # generates for dataset rows (FID), the dataset passed as it is.
    scores: str = "codes"
    # The data it scores: "factors" (a ground-truth factor grid), "attributes" (binary labels
    # per image, as CelebA's) or "any" (either kind).
    data: str = "factors"
    # Checks a run makes before it trains, with the metric's hyperparameters: what the metric
    # will need later (FID: its Inception file) is there now, or a one-line error says how.
    preflight: Callable[[dict[str, Any]], None] | None = None
    # What a score was computed with beyond its settings, recorded beside it in metrics.json
    # (FID: the Inception file's name and sha256), from the metric's hyperparameters.
    provenance: Callable[[dict[str, Any]], dict[str, str]] | None = None

    def for_profile(self, profile: str) -> tuple[Callable[..., dict[str, float]], str]:
        """The function and version that score under ``profile`` ("exact" or "fast")."""
        if profile == "fast" and self.fast_function is not None:
            return self.fast_function, str(self.fast_version)
        return self.function, self.version

    def profile_used(self, profile: str) -> str:
        """The profile a score under ``profile`` really has: a metric without a fast
        variant scores exactly, whatever was asked."""
        return "fast" if profile == "fast" and self.fast_function is not None else "exact"

    @property
    def fits_own_pca(self) -> bool:
        """Whether it can reduce each unit's token by a PCA(1) fitted on the images it scores
        (a ``pca_units`` hyperparameter: TAD, the attribute probe), as ``eval.pca_fit=sample``
        asks."""
        return "pca_units" in hyperparameter_defaults(self.function)

    def hyperparameters(self, function: Callable[..., Any]) -> dict[str, Any]:
        """The hyperparameters bench's evaluation passes ``function`` (this metric's exact or
        fast variant) unless a run overrides them: every one, none left to gin."""
        defaults = hyperparameter_defaults(function)
        chosen = {k: v for k, v in self.evaluation_values.items() if k in defaults}
        return {**defaults, **chosen}


def hyperparameter_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """A metric function's hyperparameters: the keyword defaults after dlib's four arguments
    (ground_truth_data, representation_function, random_state, artifact_dir)."""
    parameters = list(inspect.signature(function).parameters.values())[4:]
    return {p.name: p.default for p in parameters}


def check_factors(metric: str, factors: np.ndarray) -> None:
    """``factors`` (K, N) as sampled: a factor that took one value has entropy 0 and cannot be
    classified, so the metric is undefined for it. (Checked on the sample, not on the declared
    ``factors_num_values``, which dlib's own test data declares as 1 for factors that vary.)"""
    single = [k for k, row in enumerate(factors) if np.all(row == row[0])]
    if single:
        raise BenchError(
            f"{metric}: factor {single[0]} has a single value in the {factors.shape[1]} "
            "sampled points; its entropy is 0, so the score is undefined: expose only factors "
            "that vary"
        )


def check_codes(metric: str, codes: np.ndarray, min_dims: int = 1) -> None:
    """``codes`` is (D, N), as ``generate_batch_factor_code`` returns it."""
    if codes.ndim != 2:
        raise BenchError(
            f"{metric}: the representation function must return one row per image (n, D); "
            f"got an array of {codes.ndim - 1} dimensions per image"
        )
    if codes.shape[0] < min_dims:
        raise BenchError(
            f"{metric}: needs at least {min_dims} code dimensions, got {codes.shape[0]}"
        )
    if not np.all(np.isfinite(codes)):
        raise BenchError(f"{metric}: the representation contains NaN or inf values")


def sample_train_test(
    metric: str,
    ground_truth_data,
    representation_function,
    random_state: np.random.RandomState,
    num_train: int,
    num_test: int,
    batch_size: int,
    min_dims: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked codes and factors of a train set, then a test set from the same RandomState
    (dlib's order): (mus_train, ys_train, mus_test, ys_test), codes (D, N), factors (K, N)."""
    mus_train, ys_train = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    mus_test, ys_test = generate_batch_factor_code(
        ground_truth_data, representation_function, num_test, random_state, batch_size
    )
    check_codes(metric, mus_train, min_dims)
    check_factors(metric, ys_train)
    return mus_train, ys_train, mus_test, ys_test


def fixed_data_codes(
    metric: str, observations: np.ndarray, labels: np.ndarray, representation_function, batch_size
) -> np.ndarray:
    """Codes (D, N) of a fixed set of observations whose factors ``labels`` are (K, N), for
    dlib's ``*_validation`` variants of the metrics."""
    if labels.shape[1] != len(observations):
        raise BenchError(
            f"{metric}: labels must be (factors, {len(observations)} observations), got "
            f"{labels.shape}"
        )
    codes = obtain_representation(observations, representation_function, batch_size)
    check_codes(metric, codes)
    return codes
