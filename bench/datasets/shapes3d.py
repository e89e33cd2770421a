"""DeepMind's 3D Shapes (``3dshapes.h5``): factor table shared with the procedural stand-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.datasets.files import (
    cached_array,
    data_dir,
    expect,
    expect_array,
    expect_row_major,
    open_hdf5,
    require,
)
from bench.datasets.ground_truth import GroundTruthData

FILE_NAME = "3dshapes.h5"
FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
HUES = np.linspace(0.0, 0.9, 10)  # hue wraps, so 10 values "in [0, 1]" stop at 0.9
SCALES = np.linspace(0.75, 1.25, 8)
SHAPES = ("cube", "cylinder", "sphere", "capsule")
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)  # degrees of camera azimuth around the object


class Shapes3D(GroundTruthData):
    """``3dshapes.h5``: ``images`` (480000, 64, 64, 3) uint8 and ``labels`` (480000, 6) float64
    raw factor values, mapped to indices by ranking each column's distinct values. Images
    are copied once into a memory-mapped ``.npy`` (random reads from HDF5 are slow)."""

    state_names = FACTOR_NAMES
    image_shape = (64, 64, 3)
    description = "3D Shapes (DeepMind): 480,000 RGB 64×64 renders"

    def __init__(self, path: str | None = None, factor_sizes: tuple[int, ...] = FACTOR_SIZES):
        path = Path(path) if path else data_dir() / "shapes3d" / FILE_NAME
        require(path, "shapes3d")
        with open_hdf5(path, ("images", "labels")) as file:
            images, labels = file["images"], file["labels"]
            expect_array(path, "images", images, (None, 64, 64, 3), np.uint8)
            expect_array(path, "labels", labels, (len(images), 6), np.float64)
            columns = [np.unique(column, return_inverse=True) for column in labels[()].T]
            sizes = tuple(len(values) for values, _ in columns)
            expect(sizes == tuple(factor_sizes), path, f"factor sizes {tuple(factor_sizes)}", sizes)
            expect_row_major(path, np.stack([index for _, index in columns], axis=1), sizes)
            self.state_sizes = sizes

            def copy(out: np.ndarray) -> None:
                for start in range(0, len(images), 10_000):
                    out[start : start + 10_000] = images[start : start + 10_000]

            self._images = cached_array("shapes3d", path, images.shape, np.uint8, copy)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(indices)]
