"""Batches of a dataset's images as float tensors for the training loop.

By default each batch is read (or rendered) on the CPU and copied to the training device.
With ``resident_device`` set (``data.device=cuda``), the whole uint8 array is copied to that
device once and batches are gathered there, so training never waits on a loader.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

CHUNK = 4096


class TorchImages:
    def __init__(self, dataset, resident_device: str | None = None) -> None:
        self.dataset = dataset
        self.resident: torch.Tensor | None = None
        if resident_device is not None:
            device = torch.device(resident_device)
            n = len(dataset)
            self.resident = torch.empty((n, *dataset.image_shape), dtype=torch.uint8, device=device)
            for start in tqdm(range(0, n, CHUNK), desc=f"images to {device}", disable=None):
                chunk = dataset.images(np.arange(start, min(start + CHUNK, n)))
                self.resident[start : start + len(chunk)] = torch.from_numpy(chunk).to(device)

    def batch(self, indices: np.ndarray, device: torch.device) -> torch.Tensor:
        """float (B, C, H, W) in [0, 1] on ``device``."""
        if self.resident is not None:
            index = torch.from_numpy(np.asarray(indices)).to(self.resident.device)
            images = self.resident[index].to(device, non_blocking=True)
        else:
            images = torch.from_numpy(self.dataset.images(indices)).to(device, non_blocking=True)
        return images.permute(0, 3, 1, 2).float().div_(255.0)
