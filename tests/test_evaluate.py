"""Evaluation: encode once and score many gives the numbers of encoding directly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bench.config import EvalConfig
from bench.datasets.attribute_data import AttributeImages
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.methods.base import Method, MethodConfig
from bench.metrics import METRICS
from bench.metrics.tad import tad_score
from bench.store import RunRecord
from tests.conftest import bench_cli
from tests.grid_data import FactorGrid

SMALL = {
    "mig": {"num_train": 500},
    "factor_vae": {"num_train": 40, "num_eval": 20, "num_variance_estimate": 300},
    "beta_vae": {"num_train": 40, "num_eval": 20},
    "irs": {"num_train": 500},
    "dci": {"num_train": 200, "num_test": 100, "n_jobs": 1},
}


@dataclass
class ElementwiseConfig(MethodConfig):
    name: str = "elementwise"


class Elementwise(Method):
    """An encoder made of elementwise ops only, so a code never depends on its batch."""

    config_class = ElementwiseConfig

    @property
    def representation_dim(self):
        return 3

    def training_loss(self, batch, generator):
        raise AssertionError("not trained")

    def encode(self, images):
        x = images.flatten(1).double() * 255
        return torch.stack(
            [x[:, 0] * 2 + torch.sin(x[:, 1]), x[:, 1] - 0.5 * x[:, 0], x[:, 0] * x[:, 1]], 1
        )


def direct(method):
    def represent(observations):
        images = torch.from_numpy(observations).permute(0, 3, 1, 2)
        return method.encode(images).float().numpy()  # float32 codes, as evaluation keeps them

    return represent


def eval_cfg(**settings):
    cfg = OmegaConf.structured(EvalConfig())
    return OmegaConf.merge(cfg, {"hyperparams": SMALL, **settings})


@pytest.mark.parametrize("encode", ["all", "lazy"])
def test_code_table_scores_equal_direct_encoding(tmp_path, encode):
    data, method = FactorGrid((3, 4, 5)), Elementwise(ElementwiseConfig(), (1, 1, 3))
    cfg = eval_cfg(metrics=list(SMALL), encode=encode)
    results = evaluate(method, data, cfg, RunRecord(tmp_path), torch.device("cpu"))
    for name, hyperparams in SMALL.items():
        spec = METRICS.get(name)
        settings = {**spec.hyperparameters(spec.function), **hyperparams}
        expected = spec.function(data, direct(method), np.random.RandomState(0), None, **settings)
        assert results[name]["values"] == {k: float(v) for k, v in expected.items()}, name


def test_evaluation_ignores_gin_bindings_made_earlier_in_the_process(tmp_path):
    """A user's dlib-style bindings (and global RNG seed) never reach bench's evaluation:
    it calls the metrics themselves, not their gin wrappers, with every setting explicit."""
    import gin

    from bench.metrics.utils import _identity_discretizer, logistic_regression_cv

    data, method = FactorGrid((3, 4, 5)), Elementwise(ElementwiseConfig(), (1, 1, 3))
    metrics = [*SMALL, "downstream_task"]
    cfg = eval_cfg(
        metrics=metrics,
        hyperparams={**SMALL, "downstream_task": {"num_train": [60], "num_test": 30}},
    )
    clean = evaluate(method, data, cfg, RunRecord(tmp_path / "clean"), torch.device("cpu"))
    # Full names: dlib's metrics may be imported in this process too (bench.metrics.utils).
    bindings = {
        "bench.metrics.mig.mig.num_train": 50,
        "bench.metrics.dci.dci.num_train": 50,
        "bench.metrics.irs.irs.diff_quantile": 0.5,
        "bench.metrics.beta_vae.beta_vae_sklearn.batch_size": 2,
        "bench.metrics.factor_vae.factor_vae_score.num_train": 3,
        "bench.metrics.factor_vae.prune_dims.threshold": 1e9,
        "bench.metrics.utils.discretizer.num_bins": 3,
        "bench.metrics.utils.discretizer.discretizer_fn": _identity_discretizer,
        "bench.metrics.utils.predictor.predictor_fn": logistic_regression_cv,
        "bench.metrics.downstream_task.downstream_task.num_test": 7,
    }
    try:
        for key, value in bindings.items():
            gin.bind_parameter(key, value)
        np.random.seed(123)
        bound = evaluate(method, data, cfg, RunRecord(tmp_path / "bound"), torch.device("cpu"))
    finally:
        gin.clear_config()
    for name in metrics:
        assert bound[name]["values"] == clean[name]["values"], name


def test_finished_metrics_are_kept_and_changed_settings_rescored(tmp_path, capsys):
    data, method = FactorGrid((3, 4)), Elementwise(ElementwiseConfig(), (1, 1, 2))
    record = RunRecord(tmp_path)
    evaluate(method, data, eval_cfg(metrics=["mig"]), record, torch.device("cpu"))
    first = record.metrics()["mig"]
    evaluate(method, data, eval_cfg(metrics=["mig"]), record, torch.device("cpu"))
    assert record.metrics()["mig"]["seconds"] == first["seconds"]  # not scored again
    assert record.replaced_metrics() == []
    capsys.readouterr()
    changed = eval_cfg(metrics=["mig"], hyperparams={"mig": {"num_train": 300}})
    evaluate(method, data, changed, record, torch.device("cpu"))
    assert record.metrics()["mig"]["hyperparams"]["num_train"] == 300
    assert first["profile"] == "exact" and first["hyperparams"]["num_bins"] == 20
    # The earlier score is kept, and the re-scoring said what it replaced, in words.
    assert record.replaced_metrics() == [{"metric": "mig", **first}]
    mig = first["values"]["discrete_mig"]
    assert (
        f"mig: re-scored with num_train {first['hyperparams']['num_train']} → 300; "
        f"replaces discrete_mig {mig:.4f}, kept in metrics_replaced.jsonl"
    ) in capsys.readouterr().err.splitlines()


def test_pca1_keeps_mig_of_a_flat_code(tmp_path):
    data, method = FactorGrid((3, 4, 5)), Elementwise(ElementwiseConfig(), (1, 1, 3))
    scores = [
        evaluate(
            method,
            data,
            eval_cfg(metrics=["mig"], reduce=reduce),
            RunRecord(tmp_path / reduce),
            torch.device("cpu"),
        )["mig"]["values"]["discrete_mig"]
        for reduce in ("none", "pca1")
    ]
    assert scores[0] == pytest.approx(scores[1], abs=1e-12)


class Attributes(AttributeImages):
    """A CelebA-like attribute dataset: images carry two binary attributes."""

    image_shape = (1, 1, 3)
    attribute_names = ("a", "b")

    def __init__(self, n: int = 400):
        rng = np.random.default_rng(0)
        self.attributes = rng.integers(0, 2, size=(n, 2)).astype(np.uint8)
        self._images = np.concatenate([self.attributes * 200, rng.integers(0, 255, (n, 1))], 1)

    def __len__(self):
        return len(self.attributes)

    def images(self, indices):
        return self._images[indices].astype(np.uint8)[:, None, None, :]


def test_tad_through_the_code_table_equals_tad_on_the_codes(tmp_path):
    data, method = Attributes(), Elementwise(ElementwiseConfig(), (1, 1, 3))
    cfg = eval_cfg(metrics=["tad"], hyperparams={"tad": {"num_eval": 300}})
    result = evaluate(method, data, cfg, RunRecord(tmp_path), torch.device("cpu"))["tad"]
    rows = np.random.RandomState(0).choice(len(data), size=300, replace=False)
    codes = direct(method)(data.observations(rows))
    assert result["values"] == {
        k: float(v) for k, v in tad_score(codes, data.attributes[rows]).items()
    }


def test_bench_eval_reads_dlib_gin_files(tmp_path):
    out = tmp_path / "runs"
    run = bench_cli(
        "run",
        "--method",
        "beta_vae",
        "--dataset",
        "dsprites-procedural",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "train.steps=3",
        "train.progress=false",
        "eval.metrics=[]",
    )
    assert run.returncode == 0, run.stderr
    (record,) = out.glob("dsprites-procedural/beta_vae/*/seed0")
    gin_file = tmp_path / "mig.gin"
    gin_file.write_text(
        'evaluation.evaluation_fn = @mig\ndataset.name="auto"\nevaluation.random_seed = 3\n'
        "mig.num_train=2000\ndiscretizer.discretizer_fn = @histogram_discretizer\n"
        "discretizer.num_bins = 10\n"
    )
    result = bench_cli("eval", str(record), "--gin", str(gin_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{record}:\n  mig: discrete_mig=")
    import json

    mig = json.loads((record / "metrics.json").read_text())["mig"]
    assert mig["hyperparams"] == {"num_train": 2000, "batch_size": 16, "num_bins": 10}
    assert mig["random_seed"] == 3
    irs_file = tmp_path / "irs.gin"
    irs_file.write_text("evaluation.evaluation_fn = @irs\nirs.num_train = 500\n")
    both = bench_cli("eval", str(record), "--gin", str(gin_file), "--gin", str(irs_file))
    assert both.returncode == 0, both.stderr
    scored = [line.split(":")[0] for line in both.stdout.splitlines()[1:]]
    assert scored == ["  mig", "  irs"]
    # Only what was asked for is printed, though metrics.json keeps irs too.
    again = bench_cli("eval", str(record), "--gin", str(gin_file))
    assert [line.split(":")[0] for line in again.stdout.splitlines()[1:]] == ["  mig"]
    gin_file.write_text("evaluation.evaluation_fn = @mig\nmodel.name = 'x'\n")
    bad = bench_cli("eval", str(record), "--gin", str(gin_file))
    assert bad.returncode == 2 and "unknown binding 'model.name'" in bad.stderr


def test_dlib_own_gin_files_read_like_ours():
    from pathlib import Path

    import disentanglement_lib

    from bench.metrics.helpers.gin_config import read_gin

    folder = (
        Path(disentanglement_lib.__file__).parent / "config/unsupervised_study_v1/metric_configs"
    )
    dlib_files = sorted(folder.glob("*.gin"))
    assert len(dlib_files) == 9
    for dlib_file in dlib_files:
        ours = Path(__file__).parents[1] / "configs" / "gin" / dlib_file.name
        assert read_gin(dlib_file) == read_gin(ours), dlib_file.name


class OneToken(Elementwise):
    """The same 3 numbers, declared as one latent unit's token."""

    code_units = 1


