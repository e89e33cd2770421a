"""Run records on disk: one folder per run, plain files, atomic writes.

Layout of a run folder, ``<out>/<dataset>/<method>/<config-hash>/seed<k>/``::

    config.yaml        the resolved config (its hash names the parent folder)
    status.json        running | complete | failed | interrupted, with details
    environment.json   package versions, git hash, device, peak memory, wall time
    log.jsonl          one JSON object per logged training step
    checkpoints/       the newest checkpoints (model, optimizer, EMA, step, every RNG state),
                       step-<N>.pt, each with its size and checksum in step-<N>.json
    claim.<n>.json     who is writing the record now, with a heartbeat (bench/claim.py)
    model.safetensors  the final weights
    metrics.json       {metric name: {version, hyperparams, values}}, written metric by metric;
                       a method's score subsets as ``<metric>/<subset>`` (DisUnknown's
                       ``mig/unknown``: the unlabelled factors on its unknown code)
    metrics_history.jsonl  with eval.every=N: a cheap battery every N training steps
    metrics_replaced.jsonl every score a re-scoring (``bench eval`` with other settings)
                       replaced in metrics.json, oldest first: nothing scored is ever lost
    run.json           how the run was asked for: method, dataset, seed, preset, and the
                       overrides that set it apart from the method's defaults (its label);
                       deviations from the authors' code, and a weakly supervised method's
                       supervision ("weakly supervised (labels: …)")

Every file but the log is written to a temporary file and renamed into place, so a reader
never sees a half-written file. The log is appended line by line; a line cut short by a
crash is ignored when read. This module imports no torch: reports read records, not models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.claim import current_holder
from bench.fileio import atomic_write_json, atomic_write_text

RUNNING, COMPLETE, FAILED, INTERRUPTED = "running", "complete", "failed", "interrupted"
PENDING = "pending"  # no status yet: never started
# Marks a configuration that departs from its authors' released code (run.json says how).
DEVIATION_MARK = "‡"


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when the file is missing or damaged (a file cut short by a
    filesystem is treated as never written: the run redoes what it recorded)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError):
        return None


# The override that makes a run the untrained baseline, and its name in labels.
UNTRAINED = ("train.steps=0", "untrained")


def run_label(method: str, overrides: list[str] | tuple[str, ...] = (), variant: str = "") -> str:
    """How a configuration is named in reports and listings: the sweep variant when there is
    one, else the overrides that set it apart from the method's defaults, e.g.
    ``beta_vae (method.beta=8.0)``; ``train.steps=0`` reads "untrained" (the networks at
    their seeded initialisation: the floor every score is read against)."""
    if variant and variant != "default":
        return f"{method} [{variant}]"
    words = [UNTRAINED[1] if o == UNTRAINED[0] else o for o in overrides]
    return f"{method} ({', '.join(words)})" if words else method


# What says how a metrics.json result was scored, beside its values and provenance.
SCORING_SETTINGS = ("version", "profile", "hyperparams", "random_seed", "reduce", "pca_rows")


def scoring_settings(result: dict[str, Any], keys: tuple[str, ...] = SCORING_SETTINGS) -> dict:
    """How a metrics.json result was scored, flat: its ``keys``, hyperparameters by name."""
    flat = {}
    for key in keys:
        value = result.get(key)
        if key == "hyperparams":
            flat.update(value or {})
        else:
            flat[key] = value
    return flat


def settings_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``num_train 10000 → 200`` for every flat setting that differs, by name."""
    names = sorted(set(before) | set(after))
    return [f"{n} {before.get(n)} → {after.get(n)}" for n in names if before.get(n) != after.get(n)]


def run_dir(out: Path, dataset: str, method: str, config_hash: str, seed: int) -> Path:
    return Path(out) / dataset / method / config_hash / f"seed{seed}"


def _append_line(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run
            continue
    return entries


def find_runs(root: Path) -> list[RunRecord]:
    """Every run record under ``root`` (a records folder or any folder inside one), sorted by
    path; shared-stage artifacts are not runs."""
    root = Path(root)
    if (root / "status.json").is_file() and root.name.startswith("seed"):
        return [RunRecord(root)]
    statuses = root.glob("**/seed*/status.json")
    found = {p.parent for p in statuses if "artifacts" not in p.relative_to(root).parts}
    return [RunRecord(p) for p in sorted(found)]


class RunRecord:
    """The files of one run."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    config_file = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    environment_file = property(lambda self: self.path / "environment.json")
    log_file = property(lambda self: self.path / "log.jsonl")
    metrics_file = property(lambda self: self.path / "metrics.json")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    weights_file = property(lambda self: self.path / "model.safetensors")
    identity_file = property(lambda self: self.path / "run.json")
    history_file = property(lambda self: self.path / "metrics_history.jsonl")
    replaced_file = property(lambda self: self.path / "metrics_replaced.jsonl")
    sweep_file = property(lambda self: self.path / "sweep.json")

    def identity(self) -> dict[str, Any]:
        """run.json (method, dataset, seed, preset, distinguishing overrides) and, for a
        sweep's run, sweep.json's sweep and variant; {} for a record older than both."""
        return {**(read_json(self.identity_file) or {}), **(read_json(self.sweep_file) or {})}

    def label(self) -> str:
        identity = self.identity()
        method = identity.get("method") or self.path.parts[-3]
        label = run_label(method, identity.get("distinguishing", ()), identity.get("variant", ""))
        return label + (f" {DEVIATION_MARK}" if identity.get("deviations") else "")

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        return read_json(self.status_file)

    def state(self) -> str | None:
        status = self.status()
        return status["state"] if status else None

    def describe_state(self) -> str:
        """The state as listings show it: a running run names who holds it, or says that its
        holder is gone (its claim is stale: running the run again resumes it)."""
        state = self.state() or PENDING
        _, holder = current_holder(self.path)
        if state != RUNNING or holder is None:
            return state
        if holder.is_stale():
            return f"{state} (stopped: {holder.describe()} is gone)"
        return f"{state} by {holder.describe()}"

    def is_complete(self) -> bool:
        return self.state() == COMPLETE

    def set_status(self, state: str, **details: Any) -> None:
        atomic_write_json(self.status_file, {"state": state, **details})

    # --- training log and metric history (JSON lines, one per step) -----------------------

    def append_log(self, entry: dict[str, Any]) -> None:
        _append_line(self.log_file, entry)

    def read_log(self) -> list[dict[str, Any]]:
        return _read_lines(self.log_file)

    def append_history(self, entry: dict[str, Any]) -> None:
        _append_line(self.history_file, entry)

    def read_history(self) -> list[dict[str, Any]]:
        return _read_lines(self.history_file)

    def truncate_log(self, last_step: int) -> None:
        """Drop log and history entries past ``last_step``: a resumed run writes those steps
        again."""
        for path in (self.log_file, self.history_file):
            if path.is_file():
                kept = [e for e in _read_lines(path) if e.get("step", 0) <= last_step]
                atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))

    # --- metrics --------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_file) or {}

    def write_metric(self, name: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """Puts ``record`` in metrics.json as ``name``; an earlier result it replaces is
        appended to metrics_replaced.jsonl first, and returned."""
        metrics = self.metrics()
        earlier = metrics.get(name)
        if earlier is not None:
            _append_line(self.replaced_file, {"metric": name, **earlier})
        metrics[name] = record
        atomic_write_json(self.metrics_file, metrics)
        return earlier

    def replaced_metrics(self) -> list[dict[str, Any]]:
        """Every result a re-scoring replaced, oldest first, each with its ``metric``."""
        return _read_lines(self.replaced_file)
