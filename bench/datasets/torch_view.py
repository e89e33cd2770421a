"""Batches of a dataset's images as float tensors for the training loop.

By default each batch is read (or rendered) on the CPU and copied to the training device.
With ``resident_device`` set (``data.device=cuda``, or by default on CUDA when the dataset
fits: ``resident_device()``), the whole uint8 array is copied to that device once and
batches are gathered there, so training never waits on a loader; otherwise, on CUDA, the
next batch is read in the background while the GPU trains on this one.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

CHUNK = 4096


class TorchImages:
    """``background``: read the next batch on a worker thread while the device trains on this
    one (``prefetch``), into page-locked memory when it goes to CUDA. The dataset is never
    read by two threads at once: any other read waits for the pending one."""

    def __init__(
        self, dataset, resident_device: str | None = None, background: bool = False
    ) -> None:
        self.dataset = dataset
        self.resident: torch.Tensor | None = None
        if resident_device is not None:
            device = torch.device(resident_device)
            n = len(dataset)
            self.resident = torch.empty((n, *dataset.image_shape), dtype=torch.uint8, device=device)
            for start in tqdm(range(0, n, CHUNK), desc=f"images to {device}", disable=None):
                chunk = dataset.images(np.arange(start, min(start + CHUNK, n)))
                self.resident[start : start + len(chunk)] = torch.from_numpy(chunk).to(device)
        self.reader = (
            ThreadPoolExecutor(1, thread_name_prefix="batches")
            if background and self.resident is None
            else None
        )
        self.ahead: tuple[bytes, Future] | None = None  # the rows being read, and the read

    @property
    def reads_ahead(self) -> bool:
        return self.reader is not None

    def prefetch(self, indices: np.ndarray, device: torch.device) -> None:
        """Start reading the batch of ``indices`` (for ``device``) in the background."""
        if self.reader is not None:
            if self.ahead is not None:  # one read at a time
                self.ahead[1].result()
            rows = np.asarray(indices)
            read = self.reader.submit(self._host_images, rows, device)
            self.ahead = (rows.tobytes(), read)

    def batch(self, indices: np.ndarray, device: torch.device) -> torch.Tensor:
        """float (B, C, H, W) in [0, 1] on ``device``."""
        if self.resident is not None:
            index = torch.from_numpy(np.asarray(indices)).to(self.resident.device)
            images = self.resident[index].to(device, non_blocking=True)
        else:
            rows = np.asarray(indices)
            if self.ahead is not None and self.ahead[0] == rows.tobytes():
                images, self.ahead = self.ahead[1].result(), None
            else:  # other rows (a refit's): read once the pending read is done; it stays
                if self.ahead is not None:
                    self.ahead[1].result()
                images = self._host_images(rows, device)
            images = images.to(device, non_blocking=True)
        return images.permute(0, 3, 1, 2).float().div_(255.0)

    def _host_images(self, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        images = torch.from_numpy(self.dataset.images(rows))
        if device.type == "cuda":  # page-locked, so the copy overlaps the GPU's work
            images = images.pin_memory()
        return images


def resident_device(dataset, device: torch.device) -> str | None:
    """Where ``data.device: null`` keeps the images: on a CUDA training device when the
    dataset's uint8 array takes at most a quarter of its free memory, else nowhere (each
    batch is read on the CPU and copied from page-locked memory)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    size = len(dataset) * int(np.prod(dataset.image_shape))
    return str(device) if size <= free // 4 else None
