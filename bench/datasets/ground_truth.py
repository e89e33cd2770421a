"""The ground-truth dataset contract: disentanglement_lib's ``GroundTruthData`` plus a few extras.

A dataset is a full grid of discrete factors. Each image has a flat index, which is the
row-major (C-order) position of its factor tuple: the last factor varies fastest, as in
every real dataset file. Subclasses give the factor table and ``images(indices)``; the
rest (random sampling exactly as disentanglement_lib draws, index <-> factors) is here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class GroundTruthData(ABC):
    """Base class: subclasses set ``factor_names``, ``factors_num_values``, ``image_shape``
    and implement ``images``."""

    factor_names: tuple[str, ...]
    factors_num_values: tuple[int, ...]
    image_shape: tuple[int, int, int]  # H, W, C of the uint8 images
    description: str = ""

    # --- disentanglement_lib's interface -------------------------------------------------

    @property
    def num_factors(self) -> int:
        return len(self.factors_num_values)

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """Uniform factor indices, drawn column by column as disentanglement_lib does.

        The draw order matters: metric numbers equal dlib's only if the same
        ``randint`` calls consume the RandomState in the same order.
        """
        factors = np.zeros((num, self.num_factors), dtype=np.int64)
        for k, size in enumerate(self.factors_num_values):
            factors[:, k] = random_state.randint(size, size=num)
        return factors

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        """Float32 images in [0, 1], shape (n, H, W, C), as dlib hands them to metrics."""
        del random_state  # every factor is exposed: nothing is resampled
        return self.images(self.index_of(factors)).astype(np.float32) / 255.0

    def sample(
        self, num: int, random_state: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return self.sample(num, random_state)[1]

    # --- extras ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(np.prod(self.factors_num_values))

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """Flat row-major index of each factor tuple: ``factors`` is (n, num_factors)."""
        factors = np.asarray(factors, dtype=np.int64)
        return np.ravel_multi_index(tuple(factors.T), self.factors_num_values)

    def factors_of(self, index: np.ndarray) -> np.ndarray:
        """Factor tuples (n, num_factors) of flat indices."""
        index = np.asarray(index, dtype=np.int64)
        return np.stack(np.unravel_index(index, self.factors_num_values), axis=-1)

    @abstractmethod
    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (n, H, W, C) in [0, 255] for flat indices: the fast path for training."""
