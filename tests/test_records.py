"""Run records under concurrency and damage: one writer per run (claims with a heartbeat),
checkpoints verified before they are trusted, damaged stages, weights and metrics redone."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bench import datasets
from bench.build import build_method
from bench.claim import Claim, ClaimLost, current_holder
from bench.config import resolve_config
from bench.errors import BenchError
from bench.runner import load_run, run
from bench.stages import load_or_train_stage
from bench.store import COMPLETE, RUNNING, RunRecord
from bench.sweep import load_sweep, status_table
from bench.train import train
from tests.conftest import FAST, bench_cli
from tests.grid_data import FactorGrid

SLOW_ENOUGH = [o for o in FAST if not o.startswith("train.steps")] + ["train.steps=20"]
SLOW_ENOUGH += ["eval.hyperparams.mig.num_train=200"]


def test_two_sweeps_on_one_folder_train_each_run_exactly_once(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "twice",
                "methods": ["beta_vae"],
                "datasets": ["dsprites-procedural"],
                "seeds": 2,
                "preset": "smoke",
                "overrides": SLOW_ENOUGH,
                "executor": {"kind": "local", "workers": 1},
            }
        )
    )
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "bench", "sweep", str(sweep_file), "--out", str(out)]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("**/claim.*.json")):  # the first sweep holds its first run
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    outputs = [process.communicate(timeout=600)[1] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs

    sweep = load_sweep(sweep_file, out=out)
    for spec in sweep.runs():
        steps = [e["step"] for e in RunRecord(spec.path).read_log() if "loss" in e]
        assert steps == list(range(1, 21)), spec.path  # trained once: each step logged once
    assert status_table(sweep)[1] == {COMPLETE: 2}
    assert "is being trained by" in outputs[1] and "moving on" in outputs[1]
    for output in outputs:  # both commands end saying every run is complete
        assert sum("complete beta_vae" in line for line in output.splitlines()) == 2, output


HOLDER = """
import platform, sys, time
platform.node = lambda: "node-b"  # another node: its pid says nothing on this host
from bench.claim import Claim
claim = Claim(sys.argv[1], heartbeat_s=0.2, stale_after_s=2.0)
assert claim.try_acquire() is None
print("held", flush=True)
while not claim.lost:
    time.sleep(0.05)
