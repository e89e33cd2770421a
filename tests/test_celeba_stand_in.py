"""The CelebA path without CelebA: the attribute stand-in, the settings it takes from CelebA's,
the checks a run makes before it trains, and a run scored by TAD, FID and the attribute
probe whose report sets CelebA's published rows beside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import bench.datasets
from bench.config import resolve_config
from bench.datasets.shapes3d import FACTOR_SIZES
from bench.errors import BenchError
from bench.report import write_report
from bench.runner import run

PUBLISHED = Path(__file__).parents[1] / "results" / "published"


def test_the_stand_in_has_celebas_contract_and_attributes_of_its_renders():
    data = bench.datasets.load("shapes3d-attributes", size=500)
    source = bench.datasets.load("shapes3d-procedural")
    assert len(data) == 500 and data.attributes.shape == (500, 6)
    assert data.attributes.dtype == np.uint8 and set(np.unique(data.attributes)) == {0, 1}
    # Attribute k: factor k's value index in the upper half of its values, from the row index.
    factors = np.stack(np.unravel_index(data.rows, FACTOR_SIZES), axis=1)
    np.testing.assert_array_equal(data.attributes, factors >= np.array(FACTOR_SIZES) // 2)
    assert data.attribute_names[0] == "floor_hue_upper"
    np.testing.assert_array_equal(data.images(np.arange(4)), source.images(data.rows[:4]))
    np.testing.assert_array_equal(data.observations([3]), data.images([3]) / np.float32(255))
    # CelebA's proportions, in index order; the rows, a fixed draw without replacement.
    assert np.bincount(data.partition).tolist() == [402, 49, 49]
    assert len(set(data.rows.tolist())) == 500
    again = bench.datasets.load("shapes3d-attributes", size=500)
    np.testing.assert_array_equal(again.rows, data.rows)
    with pytest.raises(BenchError, match="size must be between"):
        bench.datasets.load("shapes3d-attributes", size=5)


def test_the_stand_in_runs_with_celebas_settings_then_its_own():
    for method in ("dyga_sd", "disdiff", "diti"):
        celeba = resolve_config(method, "celeba")
        stand_in = resolve_config(method, "shapes3d-attributes")
        for key in ("eval", "train"):
            assert stand_in[key] == celeba[key], (method, key)
    dyga = resolve_config("dyga_sd", "shapes3d-attributes")
    assert dyga.train.batch_size == 64 and list(dyga.eval.metrics) == ["tad", "fid"]
    assert dyga.eval.hyperparams.tad == {"grid_step": 0.1, "num_eval": 10000}
    smoke = resolve_config("dyga_sd", "shapes3d-attributes", "smoke")
    assert list(smoke.eval.metrics) == ["tad", "fid", "attribute_probe"]
    assert smoke.eval.hyperparams.fid == {"num_images": 500, "sample_steps": 10}
    assert smoke.train.batch_size == 32  # the method's smoke section still has the last word
    ci = resolve_config("dyga_sd", "shapes3d-attributes", "ci")
    assert OmegaConf.to_container(ci.dataset.options) == {"size": 2000}
    # Factor datasets are untouched by CelebA's sections.
    assert list(resolve_config("dyga_sd", "shapes3d-procedural", "smoke").eval.metrics) == [
        "factor_vae",
        "dci",
        "mig",
        "sap_score",
    ]


@pytest.mark.parametrize(
    ("dataset", "metric", "message"),
    [
        ("shapes3d-attributes", "mig", "mig needs a dataset of factors"),
        ("shapes3d-procedural", "tad", "tad needs a dataset of attributes"),
        ("shapes3d-attributes", "fid", "bench data download fid-inception"),
    ],
)
def test_a_battery_that_cannot_be_scored_is_refused_before_training(
    dataset, metric, message, tmp_path
):
    with pytest.raises(BenchError, match=message) as error:
        run(
            "beta_vae",
            dataset,
            "ci",
            [f"eval.metrics=[{metric}]", "dataset.options={}"],
            out=tmp_path,
        )
    assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir()), "nothing is written for a run refused up front"


def test_a_celeba_run_on_the_stand_in_scores_tad_fid_and_the_probe_and_is_reported(
    injected_network, tmp_path
):
    record = run("dyga_sd", "shapes3d-attributes", "ci", out=tmp_path / "runs")
    metrics = json.loads(record.metrics_file.read_text())
    assert list(metrics) == ["tad", "fid", "attribute_probe"]
    assert metrics["tad"]["protocol"] == "step 0.1, 1000 images, PCA on them"
    assert metrics["fid"]["protocol"] == "100 images, 4 sampler steps"
    assert metrics["fid"]["values"]["fid"] > 0
    # The Inception file it was computed with (here the placeholder: sha256 of no bytes).
    assert metrics["fid"]["inception_weights"] == "placeholder-inception.pth"
    assert metrics["fid"]["inception_sha256"] == hashlib.sha256(b"").hexdigest()
    assert 0 <= metrics["attribute_probe"]["values"]["mean_ap"] <= 1
    assert list((record.path / "pictures").glob("*.png"))

    written = write_report(tmp_path / "runs", tmp_path / "report", reported=PUBLISHED)
    table = written["markdown"].read_text()
    header = table.splitlines()[0]
    assert "TAD [step 0.1, 1000 images, PCA on them] ↑" in header
    assert "FID [100 images, 4 sampler steps] ↓" in header
    # CelebA's published rows, moved beside the stand-in and marked as reported on CelebA;
    # DyGA+SD's in the columns of its protocol, the rest in columns of their own.
    assert "shapes3d-attributes FID [50000 images, 100 sampler steps] ↓" in header
    assert "shapes3d-attributes FID ↓" in header
    for row in ("DyGA+SD (reported on celeba)", "EncDiff (reported on celeba)", "DisDiff"):
        assert row in table
    dyga = next(line for line in table.splitlines() if "DyGA+SD (reported on celeba)" in line)
    assert "0.954 ± 0.024" in dyga and "13.000" in dyga
