"""The parity cases of ``benchmarks/parity.py``, one module per method: each names the
repositories it needs (``NEEDS``, owner/name of each, found by ``authors.MARKERS``) and builds a
``common.Comparison`` with ``compare(paths)``. Imported when asked for."""

from __future__ import annotations

import importlib
from types import ModuleType

CASES = (
    "dbrl",
    "ddpm_pixel",
    "disdiff",
    "disunknown",
    "diti",
    "dyga_sd",
    "encdiff",
    "ldm",
    "vq_autoencoder",
)


def case(method: str) -> ModuleType:
    return importlib.import_module(f"parity_cases.{method}")
