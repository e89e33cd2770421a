"""The attribute dataset contract: images with binary attribute labels and a train/valid/test
partition, not a grid of factors (CelebA and its procedural stand-in). TAD and the attribute
probe score these; code tells them from factor datasets by this type."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class AttributeData(ABC):
    """What TAD and the attribute probe read: per row its binary attributes and its part of
    the partition, and observations of rows (images, or whatever the representation function
    takes)."""

    attributes: np.ndarray  # (n, A) in {0, 1}
    attribute_names: list[str]
    # Per row 0 (train), 1 (valid) or 2 (test); None when the dataset has no partition.
    partition: np.ndarray | None = None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def observations(self, indices: np.ndarray) -> np.ndarray:
        """What the representation function takes for these rows."""


class AttributeImages(AttributeData):
    """An attribute dataset of uint8 images (n, H, W, C)."""

    image_shape: tuple[int, int, int]  # H, W, C
    description: str = ""

    @abstractmethod
    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (n, H, W, C) in [0, 255]: the fast path for training."""

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    def observations(self, indices: np.ndarray) -> np.ndarray:
        """Float images in [0, 1], (n, H, W, C): what metrics see."""
        return self.images(indices).astype(np.float32) / 255.0
