"""Sweeps: methods × datasets × seeds × variants, run on this machine or on SLURM.

A sweep file (YAML) names what to run::

    name: paper
    methods: [dyga_sd, dyga, sd, dyga_sd_base]
    datasets: [shapes3d, mpi3d]
    seeds: 5                       # or a list: [0, 1, 2, 3, 4]
    preset: paper
    overrides: [train.steps=100000]  # for every run
    variants:                      # override sets, e.g. an ablation (default: one, "default")
      default: []
      p0.1: [method.skip_dropout.p=0.1]
    grid:                          # a numeric sweep: one variant per combination of values
      method.skip_dropout.p: [0.0, 0.1, 0.2, 0.3]
    grids:                         # a grid of a method's own settings, for that method only
      factor_vae: {method.gamma: [10, 20, 30, 40, 50, 100]}
    per_method:                    # a method's own datasets or seeds, in place of the above
      beta_vae: {datasets: [dsprites, shapes3d]}
      dyga: {seeds: 1}
    estimate_s:                    # --dry-run's estimate: seconds per stage by method, per
      stages: {vq_autoencoder: 420}  # run by variant, then method ("default": any other)
      runs: {default: {default: 600, beta_vae: 120}}
    retries: 1                     # reruns of a failed run (each resumes from its checkpoint)
    executor: {kind: local, workers: 2}
    slurm: {partition: gpu, time_min: 1440, gpus_per_task: 1, cpus_per_task: 8, mem_gb: 64,
            array_parallelism: 32}

A run's identity is its config hash and seed (its record folder), so a sweep run twice does
nothing new, and a sweep with one more seed runs only that seed. Each record gets a
``sweep.json`` naming its variant, which ``bench report`` uses for ablation tables and plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import OmegaConf

from bench.claim import active_holder
from bench.config import check_seed, config_hash, resolve_config
from bench.errors import BenchError
from bench.fileio import atomic_write_json
from bench.store import COMPLETE, FAILED, PENDING, RunRecord, read_json, run_dir

if TYPE_CHECKING:
    from bench.stages import SharedStage

EXECUTORS = ("local", "slurm")
# `bench run` exit statuses: bad input, which a retry cannot fix; and a run another process
# is training (`bench run --no-wait`), which the sweep comes back to.
BAD_INPUT = 2
CLAIMED = 75  # EX_TEMPFAIL


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    seed: int
    variant: str
    overrides: tuple[str, ...]
    preset: str | None
    path: Path
    stages: tuple[Path, ...] = ()  # the artifacts of the shared stages it builds on
    device: str = "auto"  # its train.device

    def command(self, out: Path, stage: Path | None = None) -> list[str]:
        """``bench run`` for this run; with ``stage``, for that shared stage of it alone."""
        args = ["--method", self.method, "--dataset", self.dataset, "--seed", str(self.seed)]
        if self.preset:
            args += ["--preset", self.preset]
        args += ["--out", str(out), "--no-wait"]
        args += ["--stage", str(stage)] if stage is not None else []
        return [sys.executable, "-m", "bench", "run", *args, *self.overrides]


@dataclass
class Sweep:
    name: str
    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    variants: dict[str, list[str]] = field(default_factory=lambda: {"default": []})
    # A method's own variants (its ``grids`` entry), in place of ``variants`` for it.
    method_variants: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # A method's own datasets and seeds (its ``per_method`` entry), in place of those above.
    method_datasets: dict[str, list[str]] = field(default_factory=dict)
    method_seeds: dict[str, list[int]] = field(default_factory=dict)
    # --dry-run's estimate: seconds per shared stage by method ("stages"), per run by variant,
    # then method ("runs"; "default": any other).
    estimate_s: dict[str, dict] = field(default_factory=dict)
    retries: int = 1
    out: Path = Path("runs")
    executor: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    slurm: dict[str, Any] = field(default_factory=dict)
    _runs: list[RunSpec] | None = field(default=None, init=False, repr=False, compare=False)
    # The shared stages of those runs by artifact, found as their configs are resolved.
    _stages: dict[Path, SharedStage] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # The distinct evaluation settings of those runs, found as their configs are resolved.
    _evals: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def runs(self) -> list[RunSpec]:
        """Every run, once (variants that resolve to the same config are one run). A config
        is resolved once for all seeds (its hash leaves the seed out): the 7,200 runs of
        dlib's study list in seconds."""
        if self._runs is None:
            specs: dict[Path, RunSpec] = {}
            for method in self.methods:
                variants = self.method_variants.get(method, self.variants)
                datasets = self.method_datasets.get(method, self.datasets)
                for dataset, (variant, extra) in itertools.product(datasets, variants.items()):
                    overrides = (*self.overrides, *extra)
                    cfg = resolve_config(method, dataset, self.preset, overrides, 0)
                    run_hash = config_hash(cfg)
                    evaluation = OmegaConf.to_container(cfg.eval, resolve=True)
                    self._evals.setdefault(json.dumps(evaluation, sort_keys=True), cfg.eval)
                    stages = self._shared_stages(cfg)
                    for seed in self.method_seeds.get(method, self.seeds):
                        path = run_dir(self.out, dataset, method, run_hash, seed)
                        spec = RunSpec(
                            method,
                            dataset,
                            seed,
                            variant,
                            overrides,
                            self.preset,
                            path,
                            stages,
                            str(cfg.train.device),
                        )
                        specs.setdefault(path, spec)
            self._runs = list(specs.values())
        return self._runs

    def _shared_stages(self, cfg) -> tuple[Path, ...]:
        """The artifacts of the stages a run of ``cfg`` builds on."""
        from bench.datasets import DATASETS
        from bench.stages import shared_stages

        # The dataset's class: its image shape is all a method is built from, and no file
        # need be there to plan (a dry run on a machine without the data).
        found = shared_stages(cfg, DATASETS.get(cfg.dataset.name), self.out)
        for stage in found:
            self._stages.setdefault(stage.path, stage)
        return tuple(stage.path for stage in found)

    def stage_waves(self, runs: list[RunSpec]) -> list[list[tuple[SharedStage, RunSpec]]]:
        """The untrained shared stages ``runs`` need, each with a run that builds on it, in
        waves: a wave's stages build only on those of earlier waves, so each wave's stages
        train side by side and none waits for another."""
        self.runs()
        needed: dict[Path, RunSpec] = {}
        for spec in runs:
            for path in spec.stages:
                needed.setdefault(path, spec)
        waves: dict[int, list[tuple[SharedStage, RunSpec]]] = {}
        for path, spec in needed.items():
            if RunRecord(path).is_complete():
                continue
            stage = self._stages[path]
            waves.setdefault(stage.depth(self._stages), []).append((stage, spec))
        return [waves[depth] for depth in sorted(waves)]

    def estimate(self, runs: list[RunSpec]) -> Estimate:
        """Seconds ``runs`` and their untrained stages take: a run's from a complete seed of
        the same config under this sweep's root where there is one (its wall time), else
        from ``estimate_s``; a stage's from ``estimate_s``."""
        estimate = Estimate()
        table = self.estimate_s.get("runs", {})
        measured: dict[Path, float | None] = {}  # by config folder: its seeds read it once
        for spec in runs:
            config_folder = spec.path.parent
            if config_folder not in measured:
                measured[config_folder] = _measured_seconds(config_folder)
            if measured[config_folder] is not None:
                estimate.add(measured[config_folder], "measured")
                continue
            by_method = table.get(spec.variant, {})
            seconds = by_method.get(spec.method, by_method.get("default"))
            estimate.add(seconds, "estimate_s")
        stage_table = self.estimate_s.get("stages", {})
        for wave in self.stage_waves(runs):
            for stage, _ in wave:
                estimate.add(stage_table.get(stage.method), "estimate_s")
        return estimate

    def check_files(self) -> None:
        """What every run would find missing only after it starts (FID's Inception file),
        checked once per distinct evaluation setting before any run is queued."""
        from bench.evaluate import check_files

        self.runs()
        for evaluation in self._evals.values():
            check_files(evaluation)


