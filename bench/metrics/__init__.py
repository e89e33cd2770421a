"""Disentanglement metrics with disentanglement_lib's signatures, defaults and random draws."""

from bench.registry import Registry

METRICS = Registry("metric", "bench.metrics")
METRICS.register(
    "mig",
    "bench.metrics.mig:SPEC",
    "Mutual Information Gap (Chen et al. 2018), as disentanglement_lib computes it",
)

__all__ = ["METRICS"]
