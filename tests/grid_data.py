"""A small ground-truth dataset whose images carry their own factor values, for metric tests."""

from __future__ import annotations

import numpy as np

from bench.datasets import GroundTruthData


class FactorGrid(GroundTruthData):
    """Images of shape (1, 1, K) whose pixels are the factor indices."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.state_sizes = tuple(sizes)
        self.state_names = tuple(f"f{k}" for k in range(len(sizes)))
        self.image_shape = (1, 1, len(sizes))

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self.factors_of(indices).astype(np.uint8)[:, None, None, :]


def factors_from_observations(observations: np.ndarray) -> np.ndarray:
    """Recover the factor indices (n, K) from FactorGrid observations in [0, 1]."""
    return np.rint(observations.reshape(len(observations), -1) * 255.0)
