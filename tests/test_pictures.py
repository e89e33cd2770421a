"""Pictures: every grid is drawn pixel for pixel under a title, with a label per row and per
column, and the labels travel in the PNG's text chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.methods.pictures import (
    PAD,
    Grid,
    interchange_grid,
    percentile_sweep,
    traversal_grid,
    write_png,
)


def cells(path, rows, cols, height, width):
    """The (rows, cols, H, W[, C]) image cells of a written grid, found from its bottom-right
    corner (where the last cell ends, whatever the labels take above and to the left)."""
    canvas = np.asarray(Image.open(path))
    bottom, right = canvas.shape[0] - PAD, canvas.shape[1] - PAD
    out = np.empty((rows, cols, height, width, *canvas.shape[2:]), canvas.dtype)
    for r in range(rows):
        for c in range(cols):
            top = bottom - (rows - r) * (height + PAD) + PAD
            left = right - (cols - c) * (width + PAD) + PAD
            out[r, c] = canvas[top : top + height, left : left + width]
    return canvas, out


@pytest.mark.parametrize("channels", [1, 3])
def test_a_grid_is_drawn_pixel_for_pixel_under_its_labels(tmp_path, channels):
    images = torch.rand(3, 4, channels, 8, 6, generator=torch.Generator().manual_seed(0))
    rows, columns = ["unit 0", "unit 1", "unit 2"], ["5%", "35%", "65%", "95%"]
    path = write_png(tmp_path / "g.png", Grid(images, "Traversal of one image", rows, columns))
    canvas, drawn = cells(path, 3, 4, 8, 6)
    expected = (images.numpy() * 255).round().astype(np.uint8).transpose(0, 1, 3, 4, 2)
    np.testing.assert_array_equal(drawn, expected.squeeze(-1) if channels == 1 else expected)
    text = Image.open(path).text
    assert text["Title"] == "Traversal of one image"
    assert json.loads(text["Rows"]) == rows and json.loads(text["Columns"]) == columns
    # Ink where the labels go: beside every row, above every column, and the title on top.
    grey = canvas if channels == 1 else canvas.mean(-1)
    top = canvas.shape[0] - 3 * (8 + PAD) - PAD
    left = canvas.shape[1] - 4 * (6 + PAD) - PAD
    for r in range(3):
        band = grey[top + r * (8 + PAD) : top + r * (8 + PAD) + 8, :left]
        assert (band < 128).any(), f"no label beside row {r}"
    assert (grey[:top, left:] < 128).any() and (grey[: top // 2] < 128).any()


def test_labels_take_room_only_where_given(tmp_path):
    images = torch.ones(2, 2, 1, 5, 5)
    bare = Image.open(write_png(tmp_path / "a.png", Grid(images, "t")))
    labelled = Image.open(write_png(tmp_path / "b.png", Grid(images, "t", ["a", "b"], ["c", "d"])))
    assert bare.width == 2 * (5 + PAD) + PAD < labelled.width
    assert bare.height < labelled.height
    assert json.loads(bare.text["Rows"]) == []


def test_a_long_title_wraps_inside_the_picture(tmp_path):
    images = torch.ones(1, 2, 1, 5, 5)
    short = Image.open(write_png(tmp_path / "a.png", Grid(images, "t")))
    long = Image.open(write_png(tmp_path / "b.png", Grid(images, "word " * 12)))
    assert long.width == short.width and long.height > short.height + 3 * 11


def test_labels_must_match_the_grid():
    with pytest.raises(ValueError, match="2 rows labels for a grid of 3 rows"):
        Grid(torch.ones(3, 1, 1, 2, 2), "t", ["a", "b"])


def test_interchange_and_traversal_rows_are_what_their_labels_say():
    # generate() shows a code as an image: each unit's value fills its own pixel.
    def generate(codes):
        return codes.reshape(len(codes), 1, 1, -1)

    codes = torch.arange(12.0).reshape(4, 3)  # pairs (0, 1) and (2, 3), three units
    images = torch.zeros(4, 1, 1, 3)
    grid = interchange_grid(images, codes, generate, part="dim")
    assert grid.rows == [
        "A",
        "B",
        "A regenerated",
        "A, dim 0 of B",
        "A, dim 1 of B",
        "A, dim 2 of B",
    ]
    assert grid.columns == ["pair 0", "pair 1"] and "dim" in grid.title
    swapped = grid.images[3 + 1, 1, 0, 0]  # pair 1: A = codes[2], B = codes[3], dim 1 of B
    assert swapped.tolist() == [6.0, 10.0, 8.0]

    values = percentile_sweep(codes, 3)
    grid = traversal_grid(codes[:1], values, generate)
    assert grid.rows == ["unit 0", "unit 1", "unit 2"] and grid.columns == ["5%", "50%", "95%"]
    unit_2 = grid.images[2, :, 0, 0]  # (steps, units): unit 2 swept, units 0 and 1 kept
    assert unit_2[:, 2].tolist() == values[:, 2].tolist()
    assert (unit_2[:, :2] == codes[0, :2]).all()
    assert values[1].tolist() == codes.quantile(0.5, dim=0).tolist()
