"""Score a trained method with the registered metrics, writing each result as it finishes.

Metrics see only a dataset with the ground-truth interface and a numpy-in/numpy-out
representation function, as in disentanglement_lib; they never see the model.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from bench.datasets import GroundTruthData
from bench.methods.base import Method
from bench.metrics import METRICS
from bench.store import RunRecord


def representation_function(
    method: Method, device: torch.device, batch_size: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Observations (n, H, W, C) float in [0, 1] -> codes (n, D), encoded in batches."""

    def represent(observations: np.ndarray) -> np.ndarray:
        codes = []
        for start in range(0, len(observations), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(observations[start : start + batch_size]))
            images = chunk.to(device).permute(0, 3, 1, 2).float()
            codes.append(method.encode(images).float().cpu().numpy())
        return np.concatenate(codes)

    return represent


def metric_hyperparams(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults after dlib's four positional arguments."""
    parameters = list(inspect.signature(function).parameters.values())[4:]
    return {p.name: p.default for p in parameters}


def evaluate(
    method: Method,
    dataset: GroundTruthData,
    eval_cfg: DictConfig,
    record: RunRecord,
    device: torch.device,
) -> dict[str, Any]:
    """Run every metric in ``eval_cfg.metrics`` not already in the record at its version."""
    method.eval()
    represent = representation_function(method, device, eval_cfg.batch_size)
    done = record.metrics()
    for name in eval_cfg.metrics:
        spec = METRICS.get(name)
        if done.get(name, {}).get("version") == spec.version:
            continue  # scored before an interruption
        tqdm.write(f"scoring {name} ...", file=sys.stderr)
        start = time.perf_counter()
        values = spec.function(
            dataset, represent, np.random.RandomState(eval_cfg.random_seed), artifact_dir=None
        )
        record.write_metric(
            name,
            {
                "version": spec.version,
                "hyperparams": metric_hyperparams(spec.function),
                "random_seed": eval_cfg.random_seed,
                "values": {k: float(v) for k, v in values.items()},
                "seconds": round(time.perf_counter() - start, 3),
            },
        )
    return record.metrics()
