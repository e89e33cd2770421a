"""Shared fixtures: disentanglement_lib itself (the reference for metric numbers), run helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.datasets.download import LPIPS_HEADS_FILE, VGG16_FILE, folder_of
from bench.metrics.helpers.dlib_reference import dlib_metric_module

# CPU-fast settings for runs made by tests: few steps, a log line per step, one metric.
FAST = [
    "train.steps=6",
    "train.log_every=1",
    "train.checkpoint_every=3",
    "train.progress=false",
    "eval.metrics=[mig]",
]


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


# Under pytest-xdist (the README's `python -m pytest` runs one worker per core, up to 4):
# the cores are shared out, in this process and in the `bench` processes tests start.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session", autouse=True)
def isolated_data_dirs(tmp_path_factory):
    """Tests never read or write the user's dataset and cache folders. The workers of one
    xdist session share the render cache (written atomically), each its own data folder."""
    root = tmp_path_factory.mktemp("bench-dirs")
    shared = tmp_path_factory.getbasetemp().parent if WORKERS > 1 else root
    saved = {k: os.environ.get(k) for k in ("BENCH_DATA", "BENCH_CACHE")}
    os.environ["BENCH_DATA"], os.environ["BENCH_CACHE"] = str(root / "data"), str(shared / "cache")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# dlib's metric modules that bench.metrics mirrors, module for module.
DLIB_METRIC_MODULES = (
    "beta_vae",
    "dci",
    "downstream_task",
    "factor_vae",
    "irs",
    "mig",
    "modularity_explicitness",
    "sap_score",
    "unsupervised_metrics",
)


@pytest.fixture(scope="session")
def dlib_metrics():
    """Every dlib metric module the equivalence tests compare with."""
    return {name: dlib_metric_module(name) for name in DLIB_METRIC_MODULES}


@pytest.fixture
def injected_network(monkeypatch, tmp_path):
    """FID without the Inception weights (which cannot be downloaded here): a small random
    feature network in its place, a placeholder where the weights file goes (so a run's
    check before training passes), and a cache of real statistics of the test's own."""
    from bench.metrics import fid
    from bench.metrics.helpers import fid_inception

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    placeholder = tmp_path / "placeholder-inception.pth"
    placeholder.write_bytes(b"")
    monkeypatch.setattr(fid_inception, "default_weights", lambda: placeholder)
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 6), torch.nn.Tanh()
    )
    monkeypatch.setattr(fid, "feature_network", lambda weights, device: (network, "small"))
    return network


@pytest.fixture
def lpips_files(monkeypatch, tmp_path):
    """The paper first stages ask for the LPIPS weight files; built on meta they are only
    looked for, not read, so empty stand-ins will do, in a data folder of the test's own (a
    user's downloaded files are neither shadowed nor removed)."""
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    folder = folder_of("lpips")
    folder.mkdir(parents=True)
    for name in (VGG16_FILE, LPIPS_HEADS_FILE):
        (folder / name).touch()
