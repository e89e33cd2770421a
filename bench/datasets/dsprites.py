"""dSprites: the real file, and a look-alike rendered from factor values (no file needed).

Same factor table and index order as disentanglement_lib's ``dsprites_full`` (the real
file's constant colour factor is dropped): shape 3 (square, ellipse, heart), scale 6
(linspace(0.5, 1, 6)), orientation 40 (linspace(0, 2π, 40): both ends included, so
index 0 and 39 give the same image, as in the real file), posX 32, posY 32 (linspace(0, 1, 32)).
Images are binary 64×64, white sprite on black, with no anti-aliasing, like the original.

Rendering is a pure, vectorised function of the factor indices: the same index always gives
the same bytes, on any machine.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from bench.datasets.files import (
    DatasetFileError,
    data_dir,
    expect,
    expect_array,
    expect_row_major,
    open_hdf5,
    require,
)
from bench.datasets.ground_truth import GroundTruthData

SIZE = 64
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)

# Geometry in pixels: sprite centres span [CENTRE_MIN, CENTRE_MIN + CENTRE_SPAN] on each axis;
# a scale-1 square has half-side HALF_SIZE.
CENTRE_MIN = 12.0
CENTRE_SPAN = 40.0
HALF_SIZE = 9.0


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the sprite's canonical frame (unit half-size, y up)."""
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if shape == 1:  # ellipse with a 2:1 axis ratio, long axis along u
        return u**2 + (v / 0.5) ** 2 <= 1.0
    # heart: (x² + y² − 1)³ − x² y³ ≤ 0, its point down at orientation 0
    x, y = 1.1 * u, 1.1 * v + 0.12
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


def _column(values: np.ndarray) -> np.ndarray:
    """Per-image values as float32 (n, 1, 1), to broadcast over pixels."""
    return values.astype(np.float32)[:, None, None]


def render_dsprites(factors: np.ndarray) -> np.ndarray:
    """uint8 images (n, 64, 64, 1) in {0, 255} for factor indices (n, 5)."""
    factors = np.asarray(factors, dtype=np.int64)
    shape, scale, orientation, pos_x, pos_y = factors.T
    # Round so that orientation 2π gives exactly the bytes of orientation 0.
    theta = ORIENTATIONS[orientation]
    cos = _column(np.round(np.cos(theta), 12))
    sin = _column(np.round(np.sin(theta), 12))
    radius = _column(SCALES[scale] * HALF_SIZE)
    centre_x = _column(CENTRE_MIN + CENTRE_SPAN * POSITIONS[pos_x])
    centre_y = _column(CENTRE_MIN + CENTRE_SPAN * POSITIONS[pos_y])
    pixel = np.arange(SIZE, dtype=np.float32) + 0.5
    dx = pixel[None, None, :] - centre_x  # posX moves the sprite along columns
    dy = centre_y - pixel[None, :, None]  # image rows grow downwards; the sprite frame is y-up
    # Rotate pixel offsets by −θ into the sprite frame (the sprite turns counter-clockwise).
    u = (cos * dx + sin * dy) / radius
    v = (cos * dy - sin * dx) / radius
    out = np.zeros((len(factors), SIZE, SIZE, 1), dtype=np.uint8)
    for s in range(len(SHAPES)):
        rows = np.flatnonzero(shape == s)
        if rows.size:
            out[rows, :, :, 0] = np.where(_inside(s, u[rows], v[rows]), 255, 0)
    return out


class DSpritesProcedural(GroundTruthData):
    """dSprites look-alike rendered from factors (737,280 binary 64×64 images)."""

    state_names = ("shape", "scale", "orientation", "posX", "posY")
    state_sizes = (3, 6, 40, 32, 32)
    image_shape = (SIZE, SIZE, 1)
    description = "dSprites rendered from factor values (no download)"

    def images(self, indices: np.ndarray) -> np.ndarray:
        return render_dsprites(self.factors_of(indices))


NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
HDF5_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"
STATE_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")


class DSprites(GroundTruthData):
    """DeepMind's dSprites from its npz or hdf5 file, as disentanglement_lib's ``dsprites_full``:
    factors shape, scale, orientation, posX, posY; the constant colour is a nuisance. The
    duplicated orientation (0 and 2π) is kept as in the file. Images are held bit-packed
    (377 MB instead of 3 GB)."""

    state_names = STATE_NAMES
    nuisance_factors = ("color",)
    image_shape = (64, 64, 1)
    description = "dSprites (DeepMind): 737,280 binary 64×64 sprites"

    def __init__(self, path: str | None = None) -> None:
        path = Path(path) if path else data_dir() / "dsprites" / HDF5_NAME
        require(path, "dsprites")
        if path.suffix == ".npz":
            images, classes = _read_npz(path)
        else:
            images, classes = _read_hdf5(path)
        expect_array(path, "imgs", images, (None, 64, 64), np.uint8)
        expect_array(path, "latent classes", classes, (len(images), 6), classes.dtype)
        expect(
            int(images.max(initial=0)) <= 1,
            path,
            "binary imgs in {0, 1}",
            f"values up to {images.max()}",
        )
        self.state_sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
        expect_row_major(path, classes, self.state_sizes)
        self._packed = np.packbits(images, axis=-1)  # (N, 64, 8)

    def images(self, indices: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(self._packed[np.asarray(indices)], axis=-1)
        return (bits * np.uint8(255))[..., None]


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The metadata entry is a python-2 pickle: it needs allow_pickle and latin1 decoding.
    try:
        with np.load(path, allow_pickle=True, encoding="latin1") as data:
            missing = {"imgs", "latents_classes"} - set(data.files)
            expect(not missing, path, "arrays imgs and latents_classes", sorted(data.files))
            if "metadata" in data.files:
                names = tuple(data["metadata"][()]["latents_names"])
                expect(names == STATE_NAMES, path, f"latents_names {STATE_NAMES}", names)
            return data["imgs"], data["latents_classes"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise DatasetFileError(f"{path}: expected a dSprites npz archive, found {error}") from None


def _read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_hdf5(path, ("imgs", "latents/classes")) as file:
        return file["imgs"][()], file["latents/classes"][()]
