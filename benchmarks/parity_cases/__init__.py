"""The parity cases of ``benchmarks/parity.py``, one module per method (the VAE family shares
one, ``vae_family``): each names the repositories it needs (``NEEDS``, owner/name of each,
found by ``authors.MARKERS``) and builds a ``common.Comparison`` with ``compare(paths)``.
Imported when asked for."""

from __future__ import annotations

import functools
import importlib
import types

VAE_FAMILY = ("annealed_vae", "beta_tc_vae", "beta_vae", "dip_vae_i", "dip_vae_ii", "factor_vae")
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
    *VAE_FAMILY,
)


def case(method: str) -> types.ModuleType | types.SimpleNamespace:
    if method in VAE_FAMILY:
        family = importlib.import_module("parity_cases.vae_family")
        compare = functools.partial(family.compare, method=method)
        return types.SimpleNamespace(NEEDS=family.NEEDS, compare=compare)
    return importlib.import_module(f"parity_cases.{method}")
