"""dsprites-procedural: the real file's factor table and index order, sprites that behave."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import bench.datasets
from bench.errors import BenchError
from bench.registry import UnknownNameError


@pytest.fixture(scope="module")
def dsprites():
    return bench.datasets.load("dsprites-procedural")


def centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image[..., 0])
    return rows.mean(), cols.mean()


def test_factor_table_and_index_formula(dsprites):
    assert dsprites.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert dsprites.factors_num_values == (3, 6, 40, 32, 32)
    assert dsprites.num_factors == 5 and len(dsprites) == 737_280
    factors = dsprites.sample_factors(1000, np.random.RandomState(0))
    # The dSprites README's formula (colour dropped): posY fastest.
    expected = factors @ np.array([245760, 40960, 1024, 32, 1])
    np.testing.assert_array_equal(dsprites.index_of(factors), expected)
    np.testing.assert_array_equal(dsprites.factors_of(expected), factors)


def test_sample_factors_draws_column_by_column_like_dlib(dsprites):
    ours = dsprites.sample_factors(7, np.random.RandomState(3))
    rs = np.random.RandomState(3)
    expected = np.stack([rs.randint(size, size=7) for size in (3, 6, 40, 32, 32)], axis=1)
    np.testing.assert_array_equal(ours, expected)


def test_observations_are_float_hwc_in_unit_range(dsprites):
    factors, observations = dsprites.sample(16, np.random.RandomState(0))
    assert observations.shape == (16, 64, 64, 1) and observations.dtype == np.float32
    assert set(np.unique(observations)) <= {0.0, 1.0}
    np.testing.assert_array_equal(observations * 255, dsprites.images(dsprites.index_of(factors)))


def test_each_factor_changes_what_it_should(dsprites):
    def image(shape=0, scale=5, orientation=0, x=16, y=16):
        return dsprites.images(dsprites.index_of([[shape, scale, orientation, x, y]]))[0]

    # posX moves the sprite along columns, posY along rows, from one side to the other.
    left, right = centroid(image(x=0)), centroid(image(x=31))
    assert right[1] - left[1] > 35 and abs(right[0] - left[0]) < 0.5
    top, bottom = centroid(image(y=0)), centroid(image(y=31))
    assert bottom[0] - top[0] > 35 and abs(bottom[1] - top[1]) < 0.5
    # Area grows with scale squared (square at orientation 0: exact side lengths).
    small, large = image(scale=0).sum() / 255, image(scale=5).sum() / 255
    assert large / small == pytest.approx(4.0, rel=0.15)
    # The three shapes differ; orientation 0 and 2π are the same image, as in the real file.
    shapes = [image(shape=s) for s in range(3)]
    assert not np.array_equal(shapes[0], shapes[1]) and not np.array_equal(shapes[1], shapes[2])
    for s in range(3):
        np.testing.assert_array_equal(image(shape=s, orientation=0), image(shape=s, orientation=39))
    # A quarter turn of the ellipse swaps its extent along rows and columns.
    rows, cols = np.nonzero(image(shape=1, orientation=0)[..., 0])
    rows_turned, cols_turned = np.nonzero(image(shape=1, orientation=10)[..., 0])
    assert np.ptp(cols) > 1.5 * np.ptp(rows) and np.ptp(rows_turned) > 1.5 * np.ptp(cols_turned)


def test_the_heart_points_down_at_orientation_zero(dsprites):
    heart = dsprites.images(dsprites.index_of([[2, 5, 0, 16, 16]]))[0, ..., 0]
    rows = np.nonzero(heart)[0]
    widths = [np.count_nonzero(heart[r]) for r in range(rows.min(), rows.max() + 1)]
    assert widths[-1] < widths[0] / 2  # narrow tip at the bottom, two lobes at the top


def test_rendering_is_identical_across_processes(dsprites):
    indices = np.random.RandomState(0).randint(len(dsprites), size=64)
    code = (
        "import sys, numpy as np, bench.datasets as d;"
        f"sys.stdout.buffer.write(d.load('dsprites-procedural').images(np.array({indices.tolist()})).tobytes())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert other == dsprites.images(indices).tobytes()


def test_load_errors_name_the_problem():
    with pytest.raises(UnknownNameError, match="did you mean 'dsprites-procedural'"):
        bench.datasets.load("dsprites-procedual")
    with pytest.raises(BenchError, match="has no option 'root'"):
        bench.datasets.load("dsprites-procedural", root="/data")
