"""The stages a method builds on (a VQ first stage, a frozen diffusion model): resolved from
its settings, trained once per dataset and settings into ``<out>/artifacts/``, verified, and
reused by every run that asks for the same one.

A sweep plans them with ``shared_stages`` and trains each first (``train_shared_stage``); a
run loads or trains its own with ``load_or_train_stage``."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model
from tqdm import tqdm

from bench import datasets
from bench.build import build_method
from bench.checkpoints import DamagedCheckpoints
from bench.claim import Claim, say_waiting
from bench.config import (
    RUNTIME_KEYS,
    DatasetConfig,
    RunConfig,
    config_hash,
    resolve_config,
    to_yaml,
)
from bench.datasets import GroundTruthData
from bench.errors import BenchError
from bench.fileio import atomic_write_text
from bench.methods import METHODS
from bench.methods.base import Method, Stage
from bench.store import COMPLETE, RUNNING, RunRecord
from bench.train import numerics, select_device, train
from bench.weights import save_weights, weights_problem

# A stage trains on the run's device and reports progress as the run does: it takes the
# run's runtime settings of train.*, but for those it sets itself (checkpoint_every, from its
# own train.*) or does without (tensorboard).
STAGE_RUNTIME_KEYS = tuple(
    key.partition(".")[2]
    for key in RUNTIME_KEYS
    if key.startswith("train.") and key not in ("train.checkpoint_every", "train.tensorboard")
)


def stage_config(stage: Stage, cfg: DictConfig) -> DictConfig:
    """The full config of ``stage`` of the run ``cfg``: its own settings, the run's dataset
    and data options, and the run's runtime settings."""
    stage_cfg = OmegaConf.structured(
        RunConfig(
            method=METHODS.get(stage.method).config_class(name=stage.method),
            dataset=DatasetConfig(name=cfg.dataset.name),
        )
    )
    return OmegaConf.merge(
        stage_cfg,
        {
            "method": stage.method_config,
            "dataset": {"options": cfg.dataset.options},
            "data": cfg.data,
            "train": {**stage.train, **{k: cfg.train[k] for k in STAGE_RUNTIME_KEYS}},
            "eval": {"metrics": []},
            "seed": stage.seed,
        },
    )


def stage_path(stage_cfg: DictConfig, out: Path | str) -> Path:
    """Where a stage's artifact lives: keyed by its method, dataset and config hash."""
    method, dataset = stage_cfg.method.name, stage_cfg.dataset.name
    return Path(out) / "artifacts" / method / dataset / config_hash(stage_cfg)


@dataclass(frozen=True)
class SharedStage:
    """A stage some run builds on, as a sweep plans it: trained once, before those runs."""

    path: Path  # its artifact record
    method: str  # the method that trains it
    below: tuple[Path, ...]  # the artifacts of the stages it builds on itself
    stage: Stage = field(compare=False)  # as its run declares it (load_or_train_stage's)

    def depth(self, stages: dict[Path, SharedStage]) -> int:
        """0 for a stage on no other; else one more than the deepest stage below it."""
        return 1 + max((stages[p].depth(stages) for p in self.below), default=-1)


def shared_stages(cfg: DictConfig, data: Any, out: Path | str) -> list[SharedStage]:
    """Every stage the run ``cfg`` builds on, the stages below a stage first. The method is
    built on the meta device: its stages are read off its settings, no weights are made.
    ``data``: the dataset, or its class (a method is built from its ``image_shape``)."""
    if METHODS.get(cfg.method.name).stages is Method.stages:
        return []
    with torch.device("meta"):
        model = build_method(cfg, data)
    found: list[SharedStage] = []

    def walk(parent: Method) -> list[Path]:
        paths = []
        for stage in parent.stages():
            stage_cfg = stage_config(stage, cfg)
            with torch.device("meta"):
                below = walk(build_method(stage_cfg, data))
            path = stage_path(stage_cfg, out)
            found.append(SharedStage(path, stage.method, tuple(below), stage))
            paths.append(path)
        return paths

    walk(model)
    return found


