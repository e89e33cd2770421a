"""Real-format loaders on small files written here in each dataset's own layout."""

from __future__ import annotations

import gzip

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from bench.datasets.cars3d import Cars3D
from bench.datasets.celeba import CelebA
from bench.datasets.dsprites import DSprites
from bench.datasets.files import DatasetFileError, lanczos_resize
from bench.datasets.mpi3d import MPI3D
from bench.datasets.shapes3d import Shapes3D
from bench.datasets.smallnorb import SPLITS, SmallNORB, file_name

RNG = np.random.default_rng(0)


def grid(sizes):
    """Every factor tuple of ``sizes`` in row-major order (last factor fastest)."""
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)


def one_line_error(call, *fragments):
    with pytest.raises(DatasetFileError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- dSprites -------------------------------------------------------------------------------

DSPRITES_SIZES = (1, 2, 2, 3, 2, 2)


def write_dsprites_npz(path, images=None, classes=None):
    classes = grid(DSPRITES_SIZES) if classes is None else classes
    images = (
        RNG.integers(0, 2, (len(classes), 64, 64), dtype=np.uint8) if images is None else images
    )
    metadata = {
        "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY"),
        "latents_sizes": np.array(DSPRITES_SIZES),
    }
    np.savez(
        path,
        imgs=images,
        latents_classes=classes,
        latents_values=classes.astype(float),
        metadata=np.array(metadata, dtype=object),
    )
    return images, classes


@pytest.mark.parametrize("kind", ["npz", "hdf5"])
def test_dsprites_maps_factors_index_and_image(tmp_path, kind):
    path = tmp_path / f"dsprites.{kind}"
    if kind == "npz":
        images, classes = write_dsprites_npz(path)
    else:
        classes = grid(DSPRITES_SIZES)
        images = RNG.integers(0, 2, (len(classes), 64, 64), dtype=np.uint8)
        with h5py.File(path, "w") as f:
            f["imgs"] = images
            f["latents/classes"] = classes
    data = DSprites(str(path))
    assert data.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert data.factors_num_values == (2, 2, 3, 2, 2) and len(data) == 48
    np.testing.assert_array_equal(data.index_of(classes), np.arange(48))
    np.testing.assert_array_equal(data.images(np.arange(48))[..., 0], images * 255)
    # The constant colour is a nuisance whose draw (randint(1)) consumes no random state.
    rs, reference = np.random.RandomState(5), np.random.RandomState(5)
    factors, observations = data.sample(10, rs)
    expected = np.stack([reference.randint(s, size=10) for s in (2, 2, 3, 2, 2)], axis=1)
    np.testing.assert_array_equal(factors, expected)
    assert rs.randint(1000) == reference.randint(1000)
    rows = data.index_of(np.concatenate([np.zeros((10, 1), int), factors], axis=1))
    np.testing.assert_array_equal(observations[..., 0], images[rows].astype(np.float32))


def test_dsprites_rejects_bad_files(tmp_path):
    path = tmp_path / "d.npz"
    write_dsprites_npz(path, images=np.zeros((48, 32, 32), np.uint8))
    one_line_error(lambda: DSprites(str(path)), str(path), "(N, 64, 64)", "(48, 32, 32)")
    write_dsprites_npz(path, images=np.zeros((48, 64, 64), np.float32))
    one_line_error(lambda: DSprites(str(path)), "dtype uint8", "float32")
    write_dsprites_npz(path, classes=grid(DSPRITES_SIZES)[::-1].copy())
    one_line_error(lambda: DSprites(str(path)), "row-major factor order")
    write_dsprites_npz(path)
    truncate(path)
    one_line_error(lambda: DSprites(str(path)), str(path))
    one_line_error(
        lambda: DSprites(str(tmp_path / "none.hdf5")),
        "is missing",
        "bench data download dsprites",
        "dsprites-procedural",
    )


# --- Shapes3D -------------------------------------------------------------------------------

SHAPES_SIZES = (2, 2, 2, 2, 2, 3)


