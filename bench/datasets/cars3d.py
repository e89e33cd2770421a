"""Cars3D (Reed et al. 2015): 183 car models × 24 azimuths × 4 elevations.

The archive ``nips2015-analogy-data.tar.gz`` holds ``data/cars/list.txt`` and one MATLAB file
``car_XXX_mesh.mat`` per model with ``im`` (128, 128, 3, 24, 4) uint8 = (H, W, RGB, azimuth,
elevation). Factors in disentanglement_lib's order: elevation 4, azimuth 24, object_type.
Objects are numbered in sorted name order (dlib uses ``os.listdir`` order, which depends on
the filesystem). Images are resized to 64×64 with Lanczos, once, into a memory-mapped cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.datasets.files import (
    DatasetFileError,
    cached_array,
    data_dir,
    expect,
    expect_array,
    lanczos_resize,
    require,
)
from bench.datasets.ground_truth import GroundTruthData


class Cars3D(GroundTruthData):
    state_names = ("elevation", "azimuth", "object_type")
    image_shape = (64, 64, 3)
    description = "Cars3D (Reed et al. 2015): 17,568 renders of 183 car models"

    def __init__(self, path: str | None = None) -> None:
        folder = Path(path) if path else data_dir() / "cars3d" / "data" / "cars"
        listing = require(folder / "list.txt", "cars3d")
        names = sorted({line.strip().removesuffix(".mat") for line in listing.read_text().split()})
        expect(len(names) > 0, listing, "a list of car model names", "an empty file")
        files = [require(folder / f"{name}.mat", "cars3d") for name in names]
        self.object_names = tuple(names)
        self.state_sizes = (4, 24, len(names))

        def convert(out: np.ndarray) -> None:
            grid = out.reshape(4, 24, len(names), 64, 64, 3)
            for obj, file in enumerate(files):
                views = _read_views(file)  # (128, 128, 3, azimuth, elevation)
                for elevation in range(4):
                    for azimuth in range(24):
                        grid[elevation, azimuth, obj] = lanczos_resize(
                            views[:, :, :, azimuth, elevation]
                        )

        self._images = cached_array("cars3d", listing, (len(self), 64, 64, 3), np.uint8, convert)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(indices)]


def _read_views(path: Path) -> np.ndarray:
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as error:
        raise DatasetFileError(f"{path}: expected a MATLAB file, found {error}") from None
    expect("im" in content, path, "a variable 'im'", sorted(k for k in content if k[0] != "_"))
    expect_array(path, "im", content["im"], (128, 128, 3, 24, 4), np.uint8)
    return content["im"]
