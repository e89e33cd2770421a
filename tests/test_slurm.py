"""A sweep through the slurm executor on a real (local) SLURM cluster: every record
completes, and a job sent SIGTERM mid-run requeues and finishes from its checkpoint.

`.ci/run` starts a one-node cluster (`.ci/slurm-up.sh`); elsewhere the test skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import yaml

from bench.store import RunRecord
from bench.sweep import load_sweep, run_slurm


def require_cluster() -> None:
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM here: sbatch is not on PATH (.ci/slurm-up.sh starts a local one)")
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"SLURM is installed but sinfo fails: {error}")
    if not any(state in states for state in ("idle", "mixed", "allocated")):
        pytest.skip(f"SLURM is installed but no node is up (sinfo: {states.strip() or 'none'})")


def start_when_requeued(job_name: str, deadline: float) -> None:
    """SLURM holds a requeued job for about two minutes before it may start again; a test
    need not wait that out, so start it now."""
    while time.time() < deadline:
        pending = subprocess.run(
            ["squeue", "-h", "-t", "PD", "-n", job_name, "-o", "%i"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if pending:
            for job in pending:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])
            return
        time.sleep(0.5)


def test_slurm_sweep_completes_and_a_sigtermed_job_requeues(tmp_path):
    require_cluster()
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "slurmtest",
                "methods": ["beta_vae"],
                "datasets": ["dsprites-procedural"],
                "seeds": 2,
                "preset": "smoke",
                "overrides": [
                    "train.steps=60",
                    "train.log_every=1",
                    "train.checkpoint_every=20",
                    "train.progress=false",
                    "eval.metrics=[mig]",
                    "eval.hyperparams.mig.num_train=200",
                ],
                "retries": 0,
                "executor": {"kind": "slurm"},
                "slurm": {"cpus_per_task": 1, "mem_gb": 2, "time_min": 30},
            }
        )
    )
    sweep = load_sweep(sweep_file, out=tmp_path / "runs")
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.update(failed=run_slurm(sweep, log=print, poll_s=1.0))
    )
    worker.start()

    record = RunRecord(sweep.runs()[0].path)
    deadline = time.time() + 300
    while not (record.read_log() and record.read_log()[-1].get("step", 0) >= 25):
        assert time.time() < deadline, "the first SLURM job never got going"
        time.sleep(0.5)
    os.kill(record.status()["pid"], signal.SIGTERM)  # what SLURM sends before preemption
    start_when_requeued("bench-slurmtest", deadline=time.time() + 120)

    worker.join(timeout=600)
    assert not worker.is_alive() and outcome["failed"] == []
    assert all(RunRecord(spec.path).is_complete() for spec in sweep.runs())
    job_logs = "".join(p.read_text() for p in (tmp_path / "runs" / ".slurm").rglob("*.err"))
    assert "resuming" in job_logs  # the requeued job continued from its checkpoint
    steps = [e["step"] for e in record.read_log() if "loss" in e]
    assert steps == list(range(1, 61))