def write_shapes3d(path, labels=None, images=None, label_dtype=np.float64):
    classes = grid(SHAPES_SIZES)
    if labels is None:
        values = [
            np.array([0.0, 0.5]),
            np.array([0.1, 0.9]),
            np.array([0.3, 0.6]),
            np.array([0.75, 1.25]),
            np.array([0.0, 3.0]),
            np.linspace(-30, 30, 3),
        ]
        labels = np.stack([values[k][classes[:, k]] for k in range(6)], axis=1)
    images = (
        RNG.integers(0, 256, (len(classes), 64, 64, 3), dtype=np.uint8)
        if images is None
        else images
    )
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = labels.astype(label_dtype)
    return images, classes


def test_shapes3d_maps_raw_labels_to_indices(tmp_path):
    path = tmp_path / "3dshapes.h5"
    images, classes = write_shapes3d(path)
    data = Shapes3D(str(path), factor_sizes=SHAPES_SIZES)
    assert data.factor_names[0] == "floor_hue" and data.factors_num_values == SHAPES_SIZES
    for index in (0, 17, 95):
        np.testing.assert_array_equal(data.factors_of([index])[0], classes[index])
        np.testing.assert_array_equal(data.images([index])[0], images[index])
    # the README formula, scaled down: ((((fh*2 + wh)*2 + oh)*2 + sc)*2 + sh)*3 + ori
    f = classes[37]
    assert (
        data.index_of([f])[0] == ((((f[0] * 2 + f[1]) * 2 + f[2]) * 2 + f[3]) * 2 + f[4]) * 3 + f[5]
    )
    assert isinstance(data._images, np.memmap)  # read from the memory-mapped copy


def test_shapes3d_rejects_bad_files(tmp_path):
    path = tmp_path / "3dshapes.h5"
    write_shapes3d(path)
    one_line_error(
        lambda: Shapes3D(str(path)), "factor sizes (10, 10, 10, 8, 4, 15)", "(2, 2, 2, 2, 2, 3)"
    )
    write_shapes3d(path, label_dtype=np.float32)
    one_line_error(lambda: Shapes3D(str(path), SHAPES_SIZES), "labels of dtype float64", "float32")
    write_shapes3d(path, images=np.zeros((96, 64, 64), np.uint8))
    one_line_error(lambda: Shapes3D(str(path), SHAPES_SIZES), "images of shape (N, 64, 64, 3)")
    write_shapes3d(path)
    truncate(path)
    one_line_error(lambda: Shapes3D(str(path), SHAPES_SIZES), str(path), "HDF5")


# --- MPI3D ----------------------------------------------------------------------------------

MPI_SIZES = (2, 2, 1, 1, 1, 2, 3)


def test_mpi3d_streams_the_npz_into_a_memory_map(tmp_path):
    path = tmp_path / "mpi3d_toy.npz"
    images = RNG.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    np.savez(path, images=images)
    data = MPI3D("toy", str(path), factor_sizes=MPI_SIZES)
    assert data.factor_names[-1] == "vertical_axis" and len(data) == 24
    np.testing.assert_array_equal(data.images(np.arange(24)), images)
    assert isinstance(data._images, np.memmap)
    np.testing.assert_array_equal(data.factors_of([23])[0], [1, 1, 0, 0, 0, 1, 2])


def test_mpi3d_rejects_bad_files(tmp_path):
    path = tmp_path / "mpi3d_toy.npz"
    np.savez(path, images=np.zeros((24, 64, 64, 3), np.uint8))
    one_line_error(lambda: MPI3D("toy", str(path)), "1,036,800 or 460,800 images", "found 24")
    np.savez(path, pictures=np.zeros((24, 64, 64, 3), np.uint8))
    one_line_error(
        lambda: MPI3D("toy", str(path), factor_sizes=MPI_SIZES), "array 'images'", "pictures"
    )
    np.savez(path, images=np.zeros((24, 64, 64, 3), np.float32))
    one_line_error(lambda: MPI3D("toy", str(path), factor_sizes=MPI_SIZES), "uint8", "float32")
    np.savez(path, images=np.zeros((24, 64, 64, 3), np.uint8))
    truncate(path, keep=0.6)
    one_line_error(lambda: MPI3D("toy", str(path), factor_sizes=MPI_SIZES), str(path))
    one_line_error(lambda: MPI3D("real", str(tmp_path / "x.npz")), "bench data download mpi3d-real")


