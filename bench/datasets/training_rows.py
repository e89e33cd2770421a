"""The rows of a dataset a method trains on (``data.*``): all of them, unless a method's
authors train on part of it.

- ``train_partition``: the dataset's train partition (CelebA's official 162,770 images, which
  DiTi trains on); needs a dataset with a ``partition``.
- ``exclude``: factor values whose images are left out (DisUnknown's dSprites loader drops
  orientation 39, the duplicate of 0).
- ``holdout``: the fraction of the remaining rows held out by a random split fixed per
  dataset, whatever the run's seed (DisUnknown's ``prepare_data --test_portion 0.1``).

Evaluation always reads the whole dataset: the metrics' protocols draw from it.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from bench.errors import BenchError

TRAIN = 0  # the train partition's label, as CelebA's list_eval_partition.txt
HOLDOUT_SEED = 0  # the split is the dataset's, not the run's


def training_rows(dataset, data: DictConfig) -> np.ndarray | None:
    """The sorted dataset rows ``data`` selects for training; None for every row."""
    if not (data.train_partition or data.exclude or data.holdout):
        return None
    rows = np.arange(len(dataset))
    if data.train_partition:
        partition = getattr(dataset, "partition", None)
        if partition is None:
            raise BenchError(
                f"data.train_partition=true: {type(dataset).__name__} has no train partition "
                "(celeba with split=all has one); set data.train_partition=false"
            )
        rows = rows[np.asarray(partition) == TRAIN]
    if data.exclude:
        names = list(getattr(dataset, "state_names", ()))
        unknown = [f for f in data.exclude if f not in names]
        if unknown:
            raise BenchError(
                f"data.exclude names {unknown[0]!r}, not a factor of {type(dataset).__name__}; "
                f"its factors: {', '.join(names) or 'none'}"
            )
        factors = dataset.factors_of(rows)
        dropped = np.zeros(len(rows), dtype=bool)
        for factor, values in data.exclude.items():
            dropped |= np.isin(factors[:, names.index(factor)], list(values))
        rows = rows[~dropped]
    if data.holdout:
        if not 0 < data.holdout < 1:
            raise BenchError(f"data.holdout={data.holdout}: give a fraction in [0, 1)")
        held = int(len(rows) * data.holdout + 0.5)
        order = np.random.default_rng(HOLDOUT_SEED).permutation(len(rows))
        rows = np.sort(rows[order[held:]])
    return rows
