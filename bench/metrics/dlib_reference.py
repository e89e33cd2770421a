"""Import disentanglement_lib's own metric modules without TensorFlow, to compare with ours.

    pip install --no-deps disentanglement-lib==1.5 && pip install gin-config absl-py six

Two shims (metrics.md §0): ``gin.tf`` (which imports TensorFlow) is aliased to ``gin``, and
gin-config ≥ 0.5's ``denylist``/``allowlist`` stand in for the removed ``blacklist``/``whitelist``.
Neither changes a number. Used by the equivalence tests and ``benchmarks/metrics_vs_dlib.py``.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def install_gin_shims() -> None:
    import gin

    sys.modules.setdefault("gin.tf", gin)
    if getattr(gin.configurable, "_bench_shim", False):
        return
    original = gin.configurable

    def configurable(*args, blacklist=None, whitelist=None, **kwargs):
        if blacklist is not None:
            kwargs["denylist"] = blacklist
        if whitelist is not None:
            kwargs["allowlist"] = whitelist
        return original(*args, **kwargs)

    configurable._bench_shim = True
    gin.configurable = configurable


def dlib_metric_module(name: str) -> ModuleType:
    """``disentanglement_lib.evaluation.metrics.<name>``, e.g. ``dci`` or ``factor_vae``."""
    install_gin_shims()
    return importlib.import_module(f"disentanglement_lib.evaluation.metrics.{name}")
