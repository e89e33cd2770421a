"""The ground-truth dataset contract: disentanglement_lib's ``GroundTruthData`` plus a few extras.

A dataset is a full grid of discrete factors stored in row-major (C) order: the last factor
varies fastest, as in every real dataset file, and an image's flat index is the row-major
position of its factor tuple. Some stored factors are nuisances that metrics do not see
(SmallNORB's instance, dSprites' constant colour); as in dlib's ``SplitDiscreteStateSpace``,
they are drawn uniformly from the RandomState whenever an observation is sampled.

Subclasses set the factor table and implement ``images``; sampling exactly as dlib draws and
index <-> factor conversion are here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class GroundTruthData(ABC):
    # All stored factors, in storage order (the index is row-major over these).
    state_names: tuple[str, ...]
    state_sizes: tuple[int, ...]
    # Stored factors that metrics do not see; they are resampled for every observation.
    nuisance_factors: tuple[str, ...] = ()
    image_shape: tuple[int, int, int]  # H, W, C of the uint8 images
    description: str = ""

    # --- disentanglement_lib's interface -------------------------------------------------

    @property
    def factor_names(self) -> tuple[str, ...]:
        """The factors metrics see (the stored ones minus the nuisances)."""
        return tuple(n for n in self.state_names if n not in self.nuisance_factors)

    @property
    def factors_num_values(self) -> tuple[int, ...]:
        return tuple(self.state_sizes[self.state_names.index(n)] for n in self.factor_names)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

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
        state = self.complete_factors(factors, random_state)
        return self.images(self.index_of(state)).astype(np.float32) / 255.0

    def sample(
        self, num: int, random_state: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return self.sample(num, random_state)[1]

    # --- extras ---------------------------------------------------------------------------

    def complete_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        """Stored-factor tuples for latent ones: nuisances drawn in storage order, as dlib."""
        factors = np.asarray(factors, dtype=np.int64)
        if not self.nuisance_factors:
            return factors
        state = np.zeros((len(factors), len(self.state_sizes)), dtype=np.int64)
        latent = [self.state_names.index(n) for n in self.factor_names]
        state[:, latent] = factors
        for k, (name, size) in enumerate(zip(self.state_names, self.state_sizes, strict=True)):
            if name in self.nuisance_factors:
                state[:, k] = random_state.randint(size, size=len(factors))
        return state

    def __len__(self) -> int:
        return int(np.prod(self.state_sizes))

    def index_of(self, state: np.ndarray) -> np.ndarray:
        """Flat row-major index of stored-factor tuples (n, len(state_sizes))."""
        state = np.asarray(state, dtype=np.int64)
        return np.ravel_multi_index(tuple(state.T), self.state_sizes)

    def factors_of(self, index: np.ndarray) -> np.ndarray:
        """Stored-factor tuples (n, len(state_sizes)) of flat indices."""
        index = np.asarray(index, dtype=np.int64)
        return np.stack(np.unravel_index(index, self.state_sizes), axis=-1)

    @abstractmethod
    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (n, H, W, C) in [0, 255] for flat indices: the fast path for training."""


def factor_attributes(
    factors: np.ndarray, sizes: list[int], names: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Binary attributes of factor indices (n, K): one per factor with more than one value,
    "the value index is in the factor's upper half" (index ≥ values // 2), named
    ``<factor>_upper`` (``factor<k>_upper`` without ``names``)."""
    varying = [k for k, size in enumerate(sizes) if size > 1]
    attributes = np.stack([factors[:, k] >= sizes[k] // 2 for k in varying], axis=1)
    names = names or [f"factor{k}" for k in range(len(sizes))]
    return attributes.astype(np.float32), [f"{names[k]}_upper" for k in varying]
