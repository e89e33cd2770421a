"""Sweeps that use every GPU, tested without one: a faked GPU list, the stage-first plan on
CPU workers, and the SLURM job parameters as sbatch would read them."""

from __future__ import annotations

import json
import sys
import time
import types

import pytest
import yaml

from bench.store import RunRecord
from bench.sweep import load_sweep, run_local, run_slurm, worker_threads
from tests.test_methods import conformance_overrides


def sweep_file(tmp_path, **fields):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "gpus", "datasets": ["shapes3d-procedural"], **fields}))
    return path


class FakeProcesses:
    """subprocess.Popen for the sweep's workers: each 'runs' until all eight have started
    (or two seconds have passed), recording its environment and how many ran at once."""

    def __init__(self) -> None:
        self.envs, self.alive, self.most = [], 0, 0

    def __call__(self, command, env, stdout, stderr):
        owner = self
        owner.envs.append(env)
        owner.alive += 1
        owner.most = max(owner.most, owner.alive)
        started = time.time()

        class Process:
            returncode = None

            def poll(self):
                if self.returncode is None and (len(owner.envs) >= 8 or time.time() - started > 2):
                    self.returncode = 0
                    owner.alive -= 1
                return self.returncode

        return Process()


def test_eight_gpus_get_eight_workers_whatever_the_file_says(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(8))))
    fake = FakeProcesses()
    monkeypatch.setattr("bench.sweep.subprocess.Popen", fake)
    file = sweep_file(tmp_path, methods=["beta_vae"], seeds=8, preset="ci", executor={"workers": 2})
    lines = []
    assert run_local(load_sweep(file, tmp_path / "runs"), log=lines.append) == []
    assert fake.most == 8
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in fake.envs) == [str(i) for i in range(8)]
    assert {env["OMP_NUM_THREADS"] for env in fake.envs} == {str(worker_threads(8))}
    assert any("one worker per GPU" in line for line in lines)


def test_a_dyga_sd_sweep_trains_its_vq_stage_once_before_any_run(tmp_path):
    overrides = [o for o in conformance_overrides("dyga_sd") if not o.startswith("train.steps")]
    file = sweep_file(
        tmp_path,
        methods=["dyga_sd"],
        seeds=4,
        preset="smoke",
        overrides=[*overrides, "train.steps=3"],
        executor={"workers": 4},
    )
    out = tmp_path / "runs"
    assert run_local(load_sweep(file, out), log=lambda line: None) == []
    (stage,) = [p.parent for p in (out / "artifacts").glob("*/*/*/status.json")]
    assert RunRecord(stage).is_complete()
    stage_done = json.loads((stage / "status.json").read_text())["finished"]
    runs = [p.parent for p in (out / "shapes3d-procedural").glob("*/*/seed*/status.json")]
    assert len(runs) == 4
    for run in runs:
        assert json.loads((run / "status.json").read_text())["started"] > stage_done
        (event,) = [e for e in RunRecord(run).read_log() if e.get("event") == "first_stage"]
        assert event["reused"] and event["path"] == str(stage)
        assert "waiting" not in (run / "sweep.log").read_text()


class FakeSubmitit:
    """submitit's AutoExecutor, recording the parameters each array is submitted with."""

    def __init__(self) -> None:
        self.submitted = []  # (parameters, function name, specs)
        record = self

        class AutoExecutor:
            def __init__(self, folder, cluster):
                self.parameters = {}

            def update_parameters(self, **parameters):
                self.parameters = parameters

            def map_array(self, function, specs, *rest):
                record.submitted.append((dict(self.parameters), function.__name__, list(specs)))
                first = 100 + len(record.submitted)
                return [types.SimpleNamespace(job_id=f"{first}_{i}") for i in range(len(specs))]

        self.module = types.SimpleNamespace(AutoExecutor=AutoExecutor)


def sbatch_script(parameters, folder) -> str:
    """The script submitit would hand sbatch for these AutoExecutor parameters."""
    from submitit.slurm.slurm import _make_sbatch_string

    generic = {"name": "job_name", "timeout_min": "time"}
    converted = {}
    for key, value in parameters.items():
        if key == "mem_gb":
            converted["mem"] = f"{value}GB"
        else:
            converted[generic.get(key, key.removeprefix("slurm_"))] = value
    return _make_sbatch_string(command="true", folder=folder, **converted)


def test_a_cuda_slurm_sweep_asks_for_a_gpu_and_carries_the_cluster_settings(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    fake = FakeSubmitit()
    monkeypatch.setitem(sys.modules, "submitit", fake.module)
    file = sweep_file(
        tmp_path,
        methods=["dyga_sd"],
        seeds=2,
        preset="ci",
        overrides=["train.device=cuda"],
        slurm={"account": "lab", "qos": "high", "constraint": "a100", "partition": "gpu"},
    )
    assert run_slurm(load_sweep(file, tmp_path / "runs"), wait=False, log=lambda _: None) == []
    (stage_parameters, stage_function, _), (parameters, function, specs) = fake.submitted
    assert (stage_function, function) == ("stage_job", "run_job") and len(specs) == 2
    assert parameters["slurm_additional_parameters"] == {"dependency": "afterok:101_0"}
    assert (
        "slurm_additional_parameters" not in stage_parameters
        or not stage_parameters["slurm_additional_parameters"]
    )
    script = sbatch_script(parameters, tmp_path)
    for line in (
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --partition=gpu",
        "#SBATCH --dependency=afterok:101_0",
    ):
        assert line in script, line


def test_an_auto_device_slurm_sweep_without_gpus_here_says_so(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    fake = FakeSubmitit()
    monkeypatch.setitem(sys.modules, "submitit", fake.module)
    file = sweep_file(tmp_path, methods=["beta_vae"], seeds=1, preset="ci")
    lines = []
    run_slurm(load_sweep(file, tmp_path / "runs"), wait=False, log=lines.append)
    ((parameters, _, _),) = fake.submitted
    assert "gpus_per_node" not in parameters
    assert any("gpus_per_task: 1" in line for line in lines)


def test_a_dry_run_shows_workers_then_stages_by_wave_then_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bench.cli import app

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    file = sweep_file(tmp_path, methods=["disdiff", "beta_vae"], seeds=2, preset="ci")
    result = CliRunner().invoke(app, ["sweep", str(file), "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    plan = result.output.splitlines()[-5:]
    assert plan[0] == "workers: 2 (GPU 0, GPU 1)"
    assert plan[1].startswith("stage, wave 1: vq_autoencoder ") and plan[1].endswith("(worker 1)")
    assert plan[2].startswith("stage, wave 2: ldm ")
    assert plan[3] == "then 4 run(s), each on the first free worker"
    assert (
        plan[4]
        == "estimate: none (the sweep file's estimate_s covers none of its 6 runs and stages)"
    )
    assert not (tmp_path / "artifacts").exists()  # a plan only
