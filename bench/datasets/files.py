"""Where dataset files and caches live, and the checks every loader makes on what it reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import platformdirs

from bench.errors import BenchError
from bench.fileio import atomic_path


class DatasetFileError(BenchError):
    """A dataset file is missing or not what its loader expects."""


def data_dir() -> Path:
    """Root of downloaded datasets: ``$BENCH_DATA``, else the user data dir."""
    return Path(os.environ.get("BENCH_DATA") or platformdirs.user_data_dir("drlbench"))


def cache_dir() -> Path:
    """Root of derived files (render caches, memory-mappable copies): ``$BENCH_CACHE``."""
    return Path(os.environ.get("BENCH_CACHE") or platformdirs.user_cache_dir("drlbench"))


def require(path: Path, dataset: str, how_to_get: str | None = None) -> Path:
    """``path`` if it exists, else an error saying where it goes, how to get it, and which
    procedural stand-in runs without it."""
    if not path.exists():
        how = how_to_get or f"get it with `bench data download {dataset}`"
        stand_in = "dsprites-procedural" if dataset == "dsprites" else "shapes3d-procedural"
        raise DatasetFileError(
            f"dataset {dataset!r}: {path} is missing; {how} "
            f"(or use --dataset {stand_in}, which needs no download)"
        )
    return path


def expect(condition: bool, path: Path, expected: str, found: object) -> None:
    if not condition:
        raise DatasetFileError(f"{path}: expected {expected}, found {found}")


def expect_array(path: Path, name: str, array, shape: tuple, dtype) -> None:
    """Check an array's shape (None: any size on that axis) and dtype."""
    ok = len(array.shape) == len(shape) and all(
        want is None or want == got for want, got in zip(shape, array.shape, strict=False)
    )
    want_shape = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    expect(ok, path, f"{name} of shape {want_shape}", f"shape {tuple(array.shape)}")
    expect(array.dtype == np.dtype(dtype), path, f"{name} of dtype {np.dtype(dtype)}", array.dtype)


def expect_row_major(path: Path, factors: np.ndarray, sizes: tuple[int, ...]) -> None:
    """Rows must enumerate the factor grid in row-major order, each tuple exactly once."""
    expected_rows = int(np.prod(sizes))
    expect(
        len(factors) == expected_rows,
        path,
        f"{expected_rows} rows for factor sizes {sizes}",
        f"{len(factors)} rows",
    )
    index = np.ravel_multi_index(tuple(np.asarray(factors, dtype=np.int64).T), sizes)
    wrong = np.flatnonzero(index != np.arange(len(index)))
    expect(
        wrong.size == 0,
        path,
        "rows in row-major factor order",
        f"row {wrong[0] if wrong.size else 0} holding factors {factors[wrong[:1]].tolist()}",
    )


def open_hdf5(path: Path, keys: tuple[str, ...]):
    """An open h5py File holding every dataset in ``keys``, or a one-line error."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DatasetFileError(f"{path}: expected an HDF5 file, found {error}") from None
    if not all(key in file for key in keys):
        found = sorted(file.keys())
        file.close()
        raise DatasetFileError(f"{path}: expected datasets {', '.join(keys)}, found {found}")
    return file


def cached_array(
    name: str, source: Path, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]
) -> np.ndarray:
    """A memory-mapped ``.npy`` copy of data derived from ``source``, built once by ``fill``.

    The cache key holds the source's name, size and modification time, so a replaced source
    file is converted again. The copy is written to a temporary file and renamed when full.
    """
    stat = source.stat()
    path = cache_dir() / name / f"{source.name}-{stat.st_size}-{int(stat.st_mtime)}.npy"
    if not path.is_file():
        with atomic_path(path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            fill(array)
            array.flush()
            del array
    return np.load(path, mmap_mode="r")


def lanczos_resize(image: np.ndarray, size: int = 64) -> np.ndarray:
    """Resize a uint8 image (H, W[, C]) to size × size with Lanczos, as dlib's PIL ANTIALIAS."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
