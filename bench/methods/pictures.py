"""Picture grids every diffusion method writes: a latent interchange (swap) grid and a
traversal grid, from any ``generate(codes) -> images`` and codes shaped (B, units, ...);
and ``write_png``, which draws any labelled ``Grid`` (title, a label per row and per
column) as one PNG and keeps the labels in its text chunks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from bench.fileio import atomic_path

Generate = Callable[[torch.Tensor], torch.Tensor]
FONT_SIZE = 11
PAD = 2  # the gutter between images, in pixels


@dataclass(frozen=True)
class Grid:
    """A picture: ``images`` (rows, columns, C, H, W) in [0, 1], a ``title`` saying what it
    shows, and what each row and column holds (the unit or latent, the value or image);
    an axis with no meaning of its own (a page of samples) has no labels."""

    images: torch.Tensor
    title: str
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        shape = self.images.shape[:2]
        for axis, labels, size in (
            ("rows", self.rows, shape[0]),
            ("columns", self.columns, shape[1]),
        ):
            if labels and len(labels) != size:
                raise ValueError(f"{len(labels)} {axis} labels for a grid of {size} {axis}")


def interchange_grid(
    images: torch.Tensor, codes: torch.Tensor, generate: Generate, part: str = "unit"
) -> Grid:
    """Columns: pairs (A, B) of consecutive images. Rows: A, B, A regenerated, then A with
    ``part`` u taken from B, for every u."""
    a, b = codes[0::2], codes[1::2]
    rows = [images[0::2], images[1::2], generate(a)]
    labels = ["A", "B", "A regenerated"]
    for unit in range(a.shape[1]):
        swapped = a.clone()
        swapped[:, unit] = b[:, unit]
        rows.append(generate(swapped))
        labels.append(f"A, {part} {unit} of B")
    return Grid(
        torch.stack(rows),
        f"Interchange: image A regenerated with one {part} of image B (a row per {part})",
        labels,
        [f"pair {k}" for k in range(len(a))],
    )


def traversal_grid(
    base: torch.Tensor, values: torch.Tensor, generate: Generate, part: str = "unit"
) -> Grid:
    """Rows: units. Columns: ``base`` (1, units, ...) with the unit set to each of its
    ``values`` (steps, units, ...), the other units kept; each column is labelled by the
    percentile of the unit's values over the picture images it holds (``percentile_sweep``)."""
    rows = []
    for unit in range(base.shape[1]):
        swept = base.repeat(len(values), *[1] * (base.dim() - 1))
        swept[:, unit] = values[:, unit].to(swept.dtype)
        rows.append(generate(swept))
    return Grid(
        torch.stack(rows),
        f"Traversal of one image: a {part} per row swept over its 5th to 95th percentile "
        "on the picture images, the others kept",
        [f"{part} {unit}" for unit in range(base.shape[1])],
        [f"{q:.0%}" for q in percentiles(len(values)).tolist()],
    )


def percentiles(steps: int) -> torch.Tensor:
    """The ``steps`` quantiles a traversal sweeps: 5th to 95th percentile, evenly spaced."""
    return torch.linspace(0.05, 0.95, steps)


def percentile_sweep(values: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps, N): each column of ``values`` (B, N) from its 5th to its 95th percentile, the
    range a traversal sweeps."""
    quantiles = percentiles(steps).to(values.device)
    return torch.quantile(values.float(), quantiles, dim=0)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def picture_images(dataset, pairs: int, device: torch.device) -> torch.Tensor:
    """The 2·``pairs`` images the grids show (consecutive pairs A, B): the same ones for every
    run on the dataset, drawn with seed 0."""
    rows = np.random.default_rng(0).choice(len(dataset), 2 * pairs, replace=False)
    return to_tensor(dataset.images(rows), device)


def unconditional_samples(
    generate: Callable[..., torch.Tensor], count: int, folder: Path, device: torch.device
) -> list[Path]:
    """``samples.png``: ``count`` (at least 2, even) samples of an unconditional model, in two
    rows; ``generate(images, seed=0)`` is its ``Method.generate``, whose images it does not
    read (only their number)."""
    columns = max(1, count // 2)
    samples = generate(torch.empty(2 * columns, 0, device=device), seed=0)
    page = Grid(
        samples.view(2, columns, *samples.shape[1:]), f"{len(samples)} unconditional DDIM samples"
    )
    return [write_png(folder / "samples.png", page)]


def write_png(path: Path, grid: Grid) -> Path:
    """``grid`` as one PNG: its title on top, the column labels above the columns, the row
    labels left of the rows, the images pixel for pixel with 2-pixel gutters. The labels are
    kept in the PNG's text chunks (``Title``, and ``Rows``/``Columns`` as JSON lists)."""
    rows, cols, channels, height, width = grid.images.shape
    font = ImageFont.load_default(size=FONT_SIZE)
    line = FONT_SIZE + 4
    left = math.ceil(max(map(font.getlength, grid.rows))) + 3 * PAD if grid.rows else 0
    body_width = cols * (width + PAD) + PAD
    title = _wrap(grid.title, font, left + body_width - 2 * PAD)
    top = len(title) * line + (line if grid.columns else 0) + PAD
    mode = "L" if channels == 1 else "RGB"
    canvas = Image.new(mode, (left + body_width, top + rows * (height + PAD)), "white")
    pixels = (grid.images.float().cpu().numpy() * 255).round().astype(np.uint8)
    pixels = pixels.transpose(0, 1, 3, 4, 2)
    for r in range(rows):
        for c in range(cols):
            cell = Image.fromarray(pixels[r, c].squeeze(-1) if channels == 1 else pixels[r, c])
            canvas.paste(cell, (left + PAD + c * (width + PAD), top + r * (height + PAD)))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title):
        draw.text((PAD, PAD + i * line), text, fill="black", font=font)
    for c, text in enumerate(grid.columns):
        centre = left + PAD + c * (width + PAD) + width / 2
        draw.text((centre, top - PAD), text, fill="black", font=font, anchor="mb")
    for r, text in enumerate(grid.rows):
        middle = top + r * (height + PAD) + height / 2
        draw.text((left - PAD, middle), text, fill="black", font=font, anchor="rm")
    info = PngInfo()
    info.add_text("Title", grid.title)
    info.add_text("Rows", json.dumps(grid.rows))
    info.add_text("Columns", json.dumps(grid.columns))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", pnginfo=info)
    return path


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """``text`` in lines of at most ``width`` pixels, broken between words."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and font.getlength(candidate) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines
