"""What produced a run's numbers: versions, code revision, hardware and cost, as
environment.json records them."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch


def environment(
    device: torch.device,
    wall_time: float,
    earlier: dict[str, Any] | None = None,
    numerics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What produced the numbers: versions, code revision, hardware, the numerics switches
    (``numerics``: precision, TF32, deterministic, compile), cost. ``wall_time_s`` adds up
    every segment of a run that was interrupted and resumed (``earlier`` is the environment
    the previous segment recorded); ``segments`` counts them."""
    earlier = earlier or {}
    packages = ["drlbench", "torch", "numpy", "scipy", "scikit-learn", "omegaconf"]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": {name: _version(name) for name in packages},
        "git_commit": _git_commit(),
        "device": str(device),
        "device_name": _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "wall_time_s": round(earlier.get("wall_time_s", 0.0) + wall_time, 2),
        "last_segment_s": round(wall_time, 2),
        "segments": earlier.get("segments", 1 if earlier else 0) + 1,
        "peak_memory_mib": round(peak_rss_mib, 1),
        "numerics": numerics or {},
        "cuda": cuda_environment(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return info


def cuda_environment() -> dict[str, Any] | None:
    """CUDA, cuDNN and driver versions and the visible GPUs; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": _nvidia_driver(),
        "gpu_count": count,
        "gpus": [torch.cuda.get_device_name(i) for i in range(count)],
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _nvidia_driver() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.strip().splitlines() if result.returncode == 0 else []
    return lines[0] if lines else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the bench source tree, when it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