def train_shared_stage(
    method: str,
    dataset: str,
    preset: str | None,
    overrides: list[str] | tuple[str, ...],
    seed: int,
    out: Path | str,
    artifact: Path,
) -> Path:
    """Train (or find cached) the stage of this run whose artifact record is ``artifact``,
    and the stages below it, and nothing else: what a sweep runs before the runs that share
    the stage, so that none of them waits for another to train it."""
    cfg = resolve_config(method, dataset, preset, overrides, seed=seed)
    device = select_device(cfg.train.device)
    data = datasets.load(cfg.dataset.name, **cfg.dataset.options)
    wanted = [s for s in shared_stages(cfg, data, out) if s.path == Path(artifact)]
    if not wanted:
        raise BenchError(f"{method} on {dataset} with these settings has no stage {artifact}")
    with numerics(cfg.train, device):
        load_or_train_stage(wanted[0].stage, cfg, data, out)
    return Path(artifact)


def load_or_train_stage(
    stage: Stage,
    cfg: DictConfig,
    data: GroundTruthData,
    out: Path | str,
    record: RunRecord | None = None,
) -> Method:
    """The trained ``stage`` of a run: from ``<out>/artifacts/<stage method>/<dataset>/<hash>``
    when an earlier run trained it with the same settings on the same dataset, else trained
    there now (``record``, the run's, logs which). A stage may itself declare stages (the
    LDM stage builds on the VQ first stage): they are resolved first, the same way, so a
    chain is trained once and reused whole. A claim (bench/claim.py) keeps concurrent runs
    from training the same one twice; a cached stage whose weights do not verify is trained
    again, never loaded."""
    stage_cfg = stage_config(stage, cfg)
    stage_record = RunRecord(stage_path(stage_cfg, out))
    model = build_method(stage_cfg, data)
    for below in model.stages():  # a stage built on stages: the chain resolves first
        trained = load_or_train_stage(below, cfg, data, out, record=record)
        model.attach_stage(below.name, trained)
    problem = stage_problem(stage_record)
    if problem is None:  # trained and verified: read without the claim, so that runs sharing
        load_model(model, str(stage_record.weights_file))  # it never queue to load it
    else:
        with Claim(stage_record.path, cfg.train.heartbeat_s, cfg.train.stale_after_s) as claim:
            claim.acquire(on_wait=lambda holder: say_waiting(stage_record.path, holder))
            problem = stage_problem(stage_record)
            if problem is None:  # the holder we waited for trained it
                load_model(model, str(stage_record.weights_file))
            else:
                if problem != "untrained":
                    tqdm.write(
                        f"warning: the cached {stage.name} at {stage_record.path} is damaged "
                        f"(model.safetensors: {problem}); training it again",
                        file=sys.stderr,
                    )
                model = train_stage(model, stage_cfg, data, stage_record, claim=claim)
    verb = "reusing the cached" if problem is None else "trained the"
    tqdm.write(f"{verb} {stage.name} ({stage.method}) at {stage_record.path}", file=sys.stderr)
    if record is not None:  # the run's log says which stage it built on
        event = {"step": 0, "event": stage.name, "path": str(stage_record.path)}
        record.append_log({**event, "reused": problem is None})
    return model.requires_grad_(False).eval()


def stage_problem(record: RunRecord) -> str | None:
    """Why a stage's artifact cannot be loaded ("untrained", or what is damaged); None when
    it is trained and verifies."""
    return weights_problem(record) if record.is_complete() else "untrained"


def train_stage(
    model: Method, cfg: DictConfig, data: GroundTruthData, record: RunRecord, claim: Claim
) -> Method:
    """Train a shared stage into its artifact record (resuming from its checkpoints; from
    step 0 when none of them verifies), and write its verified weights."""
    atomic_write_text(record.config_file, to_yaml(cfg))
    record.set_status(RUNNING, config_hash=config_hash(cfg), pid=os.getpid())
    try:
        train(model, data, cfg, record, on_step=lambda step: claim.check())
    except DamagedCheckpoints as error:
        problems = "; ".join(error.problems)
        tqdm.write(
            f"warning: no usable checkpoint in {error.folder}: {problems}; training again",
            file=sys.stderr,
        )
        shutil.rmtree(error.folder)
        record.truncate_log(0)  # the model is untouched: train() found no checkpoint first
        train(model, data, cfg, record, on_step=lambda step: claim.check())
    claim.check()
    weights = save_weights(model, record)
    record.set_status(COMPLETE, config_hash=config_hash(cfg), finished=time.time(), weights=weights)
    return model
