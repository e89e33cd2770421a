"""One run: resolve the config, build, train, evaluate, record.

``run(...)`` is what ``bench run`` calls; ``load_run(path)`` brings a finished run back
(config, trained method, metrics), for a notebook.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig
from safetensors.torch import load_model
from tqdm import tqdm

from bench import datasets
from bench.build import build_method
from bench.claim import Claim, ClaimLost, Holder, say_waiting
from bench.config import (
    config_hash,
    distinguishing_overrides,
    from_dict,
    resolve_config,
    to_yaml,
    written_before_fields,
)
from bench.datasets import GroundTruthData
from bench.environment import environment
from bench.errors import BenchError
from bench.evaluate import check_ready, evaluate, score_history
from bench.fileio import atomic_write_json, atomic_write_text, make_folder
from bench.methods import METHODS
from bench.methods.base import Method
from bench.stages import load_or_train_stage, shared_stages
from bench.store import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunRecord, read_json, run_dir
from bench.train import NonFiniteLoss, Preempted, numerics, select_device, train
from bench.weights import save_weights, weights_problem


class RunClaimed(Exception):
    """The run is being written by another live process (``bench run --no-wait``)."""

    def __init__(self, record: RunRecord, holder: Holder) -> None:
        super().__init__(f"{record.path} is being trained by {holder.describe()}")
        self.holder = holder


@dataclass(frozen=True)
class RunPlan:
    """A run's settings, resolved once, and what follows from them: every step of the run
    reads these instead of resolving or hashing again."""

    cfg: DictConfig
    config_hash: str
    preset: str | None
    record: RunRecord
    device: torch.device
    out: Path  # the runs folder (stages are cached under its artifacts/)


def run(
    method: str,
    dataset: str,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    out: Path | str = "runs",
    force: bool = False,
    config_files: list[Path] | tuple[Path, ...] = (),
    wait: bool = True,
) -> RunRecord:
    """Train and evaluate one run, or resume it, or return it untouched if complete.

    The run is claimed first (``bench/claim.py``): while another live process holds it, this
    call waits for it (``wait``) or raises ``RunClaimed``, and never writes to its record."""
    cfg = resolve_config(method, dataset, preset, overrides, seed=seed, config_files=config_files)
    device = select_device(cfg.train.device)
    if cfg.data.device is not None:
        select_device(cfg.data.device, "data.device")
    data = datasets.load(cfg.dataset.name, **cfg.dataset.options)
    check_ready(METHODS.get(method), data, cfg.eval)
    run_hash = config_hash(cfg)
    record = RunRecord(run_dir(Path(out), dataset, method, run_hash, cfg.seed))
    plan = RunPlan(cfg, run_hash, preset, record, device, Path(out))
    if record.config_file.is_file() and not force:
        read_config(record)  # refuses a record whose config.yaml was edited
    if not force and _finished(record, cfg):
        tqdm.write(f"already complete: {record.path} (--force reruns it)", file=sys.stderr)
        return record
    # The method and its trainer refuse settings they cannot train before anything is written.
    model = build_method(cfg, data)
    model.trainer(cfg.train, device)
    shared_stages(cfg, data, out)  # and its stages' (a missing weights file): on meta, at once
    make_folder(record.path, "the run record")
    claim = Claim(record.path, cfg.train.heartbeat_s, cfg.train.stale_after_s)
    holder = claim.acquire(wait, on_wait=lambda h: say_waiting(record.path, h))
    if holder is not None:
        raise RunClaimed(record, holder)
    with claim:
        if not force and _finished(record, cfg, quiet=True):  # the holder we waited for did it
            tqdm.write(f"complete: {record.path} (trained by another process)", file=sys.stderr)
            return record
        return _run_claimed(plan, model, data, claim, force=force)


def _finished(record: RunRecord, cfg: DictConfig, quiet: bool = False) -> bool:
    """Whether the record is complete with verified weights and every metric; a complete
    record with a damaged file is finished again (weights from its final checkpoint, the
    missing metrics rescored), and says so."""
    if not record.is_complete():
        return False
    problem = weights_problem(record)
    missing = [m for m in cfg.eval.metrics if m not in record.metrics()]
    if problem is None and not missing:
        return True
    if not quiet:
        what = f"model.safetensors is damaged ({problem})" if problem else ""
        what = what or f"metrics.json lacks {', '.join(missing)} (damaged or removed)"
        tqdm.write(f"warning: {record.path}: {what}; finishing the run again", file=sys.stderr)
    return False


def identity(plan: RunPlan, model: Method) -> dict[str, Any]:
    """What identity.json says the run is: the report's row label and marks come from it.
    ``distinguishing``: where its settings differ from its method's defaults for the same
    dataset and preset (those defaults resolved here, once)."""
    cfg = plan.cfg
    method, dataset = cfg.method.name, cfg.dataset.name
    defaults = resolve_config(method, dataset, plan.preset, seed=cfg.seed)
    found = {
        "method": method,
        "dataset": dataset,
        "seed": cfg.seed,
        "preset": plan.preset,
        "config_hash": plan.config_hash,
        "distinguishing": distinguishing_overrides(cfg, defaults),
        "deviations": model.deviations(),
    }
    if model.supervision is not None:
        found["supervision"] = model.supervision.description
    return found


def _run_claimed(
    plan: RunPlan, model: Method, data: GroundTruthData, claim: Claim, force: bool = False
) -> RunRecord:
    """``run`` once the claim is held: every write to the record happens here."""
    cfg, record, device, run_hash = plan.cfg, plan.record, plan.device, plan.config_hash
    if force:  # everything but the claim goes
        for entry in record.path.iterdir():
            if not entry.name.startswith("claim."):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    atomic_write_text(record.config_file, to_yaml(cfg))
    atomic_write_json(record.identity_file, identity(plan, model))
    earlier = read_json(record.environment_file) or {}  # an interrupted run's earlier segments
    started = time.time()
    record.set_status(
        RUNNING, config_hash=run_hash, pid=os.getpid(), host=platform.node(), started=started
    )
    curves = metric_curves(plan, model, data)

    def on_step(step: int) -> None:
        claim.check()
        if curves is not None:
            curves(step)

    flags: dict[str, Any] = {}
    try:
        with numerics(cfg.train, device) as flags:
            weights = _train_and_score(plan, model, data, claim, on_step)
    except ClaimLost:
        raise  # the record is another process's now: write nothing more to it
    except Preempted as stop:
        record.set_status(INTERRUPTED, step=stop.step, reason=str(stop))
        raise
    except NonFiniteLoss as error:
        record.set_status(
            FAILED, error=str(error), step=error.step, last_finite_loss=error.last_finite
        )
        raise
    except BaseException as error:
        state = INTERRUPTED if isinstance(error, KeyboardInterrupt) else FAILED
        record.set_status(state, error=repr(error), traceback=traceback.format_exc())
        raise
    finally:
        if not claim.lost:
            segment = time.time() - started
            info = environment(device, segment, earlier, flags)
            atomic_write_json(record.environment_file, info)
    record.set_status(
        COMPLETE,
        config_hash=run_hash,
        started=started,
        finished=time.time(),
        weights=weights,
        training=model.training_summary(),
    )
    return record


def _train_and_score(
    plan: RunPlan,
    model: Method,
    data: GroundTruthData,
    claim: Claim,
    on_step: Callable[[int], None],
) -> dict[str, Any]:
    """Stages, training, weights, evaluation and pictures of a claimed run; returns the
    weights' size and checksum."""
    cfg, record, device = plan.cfg, plan.record, plan.device
    for stage in model.stages():
        trained = load_or_train_stage(stage, cfg, data, plan.out, record=record)
        model.attach_stage(stage.name, trained)
    train(model, data, cfg, record, on_step=on_step)
    claim.check()
    weights = save_weights(model, record)
    evaluate(model, data, cfg.eval, record, device=device)
    pictures = model.pictures(data, record.path / "pictures", device)
    if pictures:
        tqdm.write(f"pictures: {', '.join(str(p) for p in pictures)}", file=sys.stderr)
    claim.check()
    return weights


