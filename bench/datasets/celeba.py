"""CelebA (Liu et al. 2015): aligned face photos with 40 binary attributes.

An attribute dataset, not a factor grid: images and labels. Files under the root:
``img_align_celeba/000001.jpg`` ... (178 × 218 JPEG) and ``list_attr_celeba.txt`` (a count line,
a line of 40 names, then ``filename v1 ... v40`` with values in {-1, 1}, mapped to {0, 1});
optionally ``list_eval_partition.txt`` (0 train, 1 valid, 2 test) for ``split``.

Crop presets, each cached once as 64×64 uint8 in a memory-mapped array:
- ``disdiff``: the 128×128 box at top 57, left 25 (centre x 89, y 121), resized to 64 with
  bilinear filtering (what DisDiff and DiTi train on);
- ``tad``: shorter side resized to 96 (96 × 117), then the central 64×64 (the crop DisDiff's
  TAD evaluation uses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.datasets.attribute_data import AttributeImages
from bench.datasets.files import DatasetFileError, cached_array, data_dir, expect, require

CROPS = ("disdiff", "tad")
SPLITS = ("all", "train", "valid", "test")
MANUAL = (
    "CelebA is on Google Drive and cannot be fetched automatically: download img_align_celeba.zip "
    "and list_attr_celeba.txt (and list_eval_partition.txt) from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, unzip the images into {root}, put the "
    "text files beside them, then run `bench data verify celeba` (or use a procedural dataset)"
)


def crop_image(image, crop: str):
    """A PIL image (178 × 218) -> the 64×64 PIL image of the crop preset."""
    from PIL import Image

    if crop == "disdiff":
        return image.crop((25, 57, 25 + 128, 57 + 128)).resize((64, 64), Image.Resampling.BILINEAR)
    # torchvision Resize(96) then CenterCrop(64), with its rounding.
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(96 * long / short)
    size = (96, new_long) if width <= height else (new_long, 96)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - 64) / 2.0)
    top = round((size[1] - 64) / 2.0)
    return image.crop((left, top, left + 64, top + 64))


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """File names, the 40 attribute names, and labels (N, 40) uint8 in {0, 1}."""
    lines = path.read_text().splitlines()
    expect(
        len(lines) >= 2, path, "a count line and a line of attribute names", f"{len(lines)} lines"
    )
    names = lines[1].split()
    expect(len(names) == 40, path, "40 attribute names on line 2", f"{len(names)}")
    rows = [line.split() for line in lines[2:] if line.strip()]
    expect(
        lines[0].strip() == str(len(rows)),
        path,
        f"a count line of {len(rows)}",
        repr(lines[0].strip()),
    )
    for number, row in enumerate(rows, start=3):
        expect(
            len(row) == 41,
            path,
            "a file name and 40 values per line",
            f"{len(row)} fields on line {number}",
        )
    values = np.array([row[1:] for row in rows], dtype=np.int64)
    expect(
        np.isin(values, (-1, 1)).all(),
        path,
        "attribute values -1 or 1",
        sorted(set(np.unique(values).tolist()) - {-1, 1}),
    )
    return [row[0] for row in rows], names, (values > 0).astype(np.uint8)


def read_partition(path: Path, files: list[str]) -> np.ndarray:
    """list_eval_partition.txt: 0 train, 1 valid, 2 test for each of ``files``."""
    partition = dict(line.split() for line in path.read_text().splitlines() if line.strip())
    return np.array([int(partition.get(f, -1)) for f in files])


class CelebA(AttributeImages):
    """Images (n, 64, 64, 3) uint8 and attributes (n, 40) in {0, 1}."""

    image_shape = (64, 64, 3)
    description = "CelebA: 202,599 aligned faces, 40 binary attributes (crop=disdiff|tad)"

    def __init__(self, path: str | None = None, crop: str = "disdiff", split: str = "all"):
        if crop not in CROPS or split not in SPLITS:
            raise DatasetFileError(
                f"celeba: crop must be one of {CROPS} and split one of {SPLITS}, "
                f"got crop={crop!r}, split={split!r}"
            )
        root = Path(path) if path else data_dir() / "celeba"
        manual = MANUAL.format(root=root / "img_align_celeba")
        attribute_file = require(root / "list_attr_celeba.txt", "celeba", manual)
        files, self.attribute_names, labels = read_attributes(attribute_file)
        keep = np.arange(len(files))
        partition_file = root / "list_eval_partition.txt"
        if split != "all":
            partition = read_partition(require(partition_file, "celeba", manual), files)
            keep = np.flatnonzero(partition == SPLITS.index(split) - 1)
        self.files = [files[i] for i in keep]
        self.attributes = labels[keep]
        # Train (0), valid (1), test (2) per image, for the attribute probe: the official
        # partition, which is the index split DiTi uses (the first 162,770 of the 202,599
        # images train, the next 19,867 valid); None for a single split or a partial copy
        # without list_eval_partition.txt.
        self.partition: np.ndarray | None = None
        if split == "all" and partition_file.is_file():
            self.partition = read_partition(partition_file, files)
        elif split == "all" and len(files) == 202_599:
            self.partition = np.repeat([0, 1, 2], [162_770, 19_867, 19_962])
        image_dir = root / "img_align_celeba"
        paths = [require(image_dir / f, "celeba", manual) for f in self.files]

        def convert(out: np.ndarray) -> None:
            from PIL import Image, UnidentifiedImageError

            for i, image_path in enumerate(paths):
                try:
                    with Image.open(image_path) as image:
                        out[i] = np.asarray(crop_image(image.convert("RGB"), crop))
                except (UnidentifiedImageError, OSError) as error:
                    raise DatasetFileError(
                        f"{image_path}: expected a JPEG, found {error}"
                    ) from None

        self._images = cached_array(
            f"celeba-{crop}-{split}", attribute_file, (len(paths), 64, 64, 3), np.uint8, convert
        )

    def __len__(self) -> int:
        return len(self.files)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(indices)]
