"""One run: resolve the config, build, train, evaluate, record.

``run(...)`` is what ``bench run`` calls; ``load_run(path)`` brings a finished run back
(config, trained method, metrics), for a notebook.
"""

from __future__ import annotations

import fcntl
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from bench import datasets
from bench.config import (
    DatasetConfig,
    Profile,
    RunConfig,
    apply_overrides,
    check_metrics,
    config_hash,
    distinguishing_overrides,
    from_dict,
    resolve_config,
    to_yaml,
)
from bench.datasets import GroundTruthData
from bench.evaluate import evaluate, score_history
from bench.fileio import atomic_path, atomic_write_json, atomic_write_text
from bench.methods import METHODS
from bench.methods.base import Method, Stage
from bench.metrics.gin_config import read_gin
from bench.registry import BenchError
from bench.store import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunRecord, read_json, run_dir
from bench.train import NonFiniteLoss, Preempted, select_device, train


def run(
    method: str,
    dataset: str,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    out: Path | str = "runs",
    force: bool = False,
    config_files: list[Path] | tuple[Path, ...] = (),
) -> RunRecord:
    """Train and evaluate one run, or resume it, or return it untouched if complete."""
    cfg = resolve_config(method, dataset, preset, overrides, seed, config_files)
    device = select_device(cfg.train.device)
    if cfg.data.device is not None:
        select_device(cfg.data.device, "data.device")
    data = datasets.load(cfg.dataset.name, **cfg.dataset.options)
    run_hash = config_hash(cfg)
    record = RunRecord(run_dir(Path(out), dataset, method, run_hash, cfg.seed))
    if record.is_complete() and not force:
        tqdm.write(f"already complete: {record.path} (--force reruns it)", file=sys.stderr)
        return record
    baseline = resolve_config(method, dataset, preset, (), cfg.seed)
    identity = {
        "method": method,
        "dataset": dataset,
        "seed": cfg.seed,
        "preset": preset,
        "config_hash": run_hash,
        "distinguishing": distinguishing_overrides(cfg, baseline),
    }
    model = build_method(cfg, data)
    identity["deviations"] = model.deviations()
    try:
        if force and record.path.exists():
            shutil.rmtree(record.path)
        atomic_write_text(record.config_file, to_yaml(cfg))
    except OSError as error:
        raise BenchError(
            f"cannot write the run record {record.path}: {error.strerror}; "
            "give a writable folder with --out"
        ) from None
    atomic_write_json(record.identity_file, identity)
    earlier = read_json(record.environment_file) or {}  # an interrupted run's earlier segments
    started = time.time()
    record.set_status(
        RUNNING, config_hash=run_hash, pid=os.getpid(), host=platform.node(), started=started
    )
    try:
        for stage in model.stages():
            model.attach_stage(stage.name, load_or_train_stage(stage, cfg, data, out, record))
        train(model, data, cfg, record, metric_curves(model, data, cfg.eval, record, device))
        with atomic_path(record.weights_file) as tmp:
            save_model(model, str(tmp))
        evaluate(model, data, cfg.eval, record, device)
        pictures = model.pictures(data, record.path / "pictures", device)
        if pictures:
            tqdm.write(f"pictures: {', '.join(str(p) for p in pictures)}", file=sys.stderr)
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
        segment = time.time() - started
        atomic_write_json(record.environment_file, environment(device, segment, earlier))
    record.set_status(
        COMPLETE,
        config_hash=run_hash,
        started=started,
        finished=time.time(),
        training=model.training_summary(),
    )
    return record


def metric_curves(
    model: Method,
    data: GroundTruthData,
    eval_cfg: DictConfig,
    record: RunRecord,
    device: torch.device,
) -> Callable[[int], None] | None:
    """With ``eval.every=N``: what scores the history battery every N steps of training."""
    if eval_cfg.every is None:
        return None

    def score_if_due(step: int) -> None:
        if step % eval_cfg.every == 0:
            score_history(model, data, eval_cfg, record, device, step)

    return score_if_due


def build_method(cfg: DictConfig, dataset: GroundTruthData) -> Method:
    """The method of ``cfg``, its weights drawn from the run's seed."""
    method_cls = METHODS.get(cfg.method.name)
    torch.manual_seed(cfg.seed)
    return method_cls(OmegaConf.to_object(cfg.method), dataset.image_shape)


# A stage trains on the run's device and reports progress as the run does.
RUNTIME_KEYS_OF_TRAIN = ("device", "progress", "progress_every_s", "log_every")


