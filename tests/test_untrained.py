"""``train.steps=0``: the untrained baseline. The networks are scored at their seeded
initialisation, the stages a method encodes through are trained as usual, and reports and
listings call the row "untrained"."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import bench.datasets
from bench.build import build_method
from bench.config import resolve_config
from bench.report import collect, with_rows
from bench.runner import run
from bench.store import RunRecord, run_label
from tests.test_methods import conformance_overrides

UNTRAINED = ["train.steps=0", "eval.metrics=[mig]", "eval.hyperparams.mig.num_train=200"]


@pytest.mark.parametrize("name", ["beta_vae", "disunknown", "ldm"])
def test_an_untrained_run_keeps_its_seeded_initial_weights(name, tmp_path):
    overrides = [*conformance_overrides(name), *UNTRAINED]
    record = run(name, "dsprites-procedural", "smoke", overrides, out=tmp_path)
    assert record.is_complete() and "mig" in record.metrics()
    cfg = resolve_config(name, "dsprites-procedural", "smoke", overrides)
    initial = build_method(cfg, bench.datasets.load("dsprites-procedural")).state_dict()
    saved = load_file(record.weights_file)
    own = [k for k in saved if not k.startswith(("first_stage.", "ldm.", "ddpm."))]
    assert own, "the method has weights of its own"
    assert all(torch.equal(saved[k], initial[k]) for k in own), "trained despite steps=0"
    if name == "ldm":  # its first stage was trained as usual, and is the one it encodes with
        (stage,) = (tmp_path / "artifacts" / "vq_autoencoder" / "dsprites-procedural").iterdir()
        assert [e["step"] for e in RunRecord(stage).read_log() if "loss" in e][-1] == 3
        trained = load_file(RunRecord(stage).weights_file)
        vq = {k.removeprefix("vq."): v for k, v in trained.items() if k.startswith("vq.")}
        assert vq and all(torch.equal(saved[f"first_stage.{k}"], v) for k, v in vq.items())


def test_the_untrained_row_is_named_so_in_reports_and_listings(tmp_path):
    run("beta_vae", "dsprites-procedural", "smoke", ["train.steps=0"], out=tmp_path)
    (row,) = set(with_rows(collect(tmp_path)).row)
    assert row == "beta_vae (smoke preset, untrained)"
    assert run_label("beta_vae", ["method.beta=4", "train.steps=0"]) == (
        "beta_vae (method.beta=4, untrained)"
    )
