"""Import disentanglement_lib's own metric modules without TensorFlow, to compare with ours.

    pip install --no-deps disentanglement-lib==1.5 && pip install gin-config absl-py six

Two shims (metrics.md §0): ``gin.tf`` (which imports TensorFlow) is aliased to ``gin``, and
gin-config ≥ 0.5's ``denylist``/``allowlist`` stand in for the removed ``blacklist``/``whitelist``.
Neither changes a number. Used by the equivalence tests and ``benchmarks/metrics_vs_dlib.py``,
which import dlib's metrics beside ours: ``qualify_bindings`` says whose configurables a binding
means there.
"""

from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType

# Where dlib (and, module for module, bench.metrics) defines the configurables that the
# metrics read besides their own.
_MODULE_OF = {
    "discretizer": "utils",
    "histogram_discretizer": "utils",
    "predictor": "utils",
    "gradient_boosting_classifier": "utils",
    "logistic_regression_cv": "utils",
    "prune_dims": "factor_vae",
}
_SHORT_NAME = re.compile(r"(?<![\w.])(" + "|".join(_MODULE_OF) + r")(?=\.|\s|$)")


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


def qualify_bindings(bindings: list[str], package: str = "evaluation.metrics") -> list[str]:
    """gin bindings of the helper configurables (``discretizer.num_bins = 20``,
    ``@histogram_discretizer``) with ``package``'s module path written out (dlib's by
    default, or ``bench.metrics``): in a process that has imported both, the short names are
    ambiguous and gin refuses them."""
    return [
        _SHORT_NAME.sub(lambda m: f"{package}.{_MODULE_OF[m[1]]}.{m[1]}", line) for line in bindings
    ]