# --- Cars3D ---------------------------------------------------------------------------------


def write_cars(folder, names):
    folder.mkdir(parents=True)
    views = {}
    for name in names:
        im = RNG.integers(0, 256, (128, 128, 3, 24, 4), dtype=np.uint8)
        scipy.io.savemat(folder / f"{name}.mat", {"im": im})
        views[name] = im
    (folder / "list.txt").write_text("\n".join(names) + "\n")
    return views


def test_cars3d_orders_objects_by_name_and_resizes_with_lanczos(tmp_path):
    folder = tmp_path / "cars"
    views = write_cars(folder, ["car_010_mesh", "car_002_mesh", "car_007_mesh"])
    data = Cars3D(str(folder))
    assert data.factor_names == ("elevation", "azimuth", "object_type")
    assert data.factors_num_values == (4, 24, 3)
    assert data.object_names == ("car_002_mesh", "car_007_mesh", "car_010_mesh")
    for elevation, azimuth, obj in [(0, 0, 0), (3, 23, 2), (2, 5, 1)]:
        index = elevation * 24 * 3 + azimuth * 3 + obj
        assert data.index_of([[elevation, azimuth, obj]])[0] == index
        expected = lanczos_resize(views[data.object_names[obj]][:, :, :, azimuth, elevation])
        np.testing.assert_array_equal(data.images([index])[0], expected)


def test_cars3d_rejects_bad_files(tmp_path):
    folder = tmp_path / "cars"
    write_cars(folder, ["car_001_mesh"])
    (folder / "list.txt").write_text("car_001_mesh\ncar_002_mesh\n")
    one_line_error(
        lambda: Cars3D(str(folder)), "car_002_mesh.mat is missing", "bench data download cars3d"
    )
    (folder / "list.txt").write_text("car_001_mesh\n")
    scipy.io.savemat(folder / "car_001_mesh.mat", {"im": np.zeros((64, 64, 3, 24, 4), np.uint8)})
    one_line_error(lambda: Cars3D(str(folder)), "(128, 128, 3, 24, 4)", "(64, 64, 3, 24, 4)")


# --- SmallNORB ------------------------------------------------------------------------------

NORB_MAGIC = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54}


def norb_bytes(array):
    """The NORB binary matrix layout, written independently of the loader."""
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    header = np.array([NORB_MAGIC[array.dtype], array.ndim, *dims], dtype="<i4").tobytes()
    return header + array.astype(array.dtype.newbyteorder("<")).tobytes()


