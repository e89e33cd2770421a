"""Ground-truth datasets: ``bench.datasets.load(name, **options)`` gives a dataset object."""

from __future__ import annotations

import inspect

from bench.datasets.ground_truth import GroundTruthData
from bench.registry import BenchError, Registry

DATASETS = Registry("dataset", "bench.datasets")
DATASETS.register(
    "dsprites-procedural",
    "bench.datasets.dsprites:DSpritesProcedural",
    "dSprites rendered from factor values: shape, scale, orientation, posX, posY (no download)",
)


def load(name: str, **options: object) -> GroundTruthData:
    """The dataset registered as ``name``, built with ``options``."""
    cls = DATASETS.get(name)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = ", ".join(params) or "none"
        raise BenchError(f"dataset {name!r} has no option {unknown[0]!r}; valid options: {valid}")
    return cls(**options)


__all__ = ["DATASETS", "GroundTruthData", "load"]