@dataclass
class Estimate:
    """Seconds of compute, and how many runs and stages each source gave (or none did)."""

    seconds: float = 0.0
    sources: Counter = field(default_factory=Counter)

    def add(self, seconds: float | None, source: str) -> None:
        self.sources[source if seconds is not None else "none"] += 1
        self.seconds += seconds or 0.0


def _measured_seconds(config_folder: Path) -> float | None:
    """The wall time of a complete seed of the config whose records ``config_folder`` holds."""
    for seed_folder in sorted(config_folder.glob("seed*")):
        record = RunRecord(seed_folder)
        seconds = (read_json(record.environment_file) or {}).get("wall_time_s")
        if seconds is not None and record.is_complete():
            return float(seconds)
    return None


def load_sweep(path: Path, out: Path | None = None) -> Sweep:
    """Read and check a sweep file; every run's config is resolved, so a typo fails here."""
    if not path.is_file():
        raise BenchError(f"sweep file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise BenchError(f"sweep file {path} is not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise BenchError(f"sweep file {path} must hold a mapping (name, methods, datasets, ...)")
    known = {
        "name", "methods", "datasets", "seeds", "preset", "overrides", "variants", "grid",
        "grids", "per_method", "estimate_s", "retries", "out", "executor", "slurm",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise BenchError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    for key in ("methods", "datasets"):
        if not data.get(key):
            raise BenchError(f"{path}: '{key}' must list at least one name")
    variants = {str(k): list(v or []) for k, v in (data.get("variants") or {}).items()}
    variants = _with_grid(variants or {"default": []}, data.get("grid") or {})
    grids = data.get("grids") or {}
    per_method = data.get("per_method") or {}
    for key, entries in (("grids", grids), ("per_method", per_method)):
        strays = sorted(set(entries) - set(data["methods"]))
        if strays:
            raise BenchError(f"{path}: {key} for {strays}, which 'methods' does not list")
    method_variants = {str(m): _with_grid(variants, g or {}) for m, g in grids.items()}
    method_datasets, method_seeds = {}, {}
    for method, own in per_method.items():
        where = f"{path}: per_method.{method}"
        if not isinstance(own, dict):
            raise BenchError(f"{where} must be a mapping, e.g. {{datasets: [...], seeds: 1}}")
        strays = sorted(set(own) - {"datasets", "seeds"})
        if strays:
            raise BenchError(f"{where}: unknown key(s) {strays}; valid keys: ['datasets', 'seeds']")
        if "datasets" in own:
            if not own["datasets"]:
                raise BenchError(f"{where}.datasets must list at least one name")
            method_datasets[str(method)] = list(own["datasets"])
        if "seeds" in own:
            method_seeds[str(method)] = _seeds(own["seeds"], where)
    executor = {"kind": "local", **(data.get("executor") or {})}
    if executor["kind"] not in EXECUTORS:
        raise BenchError(f"{path}: executor.kind must be one of {EXECUTORS}")
    sweep = Sweep(
        name=str(data.get("name", path.stem)),
        methods=list(data["methods"]),
        datasets=list(data["datasets"]),
        seeds=_seeds(data.get("seeds", 1), str(path)),
        preset=data.get("preset"),
        overrides=list(data.get("overrides") or []),
        variants=variants,
        method_variants=method_variants,
        method_datasets=method_datasets,
        method_seeds=method_seeds,
        estimate_s=_estimates(data.get("estimate_s") or {}, f"{path}: estimate_s"),
        retries=int(data.get("retries", 1)),
        out=Path(out or data.get("out", "runs")),
        executor=executor,
        slurm=dict(data.get("slurm") or {}),
    )
    sweep.runs()  # resolve every config now: a bad name or key is an error before any run
    return sweep


def _seeds(seeds: Any, where: str) -> list[int]:
    """The seeds of a sweep (or of a method of it, ``where``): a count (5) or a list."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    elif not isinstance(seeds, list):
        raise BenchError(f"{where}: seeds must be a count (5) or a list of seeds ([0, 1, 2])")
    return [check_seed(seed, f"{where}: seed") for seed in seeds]


def _estimates(table: Any, where: str) -> dict[str, dict]:
    """``estimate_s``: ``stages`` (method → seconds) and ``runs`` (variant → method or
    "default" → seconds), checked."""
    strays = sorted(set(table) - {"stages", "runs"})
    if strays:
        raise BenchError(f"{where}: unknown key(s) {strays}; valid keys: ['runs', 'stages']")

    def seconds_of(by_method: Any, at: str) -> dict[str, float]:
        if not isinstance(by_method, dict):
            raise BenchError(f"{at} must map methods to seconds, e.g. {{default: 600}}")
        for method, seconds in by_method.items():
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise BenchError(f"{at}.{method} must be seconds (a number >= 0), not {seconds!r}")
        return {str(m): float(v) for m, v in by_method.items()}

    runs = table.get("runs") or {}
    if not isinstance(runs, dict):
        raise BenchError(f"{where}.runs must map variants to {{method: seconds}}")
    return {
        "stages": seconds_of(table.get("stages") or {}, f"{where}.stages"),
        "runs": {str(v): seconds_of(m, f"{where}.runs.{v}") for v, m in runs.items()},
    }


def _with_grid(variants: dict[str, list[str]], grid: dict[str, list]) -> dict[str, list[str]]:
    """Each variant crossed with every combination of the grid's values."""
    if not grid:
        return variants
    keys = list(grid)
    crossed = {}
    for name, overrides in variants.items():
        for values in itertools.product(*(grid[k] for k in keys)):
            label = ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
            full = label if name == "default" else f"{name},{label}"
            crossed[full] = [*overrides, *(f"{k}={v}" for k, v in zip(keys, values, strict=True))]
    return crossed


def state_of(spec: RunSpec) -> str:
    return RunRecord(spec.path).state() or PENDING


def status_table(sweep: Sweep) -> tuple[list[tuple[RunSpec, str]], Counter]:
    """Each run with its state as ``--status`` shows it, and the count of each bare state."""
    specs = sweep.runs()
    rows = [(spec, RunRecord(spec.path).describe_state()) for spec in specs]
    return rows, Counter(state_of(spec) for spec in specs)


def mark_variant(spec: RunSpec, sweep: Sweep) -> None:
    """Tell ``bench report`` which variant of which sweep this record is."""
    spec.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        spec.path / "sweep.json",
        {"sweep": sweep.name, "variant": spec.variant, "overrides": list(spec.overrides)},
    )


def worker_plan(sweep: Sweep, workers: int | None = None, log=print) -> tuple[int, list[str]]:
    """How many local workers, and the GPUs they take in turn. With GPUs visible: one worker
    per GPU (``workers`` from the command line may ask otherwise; more than the GPUs is
    warned about); the sweep file's ``executor.workers`` is for machines without GPUs."""
    gpus = _visible_gpus()
    if not gpus:
        return workers or sweep.executor.get("workers") or 1, gpus
    listed = sweep.executor.get("workers")
    if workers is None and listed is not None and listed != len(gpus):
        log(
            f"{len(gpus)} GPUs visible: one worker per GPU (the sweep file's executor.workers="
            f"{listed} is for machines without GPUs; --workers N overrides)"
        )
    slots = workers or len(gpus)
    if slots > len(gpus):
        log(f"warning: {slots} workers on {len(gpus)} GPUs: some GPUs train two runs at once")
    return slots, gpus


def worker_threads(slots: int) -> int:
    """OMP_NUM_THREADS for each of ``slots`` workers: the cores this process may use, shared."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // slots)


def run_local(sweep: Sweep, workers: int | None = None, log=print) -> list[RunSpec]:
    """Run every incomplete run in worker processes; returns the runs that still failed.

    Workers: ``worker_plan``; each owns a GPU (CUDA_VISIBLE_DEVICES) where there are any, and
    a share of the cores (OMP_NUM_THREADS). The shared stages the runs build on (a VQ first
    stage) train first, in waves, distinct stages side by side; then the runs, so no worker
    waits for another's stage. A failed or killed run is retried up to ``sweep.retries``
    times; a retry resumes from the run's checkpoint. A run that fails on bad input is not
    retried.
    """
    todo = [spec for spec in sweep.runs() if state_of(spec) != COMPLETE]
    slots, gpus = worker_plan(sweep, workers, log)
    running: dict[int, tuple[subprocess.Popen, RunSpec, int]] = {}
    failed: list[RunSpec] = []
    try:
        for wave in sweep.stage_waves(todo):
            _train_stages(sweep, wave, slots, gpus, log)
        queue = [(spec, 0) for spec in todo]
        _work_through(sweep, queue, running, failed, slots, gpus, log)
    except KeyboardInterrupt:  # Ctrl-C: every run in progress checkpoints before we leave
        for process, _, _ in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process, spec, _ in running.values():
            process.wait()
            log(f"stopped {_label(spec)} with a checkpoint")
        raise
    return failed


def _train_stages(sweep: Sweep, wave, slots: int, gpus: list[str], log) -> None:
    """One wave of shared stages, up to ``slots`` at once. A stage that fails is left to the
    runs that need it (each would train it, or report why it cannot)."""
    pending, running = list(wave), {}
    while pending or running:
        for slot in range(slots):
            if slot not in running and pending:
                stage, spec = pending.pop(0)
                stage.path.mkdir(parents=True, exist_ok=True)
                command = spec.command(sweep.out, stage.path)
                running[slot] = (_spawn(command, stage.path, slot, slots, gpus), stage)
                on = f" on GPU {gpu_of(slot, gpus)}" if gpus else ""
                log(f"training the shared {stage.method} stage {stage.path}{on}")
        time.sleep(0.2)
        for slot, (process, stage) in list(running.items()):
            if process.poll() is None:
                continue
            del running[slot]
            if process.returncode == 0:
                log(f"stage ready: {stage.path}")
            else:
                log(f"stage FAILED (exit {process.returncode}): {stage.path}/sweep.log")


def gpu_of(slot: int, gpus: list[str]) -> str | None:
    """The GPU worker ``slot`` takes (the workers take the visible GPUs in turn)."""
    return gpus[slot % len(gpus)] if gpus else None


def _work_through(sweep, queue, running, failed, slots, gpus, log) -> None:
    """The local executor's loop: keep ``slots`` runs going until the queue is empty. A run
    another process is training (another sweep, a SLURM job) is set aside and looked at again
    until it is complete or free."""
    elsewhere: list[tuple[RunSpec, int]] = []
    while queue or running or elsewhere:
        for slot in range(slots):
            while slot not in running and queue:
                spec, attempt = queue.pop(0)
                if _held_elsewhere(spec, log):
                    elsewhere.append((spec, attempt))
                    continue
                running[slot] = (_start(spec, sweep, slot, slots, gpus), spec, attempt)
                log(f"started {_label(spec)} (attempt {attempt + 1})")
        time.sleep(0.2)
        for slot, (process, spec, attempt) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[slot]
            if code == 0:
                log(f"complete {_label(spec)}")
            elif code == CLAIMED:  # claimed by another process between our look and its start
                _held_elsewhere(spec, log)
                elsewhere.append((spec, attempt))
            elif code != BAD_INPUT and attempt < sweep.retries:
                log(f"exit {code}: {_label(spec)}; retrying")
                queue.append((spec, attempt + 1))
            else:
                log(f"FAILED {_label(spec)} (exit {code}): {_error(spec)}")
                failed.append(spec)
        for spec, attempt in list(elsewhere):
            if state_of(spec) == COMPLETE:
                log(f"complete {_label(spec)} (trained by another process)")
                elsewhere.remove((spec, attempt))
            elif active_holder(spec.path) is None:  # its holder stopped: ours to run
                elsewhere.remove((spec, attempt))
                queue.append((spec, attempt))
        if elsewhere and not queue and not running:
            time.sleep(HELD_POLL_S)


# How often a sweep with nothing else to do looks at runs other processes are training.
HELD_POLL_S = 2.0


def _held_elsewhere(spec: RunSpec, log) -> bool:
    holder = active_holder(spec.path)
    if holder is not None:
        log(f"{_label(spec)} is being trained by {holder.describe()}; moving on")
    return holder is not None


def _start(spec: RunSpec, sweep: Sweep, slot: int, slots: int, gpus: list[str]):
    """``bench run`` for ``spec`` in a worker process, its output in the record's sweep.log."""
    mark_variant(spec, sweep)
    return _spawn(spec.command(sweep.out), spec.path, slot, slots, gpus)


def _spawn(command: list[str], folder: Path, slot: int, slots: int, gpus: list[str]):
    """``command`` as worker ``slot`` of ``slots``: its GPU, its share of the cores (not every
    worker using all of them), its output appended to ``folder``/sweep.log."""
    env = dict(os.environ, OMP_NUM_THREADS=str(worker_threads(slots)))
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpu_of(slot, gpus)
    with open(folder / "sweep.log", "a") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=handle)


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def _label(spec: RunSpec) -> str:
    return f"{spec.method}/{spec.dataset}/{spec.variant}/seed{spec.seed}"


