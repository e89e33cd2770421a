"""shapes3d-procedural: 3dshapes.h5's factor table and index order, a scene that behaves."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import bench.datasets
from bench.datasets.shapes3d_procedural import FLOOR, HUE_RGB, OBJECT, WALL


@pytest.fixture(scope="module")
def shapes():
    return bench.datasets.load("shapes3d-procedural")


def weights_of(shapes, factors):
    """The geometry weights (64·64, 3) behind one factor tuple."""
    scale, shape, orientation = factors[3:]
    return shapes.weights[(scale * 4 + shape) * 15 + orientation]


def image(shapes, factors):
    return shapes.images(shapes.index_of([factors]))[0].astype(int)


def test_factor_table_and_index_formula(shapes):
    assert len(shapes) == 480_000
    assert shapes.factor_names == (
        "floor_hue",
        "wall_hue",
        "object_hue",
        "scale",
        "shape",
        "orientation",
    )
    assert shapes.factors_num_values == (10, 10, 10, 8, 4, 15)
    f = shapes.sample_factors(2000, np.random.RandomState(0))
    formula = ((((f[:, 0] * 10 + f[:, 1]) * 10 + f[:, 2]) * 8 + f[:, 3]) * 4 + f[:, 4]) * 15 + f[
        :, 5
    ]
    np.testing.assert_array_equal(shapes.index_of(f), formula)
    np.testing.assert_array_equal(shapes.factors_of(formula), f)


@pytest.mark.parametrize(("factor", "surface"), [(0, FLOOR), (1, WALL), (2, OBJECT)])
def test_a_hue_changes_only_the_pixels_of_its_surface(shapes, factor, surface):
    base = np.array([1, 4, 7, 3, 0, 5])
    other = base.copy()
    other[factor] = 8
    changed = np.any(image(shapes, base) != image(shapes, other), axis=-1).reshape(-1)
    shows_surface = weights_of(shapes, base)[:, surface] > 0
    assert changed.any()
    assert not np.any(changed & ~shows_surface)  # nothing else moves
    assert changed[weights_of(shapes, base)[:, surface] > 0.2].all()


def test_orientation_moves_the_camera_not_the_colours(shapes):
    left, right = np.array([2, 5, 8, 4, 1, 0]), np.array([2, 5, 8, 4, 1, 14])
    assert np.mean(image(shapes, left) != image(shapes, right)) > 0.05  # the view changed
    for factors in (left, right):
        weights, pixels = weights_of(shapes, factors), image(shapes, factors).reshape(-1, 3)
        for surface in (FLOOR, WALL, OBJECT):
            only = (weights[:, surface] > 0) & (weights.sum(1) == weights[:, surface])
            colour = HUE_RGB[factors[surface]]
            expected = weights[only, surface : surface + 1] * colour * 255
            assert np.abs(pixels[only] - expected).max() <= 1.0  # shade × its hue, nothing else


def test_the_scene_looks_like_3d_shapes(shapes):
    mid = np.array([0, 0, 0, 4, 0, 7])  # cube at a middle scale, camera straight on
    weights = weights_of(shapes, mid).reshape(64, 64, 3)
    object_columns = np.flatnonzero((weights[..., OBJECT] > 0).any(axis=0))
    width = (object_columns.max() - object_columns.min() + 1) / 64
    assert 0.22 <= width <= 0.36  # a quarter to a third of the image
    assert abs(object_columns.mean() - 31.5) < 2  # at the centre
    rows = np.arange(64)[:, None].repeat(64, 1)
    floor_rows, wall_rows = rows[weights[..., FLOOR] > 0], rows[weights[..., WALL] > 0]
    assert floor_rows.min() > 20 and wall_rows.max() < 45  # floor below, wall above
    assert 0.3 <= np.mean(weights[..., FLOOR] > 0) <= 0.55
    # Bigger scale, bigger object; every shape has its own silhouette.
    areas = [(weights_of(shapes, [0, 0, 0, s, 0, 7])[:, OBJECT] > 0.5).sum() for s in range(8)]
    assert all(a < b for a, b in itertools.pairwise(areas))
    masks = [weights_of(shapes, [0, 0, 0, 4, s, 7])[:, OBJECT] > 0.5 for s in range(4)]
    assert all(not np.array_equal(masks[i], masks[j]) for i in range(4) for j in range(i))


def test_identical_bytes_in_a_fresh_process_with_a_fresh_cache(shapes, tmp_path):
    indices = np.random.RandomState(1).randint(len(shapes), size=256)
    code = (
        "import sys, numpy as np, bench.datasets as d\n"
        f"x = d.load('shapes3d-procedural').images(np.array({indices.tolist()}))\n"
        "sys.stdout.buffer.write(x.tobytes())\n"
    )
    env = {**os.environ, "BENCH_CACHE": str(tmp_path)}  # renders the weights anew
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env)
    assert other.stdout == shapes.images(indices).tobytes()
    assert list(tmp_path.glob("shapes3d-procedural/weights-v*.npy"))