print("lost", flush=True)
"""


def start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_live_claim_holds_and_a_killed_ones_lapses_after_its_stale_limit(tmp_path):
    holder = start_holder(tmp_path)
    try:
        for _ in range(15):  # 3 s, longer than the stale limit: the heartbeat keeps it held
            taken = Claim(tmp_path).try_acquire()
            assert taken is not None and taken.host == "node-b" and taken.pid == holder.pid
            time.sleep(0.2)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.time()
        mine = Claim(tmp_path)
        while mine.try_acquire() is not None:
            assert time.time() - killed < 10, "a dead holder's claim never lapsed"
            time.sleep(0.05)
        # Taken over once the last heartbeat (at most 0.2 s before the kill) was 2 s old.
        assert 1.7 < time.time() - killed < 5
        assert current_holder(tmp_path)[1].token == mine.holder.token
        mine.release()
    finally:
        holder.kill()


def test_a_frozen_holder_whose_claim_was_taken_over_stops_writing(tmp_path):
    holder = start_holder(tmp_path)
    try:
        holder.send_signal(signal.SIGSTOP)  # frozen past its stale limit, as a hung node
        mine = Claim(tmp_path)
        while mine.try_acquire() is not None:
            time.sleep(0.05)
        holder.send_signal(signal.SIGCONT)
        assert holder.stdout.readline().strip() == "lost"  # noticed at its next heartbeat
        assert current_holder(tmp_path)[1].token == mine.holder.token
        mine.release()
    finally:
        holder.kill()


CONTENDER = """
import sys, time
from bench.claim import Claim
claim = Claim(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print("won" if claim.try_acquire() is None else "lost", flush=True)
time.sleep(2)  # keep a won claim alive while the others look
claim.release()
"""


def test_of_many_simultaneous_claimants_exactly_one_wins(tmp_path):
    start = time.time() + 3
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    answers = sorted(process.communicate(timeout=60)[0].strip() for process in contenders)
    assert answers == ["lost"] * 7 + ["won"]


def test_a_requeued_slurm_job_takes_back_its_own_claim_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.node", lambda: "node-b")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    before_requeue = Claim(tmp_path, heartbeat_s=0.1, stale_after_s=60)
    assert before_requeue.try_acquire() is None
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job waits: the claim is live
    assert Claim(tmp_path).try_acquire().slurm_job == "77"
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same job, started again by SLURM
    requeued = Claim(tmp_path)
    assert requeued.try_acquire() is None
    time.sleep(0.5)
    with pytest.raises(ClaimLost, match="taken over"):
        before_requeue.check()
    token = requeued.holder.token
    before_requeue.release()
    assert current_holder(tmp_path)[1].token == token  # the old holder undid nothing
    requeued.release()


def test_bench_run_waits_for_a_held_run_or_exits_75_without_waiting(tmp_path):
    args = ["run", "--method", "beta_vae", "--dataset", "dsprites-procedural", "--preset"]
    args += ["smoke", "--out", str(tmp_path), *FAST]
    cfg_hash = bench_cli(*args, "--print-config").stdout.strip().split()[-1]
    folder = tmp_path / "dsprites-procedural" / "beta_vae" / cfg_hash / "seed0"
    held = Claim(folder)
    assert held.try_acquire() is None
    refused = bench_cli(*args, "--no-wait")
    assert refused.returncode == 75
    assert f"is being trained by {held.holder.describe()}" in refused.stderr
    assert not (folder / "status.json").exists()  # it wrote nothing to the record

    waiting = subprocess.Popen(
        [sys.executable, "-m", "bench", *args], stderr=subprocess.PIPE, text=True
    )
    assert any("waiting for it" in waiting.stderr.readline() for _ in range(5))
    time.sleep(1)
    assert not (folder / "status.json").exists()
    held.release()
    waiting.communicate(timeout=300)
    assert waiting.returncode == 0 and RunRecord(folder).is_complete()


def test_sweep_status_names_who_holds_a_running_run(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {"methods": ["beta_vae"], "datasets": ["dsprites-procedural"], "preset": "smoke"}
        )
    )
    sweep = load_sweep(sweep_file, out=tmp_path / "runs")
    (spec,) = sweep.runs()
    record = RunRecord(spec.path)
    claim = Claim(spec.path)
    claim.try_acquire()
    record.set_status(RUNNING)
    ((_, state),) = status_table(sweep)[0]
    assert state == f"running by {claim.holder.describe()}"
    description = claim.holder.describe()
    claim.release()  # a process that ended without finishing its record
    ((_, state),) = status_table(sweep)[0]
    assert state == f"running (stopped: {description} is gone)"


def damage(path: Path, keep_size: bool = False) -> None:
    """Cut a file in half, or flip one byte in its middle (same size, wrong checksum)."""
    data = bytearray(path.read_bytes())
    if keep_size:
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


def test_every_checkpoint_damaged_is_a_one_line_error_and_force_restarts(tmp_path):
    overrides = [*FAST, "eval.metrics=[]"]
    record = run("beta_vae", "dsprites-procedural", "smoke", overrides, out=tmp_path)
    newest, previous = sorted(record.checkpoints_dir.glob("step-*.pt"), reverse=True)
    damage(newest)
    damage(previous, keep_size=True)
    record.set_status("interrupted")  # as a run stopped before its end

    args = ["run", "--method", "beta_vae", "--dataset", "dsprites-procedural", "--preset"]
    refused = bench_cli(*args, "smoke", "--out", str(tmp_path), *overrides)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr  # one line
    assert f"no usable checkpoint in {record.checkpoints_dir}" in refused.stderr
    assert "step-000000006.pt (" in refused.stderr
    assert "step-000000003.pt (checksum mismatch)" in refused.stderr
    assert "--force" in refused.stderr

    run("beta_vae", "dsprites-procedural", "smoke", overrides, out=tmp_path, force=True)
    assert record.is_complete() and [e["step"] for e in record.read_log()] == list(range(1, 7))


def test_damaged_weights_and_metrics_of_a_complete_run_are_redone(tmp_path):
    overrides = [*FAST, "eval.hyperparams.mig.num_train=200"]
    record = run("beta_vae", "dsprites-procedural", "smoke", overrides, out=tmp_path)
    weights, metrics = record.weights_file.read_bytes(), record.metrics()

    record.metrics_file.write_text(record.metrics_file.read_text()[:20])  # cut short
    damage(record.weights_file, keep_size=True)
    with pytest.raises(BenchError, match=r"model.safetensors is damaged \(checksum mismatch\)"):
        load_run(record.path)
    again = run("beta_vae", "dsprites-procedural", "smoke", overrides, out=tmp_path)
    assert again.path == record.path and again.is_complete()
    assert again.weights_file.read_bytes() == weights  # rewritten from the final checkpoint
    rescored = again.metrics()  # with the same draws
    assert {k: v["values"] for k, v in rescored.items()} == {
        k: v["values"] for k, v in metrics.items()
    }
    assert [e["step"] for e in again.read_log() if "loss" in e] == list(range(1, 7))


def test_a_damaged_cached_stage_is_trained_again_never_loaded(tmp_path, capsys):
    from tests.test_dyga_sd import TINY

    cfg = resolve_config("sd", "shapes3d-procedural", "smoke", TINY)
    data = datasets.load("shapes3d-procedural")
    (stage,) = build_method(cfg, data).stages()
    record = RunRecord(tmp_path / "run")

    def first_stage() -> RunRecord:
        load_or_train_stage(stage, cfg, data, tmp_path, record)
        return RunRecord(record.read_log()[-1]["path"])

    artifact = first_stage()
    trained = {k: v.clone() for k, v in load_file(artifact.weights_file).items()}  # not the file's
    damage(artifact.weights_file)  # the weights only: written again from the final checkpoint
    capsys.readouterr()
    assert first_stage().path == artifact.path
    assert "is damaged (model.safetensors:" in capsys.readouterr().err
    restored = load_file(artifact.weights_file)
    assert all(torch.equal(trained[k], restored[k]) for k in trained)

    damage(artifact.weights_file, keep_size=True)  # weights and every checkpoint
    for checkpoint in artifact.checkpoints_dir.glob("step-*.pt"):
        damage(checkpoint)
    first_stage()
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "no usable checkpoint" in err and "training again" in err
    retrained = load_file(artifact.weights_file)
    assert all(torch.equal(trained[k], retrained[k]) for k in trained)  # same seed, same stage
    assert [e["reused"] for e in record.read_log()] == [False, False, False]
    assert [e["step"] for e in artifact.read_log() if "loss" in e] == [1, 2]
    first_stage()
    assert record.read_log()[-1]["reused"] is True  # verified, then loaded


def test_checkpoints_keep_the_newest_two_and_a_legacy_last_pt_still_resumes(tmp_path):
    from tests.test_train import Quadratic, QuadraticConfig, quadratic_cfg

    data = FactorGrid((4, 4))
    record = RunRecord(tmp_path)
    cfg = quadratic_cfg(steps=8, batch_size=4, lr=0.05, checkpoint_every=2)
    reference = Quadratic(QuadraticConfig(), data.image_shape)
    train(reference, data, cfg, record)
    names = sorted(p.name for p in record.checkpoints_dir.iterdir())
    assert names == [f"step-00000000{step}.{ext}" for step in (6, 8) for ext in ("json", "pt")]
    digest = json.loads((record.checkpoints_dir / "step-000000008.json").read_text())
    written = (record.checkpoints_dir / "step-000000008.pt").read_bytes()
    assert digest == {
        "step": 8,
        "size": len(written),
        "sha256": hashlib.sha256(written).hexdigest(),
    }

    # A record from before checksums: last.pt alone, at step 6.
    (record.checkpoints_dir / "step-000000006.pt").rename(record.checkpoints_dir / "last.pt")
    for path in record.checkpoints_dir.glob("step-*"):
        path.unlink()
    resumed = Quadratic(QuadraticConfig(), data.image_shape)
    train(resumed, data, cfg, record)
    assert torch.equal(resumed.weight, reference.weight)
    assert sorted(p.name for p in record.checkpoints_dir.iterdir()) == [
        "step-000000008.json",
        "step-000000008.pt",
    ]
