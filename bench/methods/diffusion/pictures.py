"""Picture grids every diffusion method writes: a latent interchange (swap) grid and a
traversal grid, from any ``generate(codes) -> images`` and codes shaped (B, units, ...)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.fileio import atomic_path

Generate = Callable[[torch.Tensor], torch.Tensor]


def interchange_grid(images: torch.Tensor, codes: torch.Tensor, generate: Generate) -> torch.Tensor:
    """Columns: pairs (A, B) of consecutive images. Rows: A, B, A regenerated, then A with
    unit u taken from B, for every unit u."""
    a, b = codes[0::2], codes[1::2]
    rows = [images[0::2], images[1::2], generate(a)]
    for unit in range(a.shape[1]):
        swapped = a.clone()
        swapped[:, unit] = b[:, unit]
        rows.append(generate(swapped))
    return torch.stack(rows)


def traversal_grid(base: torch.Tensor, values: torch.Tensor, generate: Generate) -> torch.Tensor:
    """Rows: units. Columns: ``base`` (1, units, ...) with the unit set to each of its
    ``values`` (steps, units, ...), the other units kept."""
    rows = []
    for unit in range(base.shape[1]):
        swept = base.repeat(len(values), *[1] * (base.dim() - 1))
        swept[:, unit] = values[:, unit].to(swept.dtype)
        rows.append(generate(swept))
    return torch.stack(rows)


def percentile_sweep(values: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps, N): each column of ``values`` (B, N) from its 5th to its 95th percentile, the
    range a traversal sweeps."""
    quantiles = torch.linspace(0.05, 0.95, steps, device=values.device)
    return torch.quantile(values.float(), quantiles, dim=0)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def picture_images(dataset, pairs: int, device: torch.device) -> torch.Tensor:
    """The 2·``pairs`` images the grids show (consecutive pairs A, B): the same ones for every
    run on the dataset, drawn with seed 0."""
    rows = np.random.default_rng(0).choice(len(dataset), 2 * pairs, replace=False)
    return to_tensor(dataset.images(rows), device)


def write_png(path: Path, grid: torch.Tensor) -> Path:
    """(rows, cols, C, H, W) images in [0, 1] as one PNG with 2-pixel gutters."""
    rows, cols, channels, height, width = grid.shape
    pad = 2
    canvas = np.full(
        (rows * (height + pad) + pad, cols * (width + pad) + pad, channels), 255, dtype=np.uint8
    )
    pixels = (grid.float().cpu().numpy() * 255).round().astype(np.uint8).transpose(0, 1, 3, 4, 2)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            canvas[top : top + height, left : left + width] = pixels[r, c]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas.squeeze(-1) if channels == 1 else canvas).save(tmp, format="PNG")
    return path