def _error(spec: RunSpec) -> str:
    status = RunRecord(spec.path).status() or {}
    if status.get("state") == FAILED:
        return str(status.get("error", "?")).splitlines()[0][:200]
    log_file = spec.path / "sweep.log"
    tail = log_file.read_text().strip().splitlines()[-1:] if log_file.is_file() else []
    return tail[0][:200] if tail else "no error recorded"


# Sweep-file (and command-line) SLURM settings: ours, and those passed to sbatch as they are.
SLURM_SETTINGS = ("time_min", "cpus_per_task", "mem_gb", "array_parallelism", "gpus_per_task")
SLURM_PASSTHROUGH = ("partition", "account", "qos", "constraint", "gres")


def slurm_parameters(sweep: Sweep, log=print) -> dict[str, Any]:
    """submitit's parameters for the sweep's jobs: ``slurm:`` settings over the defaults, one
    GPU per job whenever the runs train on CUDA (``train.device`` cuda, or auto on a machine
    that has one; ``gpus_per_task: 0`` asks for none), and ``account``, ``qos``,
    ``constraint``, ``gres``, ``partition`` passed through."""
    settings = {"time_min": 60, "cpus_per_task": 2, "mem_gb": 8, "array_parallelism": 32}
    settings.update(sweep.slurm)
    unknown = sorted(set(settings) - {*SLURM_SETTINGS, *SLURM_PASSTHROUGH})
    if unknown:
        raise BenchError(
            f"slurm: unknown setting(s) {unknown}; valid: "
            f"{', '.join(sorted({*SLURM_SETTINGS, *SLURM_PASSTHROUGH}))}"
        )
    parameters = {
        "name": f"bench-{sweep.name}",
        "timeout_min": int(settings["time_min"]),
        "cpus_per_task": int(settings["cpus_per_task"]),
        "mem_gb": settings["mem_gb"],
        "slurm_array_parallelism": int(settings["array_parallelism"]),
    }
    for key in SLURM_PASSTHROUGH:
        if settings.get(key):
            parameters[f"slurm_{key}"] = str(settings[key])
    gpus = settings.get("gpus_per_task")
    if gpus is None:
        devices = {resolve_device_setting(spec) for spec in sweep.runs()}
        gpus = 1 if "cuda" in devices else 0
        if "auto" in devices and not gpus:
            log(
                "slurm: train.device=auto and this machine has no GPU, so the jobs ask for "
                "none; set slurm.gpus_per_task: 1 (or train.device=cuda) to train on GPUs"
            )
    if int(gpus) > 0:
        parameters["gpus_per_node"] = int(gpus)
    return parameters