def write_norb(folder):
    """Two categories × one instance per split × 2 elevations × azimuths {0, 2} × 2 lightings."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = {}
    for split, instance in zip(SPLITS, (1, 0), strict=True):
        features = grid((2, 2, 2, 2))  # category, elevation, azimuth/2, lighting
        order = RNG.permutation(len(features))  # rows are not in grid order
        features = features[order]
        category = features[:, 0].astype(np.int32)
        info = np.stack(
            [np.full(16, instance), features[:, 1], features[:, 2] * 2, features[:, 3]], axis=1
        ).astype(np.int32)
        dat = RNG.integers(0, 256, (16, 2, 96, 96), dtype=np.uint8)
        for kind, array in (("dat", dat), ("cat", category), ("info", info)):
            name = file_name(split, kind)
            if split.endswith("training"):  # the training files gzipped, as downloaded
                (folder / f"{name}.gz").write_bytes(gzip.compress(norb_bytes(array)))
            else:
                (folder / name).write_bytes(norb_bytes(array))
        for row in range(16):
            c, e, a, light = features[row]
            stored[(c, instance, e, a, light)] = dat[row, 0]
    return stored


def test_smallnorb_looks_rows_up_and_resamples_the_instance(tmp_path):
    stored = write_norb(tmp_path)
    data = SmallNORB(str(tmp_path))
    assert data.factor_names == ("category", "elevation", "azimuth", "lighting")
    assert data.factors_num_values == (2, 2, 2, 2) and len(data) == 32
    for state, image in stored.items():
        np.testing.assert_array_equal(
            data.images(data.index_of([state]))[0, ..., 0], lanczos_resize(image)
        )
    # dlib: the latent factors column by column, then the instance for each observation.
    rs, reference = np.random.RandomState(2), np.random.RandomState(2)
    factors, observations = data.sample(6, rs)
    latent = np.stack([reference.randint(2, size=6) for _ in range(4)], axis=1)
    instance = reference.randint(2, size=6)
    np.testing.assert_array_equal(factors, latent)
    for row in range(6):
        c, e, a, light = latent[row]
        expected = lanczos_resize(stored[(c, instance[row], e, a, light)]) / np.float32(255)
        np.testing.assert_array_equal(observations[row, ..., 0], expected)


def test_smallnorb_rejects_bad_files(tmp_path):
    write_norb(tmp_path)
    info = tmp_path / file_name(SPLITS[1], "info")
    info.write_bytes(b"\x00\x00\x00\x00" + info.read_bytes()[4:])
    one_line_error(lambda: SmallNORB(str(tmp_path)), str(info), "NORB magic number")
    write_norb(tmp_path)
    truncate(info, keep=0.7)
    one_line_error(lambda: SmallNORB(str(tmp_path)), "data bytes for shape (16, 4)")
    (tmp_path / file_name(SPLITS[1], "cat")).unlink()
    one_line_error(lambda: SmallNORB(str(tmp_path)), "is missing", "bench data download smallnorb")


# --- CelebA ---------------------------------------------------------------------------------

ATTRIBUTES = [f"Attr_{i}" for i in range(40)]


def write_celeba(root, colours, attributes, header_names=ATTRIBUTES):
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(colours))]
    for name, colour in zip(names, colours, strict=True):
        Image.new("RGB", (178, 218), colour).save(root / "img_align_celeba" / name, quality=100)
    lines = [str(len(names)), " ".join(header_names)]
    lines += [
        f"{n}  " + " ".join(f"{v:2d}" for v in row)
        for n, row in zip(names, attributes, strict=True)
    ]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = [f"{n} {split}" for n, split in zip(names, (0, 0, 2), strict=False)]
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")


def test_celeba_images_and_attributes(tmp_path):
    attributes = RNG.choice([-1, 1], size=(3, 40))
    write_celeba(tmp_path, [(200, 30, 30), (30, 200, 30), (30, 30, 200)], attributes)
    data = CelebA(str(tmp_path), crop="disdiff")
    assert len(data) == 3 and data.attribute_names == ATTRIBUTES
    np.testing.assert_array_equal(data.attributes, (attributes > 0).astype(np.uint8))
    images = data.images(np.arange(3)).astype(int)
    assert images.shape == (3, 64, 64, 3)
    assert np.abs(images[1] - [30, 200, 30]).max() <= 3  # JPEG of a flat colour
    test_split = CelebA(str(tmp_path), crop="tad", split="test")
    assert test_split.files == ["000003.jpg"]


def test_celeba_crops_take_the_documented_boxes():
    # A face-sized image that is white inside the DisDiff box and black outside it.
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[57 : 57 + 128, 25 : 25 + 128] = 255
    from bench.datasets.celeba import crop_image

    disdiff = np.asarray(crop_image(Image.fromarray(pixels), "disdiff"))
    assert disdiff.min() == 255
    # TAD: resize to 96 × 117, centre 64 × 64: rows 26..90 and columns 16..80 of the resized image,
    # i.e. source rows ~48..167 and columns ~30..148, which is white only in part.
    tad = np.asarray(crop_image(Image.fromarray(pixels), "tad"))
    assert tad.shape == (64, 64, 3) and tad[0].mean() < 255 and tad[32, 32].min() == 255


def test_celeba_rejects_bad_files(tmp_path):
    write_celeba(tmp_path / "a", [(0, 0, 0)], np.ones((1, 40), int), header_names=ATTRIBUTES[:39])
    one_line_error(lambda: CelebA(str(tmp_path / "a")), "40 attribute names", "39")
    write_celeba(tmp_path / "b", [(0, 0, 0)], np.full((1, 40), 2))
    one_line_error(lambda: CelebA(str(tmp_path / "b")), "attribute values -1 or 1", "[2]")
    one_line_error(
        lambda: CelebA(str(tmp_path / "c")),
        "list_attr_celeba.txt is missing",
        "mmlab.ie.cuhk.edu.hk",
    )