def load_or_train_stage(
    stage: Stage, cfg: DictConfig, data: GroundTruthData, out: Path | str, record: RunRecord
) -> Method:
    """The trained ``stage`` of a run: from ``<out>/artifacts/<stage method>/<dataset>/<hash>``
    when an earlier run trained it with the same settings on the same dataset, else trained
    there now. A lock file keeps concurrent runs from training the same one twice."""
    stage_cfg = OmegaConf.structured(
        RunConfig(
            method=METHODS.get(stage.method).config_class(name=stage.method),
            dataset=DatasetConfig(name=cfg.dataset.name),
        )
    )
    stage_cfg = OmegaConf.merge(
        stage_cfg,
        {
            "method": stage.method_config,
            "dataset": {"options": cfg.dataset.options},
            "data": cfg.data,
            "train": {
                **stage.train,
                **{k: cfg.train[k] for k in RUNTIME_KEYS_OF_TRAIN},
            },
            "eval": {"metrics": []},
            "seed": stage.seed,
        },
    )
    stage_hash = config_hash(stage_cfg)
    stage_record = RunRecord(Path(out) / "artifacts" / stage.method / cfg.dataset.name / stage_hash)
    with file_lock(stage_record.path / ".lock"):
        model = build_method(stage_cfg, data)
        reused = stage_record.is_complete()
        if reused:
            load_model(model, str(stage_record.weights_file))
        else:
            atomic_write_text(stage_record.config_file, to_yaml(stage_cfg))
            stage_record.set_status(RUNNING, config_hash=stage_hash, pid=os.getpid())
            train(model, data, stage_cfg, stage_record)
            with atomic_path(stage_record.weights_file) as tmp:
                save_model(model, str(tmp))
            stage_record.set_status(COMPLETE, config_hash=stage_hash, finished=time.time())
    verb = "reusing the cached" if reused else "trained the"
    tqdm.write(f"{verb} {stage.name} ({stage.method}) at {stage_record.path}", file=sys.stderr)
    record.append_log(
        {"step": 0, "event": stage.name, "path": str(stage_record.path), "reused": reused}
    )
    return model.requires_grad_(False).eval()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class LoadedRun:
    record: RunRecord
    config: DictConfig
    method: Method
    metrics: dict[str, Any]
    dataset: Any


def load_run(path: Path | str, device: str = "cpu") -> LoadedRun:
    """A finished run from its folder: config, trained method (in eval mode), metrics, dataset."""
    record = RunRecord(Path(path))
    if not record.weights_file.is_file():
        raise BenchError(f"{record.path} holds no trained model (model.safetensors); run it first")
    cfg = from_dict(yaml.safe_load(record.config_file.read_text()))
    data = datasets.load(cfg.dataset.name, **cfg.dataset.options)
    model = build_method(cfg, data)
    load_model(model, str(record.weights_file), device=device)
    return LoadedRun(record, cfg, model.to(device).eval(), record.metrics(), data)


def evaluate_run(
    path: Path | str,
    metrics: list[str] | None = None,
    gin_files: list[Path] | tuple[Path, ...] = (),
    device: str = "auto",
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Re-score a finished run: its configured metrics, or ``metrics``, with hyperparameters
    from disentanglement_lib .gin files layered over the run's own, then ``eval.*``
    overrides (``eval.hyperparams.dci.num_train=2000``) as ``bench run`` takes them. Returns
    the results of the metrics scored (metrics.json keeps the others too)."""
    run_device = select_device(device, "--device")
    loaded = load_run(path, device=str(run_device))
    eval_cfg = loaded.config.eval.copy()
    gin_metrics: list[str] = []
    for gin_file in gin_files:
        settings = read_gin(Path(gin_file))
        gin_metrics += [m for m in settings.metrics if m not in gin_metrics]
        eval_cfg.hyperparams = OmegaConf.merge(eval_cfg.hyperparams, settings.hyperparams)
        if settings.random_seed is not None:
            eval_cfg.random_seed = settings.random_seed
    if metrics is not None or gin_metrics:
        eval_cfg.metrics = metrics if metrics is not None else gin_metrics
    if profile is not None:
        eval_cfg.profile = profile
    if overrides:  # the command line has the last word, as in `bench run`
        cfg = loaded.config.copy()
        cfg.eval = eval_cfg
        eval_cfg = apply_overrides(cfg, list(overrides), "eval.").eval
    check_metrics(
        list(eval_cfg.metrics),
        OmegaConf.to_container(eval_cfg.hyperparams),
        Profile(eval_cfg.profile).value,
    )
    results = evaluate(loaded.method, loaded.dataset, eval_cfg, loaded.record, run_device)
    return {name: results[name] for name in eval_cfg.metrics}


def environment(
    device: torch.device, wall_time: float, earlier: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What produced the numbers: versions, code revision, hardware, cost. ``wall_time_s``
    adds up every segment of a run that was interrupted and resumed (``earlier`` is the
    environment the previous segment recorded); ``segments`` counts them."""
    earlier = earlier or {}
    packages = ["drlbench", "torch", "numpy", "scipy", "scikit-learn", "omegaconf"]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": {name: _version(name) for name in packages},
        "git_commit": _git_commit(),
        "device": str(device),
        "device_name": _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "wall_time_s": round(earlier.get("wall_time_s", 0.0) + wall_time, 2),
        "last_segment_s": round(wall_time, 2),
        "segments": earlier.get("segments", 1 if earlier else 0) + 1,
        "peak_memory_mib": round(peak_rss_mib, 1),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the bench source tree, when it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
