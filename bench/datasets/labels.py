"""Factor labels for weakly supervised training: which stored factors a method is given, and
their value indices for rows of the dataset."""

from __future__ import annotations

import numpy as np

from bench.datasets.ground_truth import GroundTruthData
from bench.errors import BenchError


def label_columns(dataset: object, factors: list[str]) -> list[int]:
    """Where each labelled factor is among the dataset's stored factors, or a one-line error
    naming the factors it has."""
    if not isinstance(dataset, GroundTruthData):
        raise BenchError(
            f"labels for {', '.join(factors)}: {type(dataset).__name__} has no factors to "
            "label; train a weakly supervised method on a dataset of factors"
        )
    visible = list(dataset.factor_names)
    unknown = [f for f in factors if f not in visible]
    if unknown:
        raise BenchError(
            f"labelled factor {unknown[0]!r} is not one of {type(dataset).__name__}'s "
            f"factors: {', '.join(visible)}"
        )
    return [list(dataset.state_names).index(f) for f in factors]


def factor_labels(dataset: GroundTruthData, rows: np.ndarray, columns: list[int]) -> np.ndarray:
    """int64 (n, k): the value indices of stored factors ``columns`` of dataset ``rows``."""
    return dataset.factors_of(rows)[:, columns]