def metric_curves(
    plan: RunPlan, model: Method, data: GroundTruthData
) -> Callable[[int], None] | None:
    """With ``eval.every=N``: what scores the history battery every N steps of training."""
    eval_cfg = plan.cfg.eval
    if eval_cfg.every is None:
        return None

    def score_if_due(step: int) -> None:
        if step % eval_cfg.every == 0:
            score_history(model, data, eval_cfg, plan.record, device=plan.device, step=step)

    return score_if_due


@dataclass
class LoadedRun:
    record: RunRecord
    config: DictConfig
    method: Method
    metrics: dict[str, Any]
    dataset: Any


def read_config(record: RunRecord) -> DictConfig:
    """A run record's config.yaml, checked against the folder it names: an edited file is a
    one-line error (its weights and scores belong to the settings the folder is named by)."""
    saved = yaml.safe_load(record.config_file.read_text())
    cfg = from_dict(saved)
    found, named = f"{config_hash(cfg)}/seed{cfg.seed}", "/".join(record.path.parts[-2:])
    if found != named and not written_before_fields(saved):
        raise BenchError(
            f"{record.config_file} was edited: its settings belong in {found}, not in "
            f"{named}; put it back as it was (to run other settings, `bench run` them: "
            "they get a record of their own)"
        )
    return cfg


def load_run(path: Path | str, device: str = "cpu") -> LoadedRun:
    """A finished run from its folder: config, trained method (in eval mode), metrics, dataset."""
    record = RunRecord(Path(path))
    if not record.weights_file.is_file():
        raise BenchError(f"{record.path} holds no trained model (model.safetensors); run it first")
    problem = weights_problem(record)
    if problem is not None:
        raise BenchError(
            f"{record.weights_file} is damaged ({problem}); run its `bench run` command again "
            "to write it anew from the final checkpoint"
        )
    cfg = read_config(record)
    data = datasets.load(cfg.dataset.name, **cfg.dataset.options)
    model = build_method(cfg, data)
    load_model(model, str(record.weights_file), device=device)
    model = model.to(device).eval()
    return LoadedRun(record, cfg, model, metrics=record.metrics(), dataset=data)