def resolve_device_setting(spec: RunSpec) -> str:
    """ "cuda", "cpu" or "auto": where a run's ``train.device`` sends it, as seen from here
    (auto is cuda when this machine has a GPU)."""
    if spec.device == "auto":
        return "cuda" if _visible_gpus() else "auto"
    return "cuda" if spec.device.startswith("cuda") else spec.device


def on_gpu(spec: RunSpec) -> RunSpec:
    """``spec`` trained on CUDA: a job given a GPU fails in one line on a node where torch
    sees none, instead of training on its CPU unnoticed (``train.device`` is not part of the
    run's identity)."""
    if spec.device != "auto":
        return spec
    return dataclasses.replace(spec, overrides=(*spec.overrides, "train.device=cuda"))


def run_slurm(sweep: Sweep, wait: bool = True, log=print, poll_s: float = 5.0) -> list[RunSpec]:
    """Submit the shared stages the incomplete runs build on as jobs of their own, wave by
    wave (``afterok`` on the stages below), then the runs as job arrays, each depending on
    the jobs of its stages (``afterok``); with ``wait``, follow the jobs to the end, resubmit
    failed runs up to ``sweep.retries`` times, and return the runs that still failed.

    A job that receives SIGUSR1, SIGUSR2 (submitit's time-limit warning) or SIGTERM writes a
    checkpoint at the end of its current step and requeues itself (``scontrol requeue``);
    SLURM starts it again and the run resumes from that checkpoint.
    """
    try:
        import submitit
    except ImportError:
        raise BenchError(
            "the slurm executor needs submitit: pip install 'drlbench[slurm]'"
        ) from None
    parameters = slurm_parameters(sweep, log)
    executor = submitit.AutoExecutor(folder=sweep.out / ".slurm" / sweep.name, cluster="slurm")

    def submit(function, specs: list[RunSpec], extra: list[list], after: list[str]) -> list[str]:
        if "gpus_per_node" in parameters:
            specs = [on_gpu(spec) for spec in specs]
        dependency = {"dependency": f"afterok:{':'.join(after)}"} if after else {}
        executor.update_parameters(**parameters, slurm_additional_parameters=dependency)
        jobs = executor.map_array(function, specs, [sweep.out] * len(specs), *extra)
        return [job.job_id for job in jobs]

    failed: list[RunSpec] = []
    todo = [spec for spec in sweep.runs() if state_of(spec) != COMPLETE]
    for attempt in range(sweep.retries + 1):
        if not todo:
            break
        stage_jobs: dict[Path, str] = {}
        for wave in sweep.stage_waves(todo):
            for stage, spec in wave:  # a job each: its own afterok on the stages below it
                after = [stage_jobs[p] for p in stage.below if p in stage_jobs]
                (stage_jobs[stage.path],) = submit(stage_job, [spec], [[stage.path]], after)
                log(f"submitted the shared {stage.method} stage as job {stage_jobs[stage.path]}")
        for spec in todo:
            mark_variant(spec, sweep)
        ids = list(stage_jobs.values())
        groups: dict[tuple[str, ...], list[RunSpec]] = {}
        for spec in todo:  # runs that wait on the same stage jobs share an array
            after = tuple(sorted({stage_jobs[p] for p in spec.stages if p in stage_jobs}))
            groups.setdefault(after, []).append(spec)
        for after, specs in groups.items():
            array = submit(run_job, specs, [], list(after))
            ids += array
            log(f"submitted {len(specs)} runs as SLURM job array {array[0].split('_')[0]}")
        if not wait:
            return []
        while _queued(ids):
            time.sleep(poll_s)
        failed = [spec for spec in todo if state_of(spec) != COMPLETE]
        for spec in failed:
            log(f"not complete after attempt {attempt + 1}: {_label(spec)}: {_error(spec)}")
        todo = failed
    return failed


def stage_job(spec: RunSpec, out: Path, artifact: Path) -> str:
    """One shared stage inside a SLURM job, before the runs that build on it."""
    from bench.stages import train_shared_stage

    with requeued_on_stop():
        train_shared_stage(
            spec.method,
            spec.dataset,
            spec.preset,
            spec.overrides,
            seed=spec.seed,
            out=out,
            artifact=artifact,
        )
    return str(artifact)


def run_job(spec: RunSpec, out: Path) -> str:
    """One run inside a SLURM job: train, evaluate, record; requeue on a stop signal."""
    from bench.runner import run

    with requeued_on_stop():
        record = run(
            spec.method, spec.dataset, spec.preset, spec.overrides, seed=spec.seed, out=out
        )
    return str(record.path)


@contextlib.contextmanager
def requeued_on_stop():
    """A job stopped by a signal (its checkpoint written) puts itself back in the queue."""
    from bench.train import Preempted

    try:
        yield
    except Preempted:
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        job_id = f"{job}_{task}" if job and task else os.environ["SLURM_JOB_ID"]
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        raise


def _queued(job_ids: list[str]) -> bool:
    """Whether SLURM still lists any of the jobs (pending, running or requeued)."""
    result = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
    )
    return bool(result.stdout.strip())
