"""Sweep expansion, idempotence, retries and resume of a killed worker's run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bench.cli import estimate_line
from bench.errors import BenchError
from bench.store import COMPLETE, UNTRAINED, RunRecord
from bench.sweep import Estimate, load_sweep, run_local, status_table

QUICK = ["train.steps=4", "train.log_every=1", "train.checkpoint_every=2", "train.progress=false"]
QUICK += ["eval.metrics=[mig]", "eval.hyperparams.mig.num_train=200"]


def write_sweep(path, **fields):
    data = {
        "name": "t",
        "methods": ["beta_vae"],
        "datasets": ["dsprites-procedural"],
        "seeds": 1,
        "preset": "smoke",
        "overrides": QUICK,
        "executor": {"kind": "local", "workers": 2},
        **fields,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_expansion_crosses_variants_grid_and_seeds_and_merges_identical_configs(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            seeds=[0, 3],
            variants={"default": [], "beta4": ["method.beta=4"], "same": ["method.beta=1.0"]},
            grid={"train.lr": [0.0001, 0.0002]},
        ),
        out=tmp_path / "runs",
    )
    runs = sweep.runs()
    # default and "same" are one config (beta 1 is the default): 2 variants × 2 lrs × 2 seeds.
    assert len(runs) == 8
    assert {r.variant for r in runs} == {
        "train.lr=0.0001", "train.lr=0.0002", "beta4,train.lr=0.0001", "beta4,train.lr=0.0002",
    }  # fmt: skip
    assert {r.seed for r in runs} == {0, 3}
    assert len({r.path for r in runs}) == 8


def test_a_methods_own_grid_applies_to_that_method_only(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            methods=["beta_vae", "factor_vae"],
            variants={"default": [], "lr2": ["train.lr=0.0002"]},
            grids={"factor_vae": {"method.gamma": [10, 20]}},
        ),
        out=tmp_path / "runs",
    )
    runs = {(r.method, r.variant) for r in sweep.runs()}
    assert runs == {
        ("beta_vae", "default"), ("beta_vae", "lr2"),
        ("factor_vae", "method.gamma=10"), ("factor_vae", "method.gamma=20"),
        ("factor_vae", "lr2,method.gamma=10"), ("factor_vae", "lr2,method.gamma=20"),
    }  # fmt: skip
    with pytest.raises(BenchError, match=r"grids for \['dip_vae_i'\], which 'methods'"):
        load_sweep(write_sweep(tmp_path / "b.yaml", grids={"dip_vae_i": {"method.lambda_od": [1]}}))


def test_a_methods_own_datasets_and_seeds_replace_the_sweeps_for_that_method_only(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            methods=["beta_vae", "factor_vae"],
            seeds=2,
            per_method={
                "beta_vae": {"datasets": ["dsprites-procedural", "shapes3d-procedural"]},
                "factor_vae": {"seeds": [5]},
            },
        ),
        out=tmp_path / "runs",
    )
    runs = {(r.method, r.dataset, r.seed) for r in sweep.runs()}
    assert runs == {
        ("beta_vae", "dsprites-procedural", 0), ("beta_vae", "dsprites-procedural", 1),
        ("beta_vae", "shapes3d-procedural", 0), ("beta_vae", "shapes3d-procedural", 1),
        ("factor_vae", "dsprites-procedural", 5),
    }  # fmt: skip
    bad = {
        "per_method for \\['dip_vae_i'\\], which 'methods'": {"dip_vae_i": {"seeds": 1}},
        "per_method.beta_vae: unknown key": {"beta_vae": {"sedes": 1}},
        "per_method.beta_vae.datasets must list": {"beta_vae": {"datasets": []}},
        "per_method.beta_vae: seeds must be a count": {"beta_vae": {"seeds": "two"}},
        "per_method.beta_vae must be a mapping": {"beta_vae": [1]},
    }
    for message, per_method in bad.items():
        with pytest.raises(BenchError, match=message):
            load_sweep(write_sweep(tmp_path / "b.yaml", per_method=per_method))


def test_the_estimate_takes_a_complete_seeds_wall_time_then_the_files_numbers(tmp_path):
    estimates = {"stages": {"vq_autoencoder": 7}, "runs": {"default": {"default": 100}}}
    one = load_sweep(write_sweep(tmp_path / "s.yaml", estimate_s=estimates), tmp_path / "runs")
    before = one.estimate(one.runs())
    assert (before.seconds, dict(before.sources)) == (100.0, {"estimate_s": 1})
    assert run_local(one, log=lambda line: None) == []
    done = json.loads((one.runs()[0].path / "environment.json").read_text())["wall_time_s"]

    file = write_sweep(
        tmp_path / "s.yaml",
        methods=["beta_vae", "factor_vae", "dyga_sd"],
        seeds=2,
        preset="ci",
        estimate_s={**estimates, "runs": {"default": {"default": 100, "factor_vae": 30}}},
    )
    three = load_sweep(file, tmp_path / "runs")
    # beta_vae's seed 1: the smoke-preset record above is another config, so the file's 100.
    assert three.estimate(three.runs()).seconds == 100 * 2 + 30 * 2 + 100 * 2 + 7
    quick = load_sweep(
        write_sweep(tmp_path / "s.yaml", seeds=2, estimate_s=estimates), tmp_path / "runs"
    )
    pending = [r for r in quick.runs() if r.seed == 1]
    estimate = quick.estimate(pending)
    assert (estimate.seconds, dict(estimate.sources)) == (done, {"measured": 1})
    with pytest.raises(BenchError, match=r"estimate_s.runs.default.default must be seconds"):
        load_sweep(
            write_sweep(tmp_path / "b.yaml", estimate_s={"runs": {"default": {"default": "x"}}})
        )
    with pytest.raises(BenchError, match=r"estimate_s: unknown key\(s\) \['run'\]"):
        load_sweep(write_sweep(tmp_path / "b.yaml", estimate_s={"run": {}}))


def test_the_estimate_line_names_its_sources_and_shares_the_time_among_workers():
    some = Estimate(7200.0, Counter({"measured": 1, "estimate_s": 2, "none": 1}))
    assert estimate_line(some, slots=4) == (
        "estimate: 2.0 h of compute (1 measured on a complete seed of the same run here; "
        "2 from the sweep file's estimate_s; 1 not covered by estimate_s, counted as 0), "
        "about 0.5 h on 4 workers"
    )
    assert estimate_line(Estimate(), slots=None) == "estimate: nothing left to run"


def test_bad_sweep_files_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown key"):
        load_sweep(write_sweep(tmp_path / "a.yaml", sedes=3))
    with pytest.raises(BenchError, match="unknown method"):
        load_sweep(write_sweep(tmp_path / "b.yaml", methods=["beta_vea"]))


def test_a_sweep_run_twice_does_nothing_new_and_a_new_seed_runs_alone(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", seeds=2)
    sweep = load_sweep(path, out=tmp_path / "runs")
    lines: list[str] = []
    assert run_local(sweep, log=lines.append) == []
    assert sum(line.startswith("started") for line in lines) == 2
    _, counts = status_table(sweep)
    assert counts == {COMPLETE: 2}
    finished = {r.path: (r.path / "status.json").stat().st_mtime_ns for r in sweep.runs()}

    lines.clear()
    assert run_local(sweep, log=lines.append) == []
    assert lines == []
    assert {r.path: (r.path / "status.json").stat().st_mtime_ns for r in sweep.runs()} == finished

    more = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=3), out=tmp_path / "runs")
    lines.clear()
    run_local(more, log=lines.append)
    assert [line for line in lines if line.startswith("started")] == [
        "started beta_vae/dsprites-procedural/default/seed2 (attempt 1)"
    ]
    variant = json.loads((more.runs()[2].path / "sweep.json").read_text())
    assert variant == {"sweep": "t", "variant": "default", "overrides": QUICK}


def test_failed_runs_are_retried_then_reported(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", retries=1, overrides=[*QUICK, "train.lr=1e30"])
    sweep = load_sweep(path, out=tmp_path / "runs")
    lines: list[str] = []
    failed = run_local(sweep, log=lines.append)
    assert len(failed) == 1
    assert sum(line.startswith("started") for line in lines) == 2  # one retry
    assert any(line.startswith("FAILED") and "loss became" in line for line in lines)


def test_a_killed_workers_run_resumes_from_its_checkpoint(tmp_path):
    overrides = [o for o in QUICK if not o.startswith("train.steps")] + ["train.steps=80"]
    path = write_sweep(tmp_path / "s.yaml", overrides=overrides, retries=1)
    out = tmp_path / "runs"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "bench", "sweep", str(path), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    (spec,) = load_sweep(path, out=out).runs()
    record = RunRecord(spec.path)
    deadline = time.time() + 300
    while not (record.read_log() and record.read_log()[-1].get("step", 0) >= 20):
        assert time.time() < deadline and sweep.poll() is None
        time.sleep(0.2)
    os.kill(record.status()["pid"], signal.SIGKILL)  # the worker's run dies without warning
    _, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, stderr
    assert "retrying" in stderr and record.is_complete()
    assert "resuming" in (spec.path / "sweep.log").read_text()
    steps = [e["step"] for e in record.read_log() if "loss" in e]
    assert steps == list(range(1, 81))  # each step logged once: resumed, not restarted


def test_a_sweep_missing_the_inception_file_stops_before_it_runs_anything(tmp_path):
    from tests.conftest import bench_cli

    overrides = [*QUICK[:-2], "eval.metrics=[fid]"]
    path = write_sweep(tmp_path / "s.yaml", seeds=3, overrides=overrides)
    result = bench_cli("sweep", str(path), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    error = result.stderr.strip()
    assert "bench data download fid-inception" in error and "\n" not in error
    assert not (tmp_path / "runs").exists()


def test_the_learning_sweep_pairs_each_learned_run_with_its_untrained_floor():
    sweep = load_sweep(Path("sweeps/learning.yaml"))
    runs = sweep.runs()
    learned = {(r.method, r.dataset, r.seed) for r in runs if r.variant == "learn"}
    untrained = {(r.method, r.dataset, r.seed) for r in runs if r.variant == "untrained"}
    assert learned == untrained
    assert {d for m, d, _ in learned if m == "beta_vae"} == {
        "shapes3d-procedural", "dsprites-procedural"
    }  # fmt: skip
    assert all(UNTRAINED[0] in r.overrides for r in runs if r.variant == "untrained")
    assert sweep.estimate(runs).sources["none"] == 0  # every run has an estimate
