"""SmallNORB (LeCun et al. 2004), training and testing sets together, as disentanglement_lib.

Six NORB binary matrices (optionally gzipped): ``dat`` (24300, 2, 96, 96) uint8 stereo pairs
(camera 0 is used), ``cat`` (24300,) int32 category, ``info`` (24300, 4) int32 instance,
elevation, azimuth (0, 2, ..., 34), lighting. Factors: category 5, elevation 9, azimuth 18,
lighting 6; instance (10) is a nuisance drawn afresh for every observation. Rows are not in
grid order, so a lookup table maps each factor tuple to its row. Images are resized
96 → 64 with Lanczos, once, into a memory-mapped cache.
"""

from __future__ import annotations

import gzip
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

SPLITS = ("5x46789x9x18x6x2x96x96-training", "5x01235x9x18x6x2x96x96-testing")
MAGIC_DTYPES = {
    0x1E3D4C55: np.uint8,
    0x1E3D4C54: np.int32,
    0x1E3D4C51: np.float32,
    0x1E3D4C53: np.float64,
    0x1E3D4C56: np.int16,
}


def file_name(split: str, kind: str) -> str:
    return f"smallnorb-{split}-{kind}.mat"


def read_norb_matrix(path: Path) -> np.ndarray:
    """A NORB binary matrix: int32 magic, int32 ndim, max(3, ndim) int32 dims, C-order data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise DatasetFileError(f"{path}: expected a NORB matrix, found {error}") from None
    expect(len(raw) >= 20, path, "a NORB header of at least 20 bytes", f"{len(raw)} bytes")
    magic, ndim = np.frombuffer(raw[:8], "<i4")
    expect(int(magic) & 0xFFFFFFFF in MAGIC_DTYPES, path, "a NORB magic number", hex(magic))
    dtype = np.dtype(MAGIC_DTYPES[int(magic) & 0xFFFFFFFF]).newbyteorder("<")
    header = 8 + 4 * max(3, int(ndim))
    shape = tuple(int(d) for d in np.frombuffer(raw[8:header], "<i4")[:ndim])
    size = int(np.prod(shape)) * dtype.itemsize
    expect(
        len(raw) - header == size,
        path,
        f"{size} data bytes for shape {shape}",
        f"{len(raw) - header}",
    )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class SmallNORB(GroundTruthData):
    state_names = ("category", "instance", "elevation", "azimuth", "lighting")
    nuisance_factors = ("instance",)
    image_shape = (64, 64, 1)
    description = "SmallNORB: 48,600 grey 96→64 toy photos; instance is a nuisance"

    def __init__(self, path: str | None = None) -> None:
        folder = Path(path) if path else data_dir() / "smallnorb"
        parts = [_read_labels(folder, split) for split in SPLITS]
        features = np.concatenate([f for f, _ in parts])
        first_file = parts[0][1]
        self.state_sizes = tuple(int(s) for s in features.max(axis=0) + 1)
        atoms = np.ravel_multi_index(tuple(features.T), self.state_sizes)
        counts = np.bincount(atoms, minlength=len(self))
        expect(
            np.all(counts == 1),
            first_file,
            "every factor combination exactly once",
            f"{int(np.sum(counts == 0))} missing and {int(np.sum(counts > 1))} repeated",
        )
        self._row_of = np.empty(len(self), dtype=np.int64)
        self._row_of[atoms] = np.arange(len(atoms))

        def convert(out: np.ndarray) -> None:
            start = 0
            for split_features, dat_file in parts:
                dat = read_norb_matrix(dat_file)
                expect_array(dat_file, "images", dat, (len(split_features), 2, 96, 96), np.uint8)
                for row in range(len(dat)):
                    out[start + row, :, :, 0] = lanczos_resize(dat[row, 0])
                start += len(dat)

        self._images = cached_array(
            "smallnorb", first_file, (len(atoms), 64, 64, 1), np.uint8, convert
        )

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images[self._row_of[np.asarray(indices)]]


def _read_labels(folder: Path, split: str) -> tuple[np.ndarray, Path]:
    """dlib's features (category, instance, elevation, azimuth / 2, lighting) and the dat file."""

    def find(kind: str) -> Path:
        plain = folder / file_name(split, kind)
        gz = plain.with_name(plain.name + ".gz")
        return gz if gz.exists() else require(plain, "smallnorb")

    dat_file, cat_file, info_file = find("dat"), find("cat"), find("info")
    category, info = read_norb_matrix(cat_file), read_norb_matrix(info_file)
    expect_array(cat_file, "categories", category, (None,), np.int32)
    expect_array(info_file, "info", info, (len(category), 4), np.int32)
    expect(
        np.all(info[:, 2] % 2 == 0),
        info_file,
        "even azimuths 0, 2, ..., 34",
        f"odd value {info[info[:, 2] % 2 == 1, 2][:1].tolist()}",
    )
    expect(
        category.min(initial=0) >= 0 and info.min(initial=0) >= 0,
        info_file,
        "non-negative labels",
        "negative values",
    )
    features = np.stack(
        [category, info[:, 0], info[:, 1], info[:, 2] // 2, info[:, 3]], axis=1
    ).astype(np.int64)
    return features, dat_file
