"""Run records: atomic writes, a log that survives a crash mid-line."""

from __future__ import annotations

import json
import os
import stat

import pytest

from bench.fileio import atomic_path, atomic_write_json, atomic_write_text
from bench.store import RunRecord


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half')
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_log_ignores_a_cut_line_and_truncates_on_resume(tmp_path):
    record = RunRecord(tmp_path)
    for step in (1, 2, 3):
        record.append_log({"step": step})
    with record.log_file.open("a") as f:
        f.write('{"step": 4, "lo')  # the process died mid-write
    assert [e["step"] for e in record.read_log()] == [1, 2, 3]
    record.truncate_log(2)
    assert [e["step"] for e in record.read_log()] == [1, 2]


def test_metrics_are_kept_metric_by_metric(tmp_path):
    record = RunRecord(tmp_path)
    record.write_metric("mig", {"values": {"discrete_mig": 0.1}})
    record.write_metric("dci", {"values": {"disentanglement": 0.2}})
    assert list(record.metrics()) == ["mig", "dci"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_carry_the_umasks_permissions(tmp_path, mask):
    previous = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        RunRecord(tmp_path / "run").set_status("running")
    finally:
        os.umask(previous)
    for path in (tmp_path / "a.txt", tmp_path / "run" / "status.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_a_resumed_run_drops_log_and_history_past_its_checkpoint(tmp_path):
    record = RunRecord(tmp_path)
    for step in (1, 2, 3, 4):
        record.append_log({"step": step, "loss": 1.0})
        record.append_history({"step": step, "metric": "mig", "values": {}})
    record.truncate_log(2)
    assert [e["step"] for e in record.read_log()] == [1, 2]
    assert [e["step"] for e in record.read_history()] == [1, 2]
