"""One run: resolve the config, build, train, evaluate, record.

``run(...)`` is what ``bench run`` calls; ``load_run(path)`` brings a finished run back
(config, trained method, metrics), for a notebook.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from bench import datasets
from bench.checkpoints import DamagedCheckpoints
from bench.claim import Claim, ClaimLost, Holder
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
    written_before_fields,
)
from bench.datasets import GroundTruthData
from bench.datasets.training_rows import training_rows
from bench.evaluate import check_ready, evaluate, score_history
from bench.fileio import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    damage,
    file_digest,
    make_folder,
)
from bench.methods import METHODS
from bench.methods.base import Method, Stage
from bench.metrics.gin_config import read_gin
from bench.registry import BenchError
from bench.store import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunRecord, read_json, run_dir
from bench.train import (
    NonFiniteLoss,
    Preempted,
    check_steps,
    numerics,
    select_device,
    train,
)


class RunClaimed(Exception):
    """The run is being written by another live process (``bench run --no-wait``)."""

    def __init__(self, record: RunRecord, holder: Holder) -> None:
        super().__init__(f"{record.path} is being trained by {holder.describe()}")
        self.holder = holder


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
    cfg = resolve_config(method, dataset, preset, overrides, seed, config_files)
    device = select_device(cfg.train.device)
    if cfg.data.device is not None:
        select_device(cfg.data.device, "data.device")
    data = datasets.load(cfg.dataset.name, **cfg.dataset.options)
    check_ready(METHODS.get(method), data, cfg.eval)
    record = RunRecord(run_dir(Path(out), dataset, method, config_hash(cfg), cfg.seed))
    if record.config_file.is_file() and not force:
        read_config(record)  # refuses a record whose config.yaml was edited
    if not force and _finished(record, cfg):
        tqdm.write(f"already complete: {record.path} (--force reruns it)", file=sys.stderr)
        return record
    model = build_method(cfg, data)  # refuses settings it cannot train before anything is written
    check_steps(model, cfg.train.steps)
    shared_stages(cfg, data, out)  # and its stages' (a missing weights file): on meta, at once
    make_folder(record.path, "the run record")
    claim = Claim(record.path, cfg.train.heartbeat_s, cfg.train.stale_after_s)
    holder = claim.acquire(wait, on_wait=lambda h: _say_waiting(record.path, h))
    if holder is not None:
        raise RunClaimed(record, holder)
    with claim:
        if not force and _finished(record, cfg, quiet=True):  # the holder we waited for did it
            tqdm.write(f"complete: {record.path} (trained by another process)", file=sys.stderr)
            return record
        return _run_claimed(record, cfg, preset, model, data, device, Path(out), force, claim)


def _say_waiting(path: Path, holder: Holder) -> None:
    tqdm.write(
        f"{path} is being trained by {holder.describe()}; waiting for it (its claim lapses "
        f"{holder.stale_after_s:.0f} s after its last heartbeat)",
        file=sys.stderr,
    )


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


def _run_claimed(
    record: RunRecord,
    cfg: DictConfig,
    preset: str | None,
    model: Method,
    data: GroundTruthData,
    device: torch.device,
    out: Path,
    force: bool,
    claim: Claim,
) -> RunRecord:
    """``run`` once the claim is held: every write to the record happens here."""
    method, dataset = cfg.method.name, cfg.dataset.name
    run_hash = config_hash(cfg)
    baseline = resolve_config(method, dataset, preset, (), cfg.seed)
    identity = {
        "method": method,
        "dataset": dataset,
        "seed": cfg.seed,
        "preset": preset,
        "config_hash": run_hash,
        "distinguishing": distinguishing_overrides(cfg, baseline),
    }
    identity["deviations"] = model.deviations()
    if model.supervision() is not None:
        identity["supervision"] = model.supervision()
    if force:  # everything but the claim goes
        for entry in record.path.iterdir():
            if not entry.name.startswith("claim."):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    atomic_write_text(record.config_file, to_yaml(cfg))
    atomic_write_json(record.identity_file, identity)
    earlier = read_json(record.environment_file) or {}  # an interrupted run's earlier segments
    started = time.time()
    record.set_status(
        RUNNING, config_hash=run_hash, pid=os.getpid(), host=platform.node(), started=started
    )
    curves = metric_curves(model, data, cfg.eval, record, device)

    def on_step(step: int) -> None:
        claim.check()
        if curves is not None:
            curves(step)

    flags: dict[str, Any] = {}
    try:
        with numerics(cfg.train, device) as flags:
            weights = _train_and_score(model, data, cfg, record, device, out, claim, on_step)
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
    model: Method,
    data: GroundTruthData,
    cfg: DictConfig,
    record: RunRecord,
    device: torch.device,
    out: Path,
    claim: Claim,
    on_step: Callable[[int], None],
) -> dict[str, Any]:
    """Stages, training, weights, evaluation and pictures of a claimed run; returns the
    weights' size and checksum."""
    for stage in model.stages():
        model.attach_stage(stage.name, load_or_train_stage(stage, cfg, data, out, record))
    train(model, data, cfg, record, on_step)
    claim.check()
    weights = save_weights(model, record)
    evaluate(model, data, cfg.eval, record, device)
    pictures = model.pictures(data, record.path / "pictures", device)
    if pictures:
        tqdm.write(f"pictures: {', '.join(str(p) for p in pictures)}", file=sys.stderr)
    claim.check()
    return weights


