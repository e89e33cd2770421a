"""CelebA's stand-in: procedural 3D Shapes renders as an attribute dataset, no download needed.

CelebA is images with binary attributes and a train/valid/test partition, not a factor grid:
TAD, the attribute probe and FID read exactly that (``bench/datasets/celeba.py``). This
dataset offers the same contract on images that can be rendered here, so the whole CelebA
path (training, TAD, the probe, FID, the report beside CelebA's published rows) runs on a
CPU and in CI.

- Images: ``size`` renders of ``shapes3d-procedural``, drawn without replacement by a fixed
  generator (the same rows on every machine), in that random order.
- Attributes: one per factor, "the factor's value index is in its upper half"
  (``floor_hue_upper``, ..., ``orientation_upper``): six independent binary attributes.
- Partition: CelebA's proportions by index (162,770 / 19,867 / 19,962 of 202,599 for
  train / valid / test); the rows are in random order, so an index split is a random split.

It stands in for ``celeba`` (``bench.datasets.STANDS_IN_FOR``): a run takes the settings the
method files and presets give CelebA, and ``bench report --reported`` sets CelebA's published
rows beside it, marked as reported on CelebA. Its numbers test the pipeline; they say
nothing about faces.
"""

from __future__ import annotations

import numpy as np

from bench.datasets.attribute_data import AttributeImages
from bench.datasets.files import DatasetFileError
from bench.datasets.ground_truth import factor_attributes
from bench.datasets.shapes3d import FACTOR_NAMES, FACTOR_SIZES
from bench.datasets.shapes3d_procedural import Shapes3DProcedural

SUBSET_SEED = 0  # part of the dataset's definition: which renders it holds
CELEBA_SPLIT = (162_770, 19_867, 19_962)


class Shapes3DAttributes(AttributeImages):
    """Images (size, 64, 64, 3) uint8, attributes (size, 6) in {0, 1}, a CelebA-like split."""

    image_shape = Shapes3DProcedural.image_shape
    description = "CelebA's stand-in: procedural 3D Shapes with 6 binary attributes (no download)"

    def __init__(self, size: int = 20_000, cache: str | None = None) -> None:
        self.source = Shapes3DProcedural(cache)
        total = len(self.source)
        if not 10 <= size <= total:
            raise DatasetFileError(
                f"shapes3d-attributes: size must be between 10 and {total}, got {size}"
            )
        self.rows = np.random.RandomState(SUBSET_SEED).choice(total, size, replace=False)
        attributes, self.attribute_names = factor_attributes(
            self.source.factors_of(self.rows), list(FACTOR_SIZES), list(FACTOR_NAMES)
        )
        self.attributes = attributes.astype(np.uint8)  # as CelebA's
        train, valid, _ = (round(size * n / sum(CELEBA_SPLIT)) for n in CELEBA_SPLIT)
        self.partition = np.repeat([0, 1, 2], [train, valid, size - train - valid])

    def __len__(self) -> int:
        return len(self.rows)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self.source.images(self.rows[np.asarray(indices)])
