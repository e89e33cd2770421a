"""Write 8×8 sample grids of the procedural datasets to docs/ (random factors, seed 0).

python docs/sample_grids.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import bench.datasets


def sample_grid(name: str, seed: int = 0) -> np.ndarray:
    dataset = bench.datasets.load(name)
    indices = np.random.default_rng(seed).integers(0, len(dataset), 64)
    images = dataset.images(indices)
    images = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=128)
    size, channels = images.shape[1], images.shape[3]
    grid = images.reshape(8, 8, size, size, channels).transpose(0, 2, 1, 3, 4)
    return grid.reshape(8 * size, 8 * size, channels).squeeze()


if __name__ == "__main__":
    for name in ("shapes3d-procedural", "dsprites-procedural"):
        path = Path(__file__).parent / f"{name}.png"
        Image.fromarray(sample_grid(name)).save(path)
        print(path)
