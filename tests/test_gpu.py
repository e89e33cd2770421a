"""For the first GPU: resume, precision and compile on CUDA (``python -m pytest -m gpu``).
Each skips where torch sees no CUDA device."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bench.runner import run
from tests.test_methods import conformance_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DIFFUSION = ["dyga_sd", "encdiff", "disdiff", "diti", "dbrl", "ldm", "ddpm_pixel"]
ON_GPU = ["train.device=cuda", "data.device=cuda", "train.progress=false"]


def test_a_resumed_dyga_sd_smoke_run_ends_as_an_uninterrupted_one(tmp_path):
    overrides = [*ON_GPU, "train.deterministic=true", "train.checkpoint_every=50"]
    whole = run("dyga_sd", "shapes3d-procedural", "smoke", overrides, out=tmp_path / "a")
    # The same run stopped after 100 steps (a shorter run's checkpoints), then resumed.
    first = run(
        "dyga_sd", "shapes3d-procedural", "smoke", [*overrides, "train.steps=100"], out=tmp_path
    )
    where = whole.path.relative_to(tmp_path / "a")  # <dataset>/<method>/<hash>/seed0
    (tmp_path / "c" / where).mkdir(parents=True)
    (first.path / "checkpoints").rename(tmp_path / "c" / where / "checkpoints")
    resumed = run("dyga_sd", "shapes3d-procedural", "smoke", overrides, out=tmp_path / "c")
    a, b = load_file(whole.weights_file), load_file(resumed.weights_file)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", DIFFUSION)
def test_every_diffusion_method_trains_in_reduced_precision_and_compiled(name, precision, tmp_path):
    overrides = [*conformance_overrides(name), *ON_GPU, f"train.precision={precision}"]
    record = run(
        name, "shapes3d-procedural", "ci", [*overrides, "train.compile=true"], out=tmp_path
    )
    assert record.is_complete()
