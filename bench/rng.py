"""The process-wide random states (Python, numpy, torch CPU and CUDA), captured and restored
as one: a checkpoint stores them, and work done between training steps puts them back."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def global_rng_state() -> dict[str, Any]:
    """Every global random state, as plain values and tensors (``torch.load`` weights-only)."""
    kind, key, *rest = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, key.tolist(), *rest),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_global_rng_state(state: dict[str, Any], device: torch.device | None = None) -> str | None:
    """Put back what ``global_rng_state`` captured. CUDA's states go to as many devices as
    both the saved state and this process have: a run saved with 8 GPUs visible resumes in a
    one-GPU job. Returns, in words, what did not fit where it matters (the run trains on
    CUDA: ``device`` now, or the ``noise_device`` a checkpoint records); None when
    everything was restored."""
    random.setstate(state["python"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    saved = list(state["cuda"])
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, cuda_state in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(cuda_state, index)
    # CUDA's states matter when the run trains on CUDA, now or when it was saved.
    uses_cuda = (device is not None and device.type == "cuda") or state.get(
        "noise_device"
    ) == "cuda"
    if uses_cuda and len(saved) != visible:
        return (
            f"CUDA random states were saved for {len(saved)} device(s) and {visible} are "
            f"visible now: {min(len(saved), visible)} restored"
        )
    return None