def test_tad_with_the_pca_fitted_on_its_own_images(tmp_path):
    # DyGA+SD's protocol: PCA(1) per unit fitted on the scored images' tokens, grid step 0.1.
    data, method = Attributes(), OneToken(ElementwiseConfig(), (1, 1, 3))
    cfg = eval_cfg(
        metrics=["tad"],
        reduce="pca1",
        pca_fit="sample",
        hyperparams={"tad": {"num_eval": 300, "grid_step": 0.1}},
    )
    result = evaluate(method, data, cfg, RunRecord(tmp_path), torch.device("cpu"))["tad"]
    rows = np.random.RandomState(0).choice(len(data), size=300, replace=False)
    codes = direct(method)(data.observations(rows)).astype(np.float64)
    centred = codes - codes.mean(axis=0)
    first_component = np.linalg.svd(centred, full_matrices=False)[2][0]
    scalars = (centred @ first_component)[:, None]  # the sign does not matter to TAD
    expected = tad_score(scalars, data.attributes[rows], 0.1)
    assert result["values"]["tad"] == pytest.approx(expected["tad"], abs=1e-6)
    assert result["hyperparams"]["pca_units"] == 1 and result["pca_rows"] is None
    assert result["protocol"] == "step 0.1, 300 images, PCA on them"


def test_a_pca_fitted_per_metric_sample_is_for_the_metrics_that_fit_it(tmp_path):
    data, method = FactorGrid((3, 4, 5)), OneToken(ElementwiseConfig(), (1, 1, 3))
    cfg = eval_cfg(metrics=["mig"], reduce="pca1", pca_fit="sample")
    message = r"only attribute_probe and tad do; score mig with eval\.pca_fit=dataset"
    with pytest.raises(BenchError, match=message):
        evaluate(method, data, cfg, RunRecord(tmp_path), torch.device("cpu"))
