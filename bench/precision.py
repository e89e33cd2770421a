"""The arithmetic a run trains in (``train.precision``), and the autocast it means. Importing
this imports no torch: the config schema uses ``Precision``, and ``bench run`` checks what it
is asked before it loads torch."""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Precision(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast to bfloat16 (Ampere and newer)
    fp16 = "fp16"  # autocast to float16 with a GradScaler (V100, T4)


def training_precision(asked: Precision | str, device: torch.device) -> Precision:
    """``train.precision`` on CUDA; fp32 elsewhere (autocast is for the GPU)."""
    return Precision(asked) if device.type == "cuda" else Precision.fp32


def autocast(precision: Precision, device: torch.device) -> AbstractContextManager:
    """Autocast to ``precision``'s dtype on ``device``; a no-op context in fp32."""
    import torch

    dtype = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
