"""Shared fixtures: disentanglement_lib itself (the reference for metric numbers), run helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# CPU-fast settings for runs made by tests: few steps, a log line per step, no metrics.
FAST = ["train.steps=6", "train.log_every=1", "train.checkpoint_every=3", "train.progress=false"]


def bench_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``bench ...`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="session", autouse=True)
def isolated_data_dirs(tmp_path_factory):
    """Tests never read or write the user's dataset and cache folders."""
    root = tmp_path_factory.mktemp("bench-dirs")
    saved = {k: os.environ.get(k) for k in ("BENCH_DATA", "BENCH_CACHE")}
    os.environ["BENCH_DATA"], os.environ["BENCH_CACHE"] = str(root / "data"), str(root / "cache")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _install_gin_shims() -> None:
    """metrics.md §0: dlib imports gin.tf (TensorFlow) and uses gin 0.4's blacklist= keyword."""
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


@pytest.fixture(scope="session")
def dlib_metrics():
    """disentanglement_lib's metric modules (pip install --no-deps disentanglement-lib==1.5)."""
    _install_gin_shims()
    from disentanglement_lib.evaluation.metrics import mig, utils

    return {"mig": mig, "utils": utils}


@pytest.fixture(scope="session")
def dlib_metrics_all():
    """Every dlib metric module the equivalence tests compare with."""
    _install_gin_shims()
    import importlib

    names = [
        "beta_vae",
        "dci",
        "downstream_task",
        "factor_vae",
        "irs",
        "mig",
        "modularity_explicitness",
        "sap_score",
        "unsupervised_metrics",
    ]
    return {
        name: importlib.import_module(f"disentanglement_lib.evaluation.metrics.{name}")
        for name in names
    }


@pytest.fixture
def gin_bindings():
    """Parse gin bindings for one test and clear them after, as dlib's evaluate() would."""
    import gin

    def parse(bindings: list[str]) -> None:
        gin.parse_config_files_and_bindings([], bindings)

    yield parse
    gin.clear_config()