def save_weights(model: Method, record: RunRecord) -> dict[str, Any]:
    """Write the trained weights (model.safetensors); returns their size and checksum, which
    the complete status keeps so that a damaged file is never loaded."""
    with atomic_path(record.weights_file) as tmp:
        save_model(model, str(tmp))
        digest = file_digest(tmp)
    return digest


def weights_problem(record: RunRecord) -> str | None:
    """Why a complete record's model.safetensors cannot be trusted; None when it verifies."""
    expected = (record.status() or {}).get("weights")
    if expected is None:  # written before checksums: nothing to verify it against
        return None if record.weights_file.is_file() else "missing"
    return damage(record.weights_file, expected)


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
    # Built from the dataset's class (the meta-device stage walk), it sees every row.
    rows = None if isinstance(dataset, type) else training_rows(dataset, cfg.data)
    config = method_cls.configure_for(OmegaConf.to_object(cfg.method), dataset, rows)
    torch.manual_seed(cfg.seed)
    return method_cls(config, dataset.image_shape)


# A stage trains on the run's device and reports progress as the run does.
RUNTIME_KEYS_OF_TRAIN = (
    "device",
    "progress",
    "progress_every_s",
    "log_every",
    "keep_checkpoints",
    "heartbeat_s",
    "stale_after_s",
    "compile",
    "tf32",
    "deterministic",
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
            "train": {**stage.train, **{k: cfg.train[k] for k in RUNTIME_KEYS_OF_TRAIN}},
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
    cfg = resolve_config(method, dataset, preset, overrides, seed)
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
        model.attach_stage(below.name, load_or_train_stage(below, cfg, data, out, record))
    problem = _stage_problem(stage_record)
    if problem is None:  # trained and verified: read without the claim, so that runs sharing
        load_model(model, str(stage_record.weights_file))  # it never queue to load it
    else:
        with Claim(stage_record.path, cfg.train.heartbeat_s, cfg.train.stale_after_s) as claim:
            claim.acquire(on_wait=lambda holder: _say_waiting(stage_record.path, holder))
            problem = _stage_problem(stage_record)
            if problem is None:  # the holder we waited for trained it
                load_model(model, str(stage_record.weights_file))
            else:
                if problem != "untrained":
                    tqdm.write(
                        f"warning: the cached {stage.name} at {stage_record.path} is damaged "
                        f"(model.safetensors: {problem}); training it again",
                        file=sys.stderr,
                    )
                model = train_stage(model, stage_cfg, data, stage_record, claim)
    verb = "reusing the cached" if problem is None else "trained the"
    tqdm.write(f"{verb} {stage.name} ({stage.method}) at {stage_record.path}", file=sys.stderr)
    if record is not None:  # the run's log says which stage it built on
        event = {"step": 0, "event": stage.name, "path": str(stage_record.path)}
        record.append_log({**event, "reused": problem is None})
    return model.requires_grad_(False).eval()


def _stage_problem(record: RunRecord) -> str | None:
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
        train(model, data, cfg, record, lambda step: claim.check())
    except DamagedCheckpoints as error:
        problems = "; ".join(error.problems)
        tqdm.write(
            f"warning: no usable checkpoint in {error.folder}: {problems}; training again",
            file=sys.stderr,
        )
        shutil.rmtree(error.folder)
        record.truncate_log(0)  # the model is untouched: train() found no checkpoint first
        train(model, data, cfg, record, lambda step: claim.check())
    claim.check()
    weights = save_weights(model, record)
    record.set_status(COMPLETE, config_hash=config_hash(cfg), finished=time.time(), weights=weights)
    return model


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
    check_ready(type(loaded.method), loaded.dataset, eval_cfg)
    train = loaded.config.train
    with Claim(loaded.record.path, train.heartbeat_s, train.stale_after_s) as claim:
        claim.acquire(on_wait=lambda holder: _say_waiting(loaded.record.path, holder))
        results = evaluate(loaded.method, loaded.dataset, eval_cfg, loaded.record, run_device)
    return {name: results[name] for name in eval_cfg.metrics}


def environment(
    device: torch.device,
    wall_time: float,
    earlier: dict[str, Any] | None = None,
    numerics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What produced the numbers: versions, code revision, hardware, the numerics switches
    (``numerics``: precision, TF32, deterministic, compile), cost. ``wall_time_s`` adds up
    every segment of a run that was interrupted and resumed (``earlier`` is the environment
    the previous segment recorded); ``segments`` counts them."""
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
        "numerics": numerics or {},
        "cuda": cuda_environment(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return info


def cuda_environment() -> dict[str, Any] | None:
    """CUDA, cuDNN and driver versions and the visible GPUs; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": _nvidia_driver(),
        "gpu_count": count,
        "gpus": [torch.cuda.get_device_name(i) for i in range(count)],
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _nvidia_driver() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.strip().splitlines() if result.returncode == 0 else []
    return lines[0] if lines else None


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
