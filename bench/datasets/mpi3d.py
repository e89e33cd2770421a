"""MPI3D (Gondal et al. 2019), final release: toy, realistic and real variants.

Each ``mpi3d_<variant>.npz`` holds ``images`` (1036800, 64, 64, 3) uint8 in row-major order
over object_color 6, object_shape 6, object_size 2, camera_height 3, background_color 3,
horizontal_axis 40, vertical_axis 40. The first two sizes are taken from the file length,
not hard-coded: disentanglement_lib's 4×4 belongs to an older toy file of 460,800 images.

``np.load(mmap_mode="r")`` is silently ignored for npz, which would pull 12.7 GB into
memory, so the array is streamed once into a memory-mapped ``.npy``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.datasets.files import (
    DatasetFileError,
    cached_array,
    data_dir,
    expect,
    require,
)
from bench.datasets.ground_truth import GroundTruthData

VARIANTS = ("toy", "realistic", "real")
STATE_NAMES = (
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "horizontal_axis",
    "vertical_axis",
)
SIZES_BY_LENGTH = {
    1_036_800: (6, 6, 2, 3, 3, 40, 40),  # final release, all three variants
    460_800: (4, 4, 2, 3, 3, 40, 40),  # the older toy file disentanglement_lib downloads
}


class MPI3D(GroundTruthData):
    state_names = STATE_NAMES
    image_shape = (64, 64, 3)
    description = "MPI3D toy/realistic/real (variant=...): robot-arm scenes, 7 factors"

    def __init__(
        self,
        variant: str = "toy",
        path: str | None = None,
        factor_sizes: tuple[int, ...] | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise DatasetFileError(f"mpi3d: unknown variant {variant!r}; choose one of {VARIANTS}")
        path = Path(path) if path else data_dir() / "mpi3d" / f"mpi3d_{variant}.npz"
        require(path, f"mpi3d-{variant}")
        self.variant = variant
        with _open_npy_member(path, "images") as (member, shape, dtype, fortran):
            expect(
                len(shape) == 4 and shape[1:] == (64, 64, 3),
                path,
                "images of shape (N, 64, 64, 3)",
                f"shape {shape}",
            )
            expect(
                dtype == np.uint8 and not fortran,
                path,
                "C-ordered uint8 images",
                f"{dtype}{' (Fortran order)' if fortran else ''}",
            )
            sizes = tuple(factor_sizes) if factor_sizes else SIZES_BY_LENGTH.get(shape[0])
            expect(
                sizes is not None,
                path,
                f"{' or '.join(f'{n:,}' for n in SIZES_BY_LENGTH)} images",
                f"{shape[0]:,}",
            )
            expect(
                int(np.prod(sizes)) == shape[0],
                path,
                f"{int(np.prod(sizes)):,} images for factor sizes {sizes}",
                f"{shape[0]:,}",
            )
            self.state_sizes = sizes

            def copy(out: np.ndarray) -> None:
                flat = out.reshape(len(out), -1)
                chunk = 4096
                for start in range(0, len(out), chunk):
                    rows = min(chunk, len(out) - start)
                    data = member.read(rows * flat.shape[1])
                    expect(
                        len(data) == rows * flat.shape[1],
                        path,
                        f"{shape[0]:,} images of 12,288 bytes",
                        "a truncated array",
                    )
                    flat[start : start + rows] = np.frombuffer(data, np.uint8).reshape(rows, -1)

            self._images = cached_array(f"mpi3d-{variant}", path, shape, np.uint8, copy)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(indices)]


@contextmanager
def _open_npy_member(path: Path, key: str) -> Iterator[tuple]:
    """``<key>.npy`` inside an npz: a stream positioned at its data, its shape, dtype, order."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetFileError(f"{path}: expected an npz archive, found {error}") from None
    with archive:
        names = archive.namelist()
        expect(
            f"{key}.npy" in names,
            path,
            f"an array {key!r}",
            sorted(n.removesuffix(".npy") for n in names),
        )
        with archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            yield member, shape, dtype, fortran
