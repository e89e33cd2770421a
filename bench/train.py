"""The one training loop every method uses.

Per step: take the next batch of the data order (with the labelled factors' values for a
weakly supervised method), let the method's trainer take its step (``Method.trainer``: by
default its loss under autocast to ``train.precision`` on CUDA, then the optimizer step with
optional gradient clipping and linear learning-rate warm-up, fp16 through a GradScaler;
bench/methods/trainer.py), update the EMA, and give the method its end-of-step hook (DyGA
refits its Gaussians there at each epoch end). Nothing is read back from the device between
log steps. Every ``log_every`` steps a line goes to the JSONL log; every ``checkpoint_every``
steps and at the end a checkpoint holds everything needed to continue bit-identically:
weights, the trainer's optimizers, EMA, step, and every RNG state; it can be restored on
another device (every tensor goes to the run's; random states that no longer fit are
restored where they can, with a note). The newest ``keep_checkpoints`` stay, each with a
checksum, and a run resumes from the newest that verifies (bench/checkpoints.py). The data
order is a pure function of (seed, step), so it needs no state of its own.

SIGTERM and SIGUSR1 (what SLURM sends before preemption), SIGUSR2 (submitit's time-limit
warning) and SIGINT (Ctrl-C) make the loop write a checkpoint at the end of the current step
and raise ``Preempted``; a second Ctrl-C stops at once, keeping the last periodic checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from bench.checkpoints import load_checkpoint_file, newest_usable, save_checkpoint_file
from bench.datasets import GroundTruthData
from bench.datasets.labels import factor_labels, label_columns
from bench.datasets.torch_view import TorchImages, resident_device
from bench.datasets.training_rows import training_rows
from bench.errors import BenchError
from bench.methods.base import Method, TrainingProgress
from bench.methods.trainer import RUN, Batch, Trainer
from bench.precision import Precision, training_precision
from bench.progress import Progress
from bench.rng import global_rng_state, set_global_rng_state
from bench.store import RunRecord

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel


class Preempted(Exception):
    def __init__(self, step: int, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.step, self.signum = step, signum


class NonFiniteLoss(Exception):
    """A loss was NaN or infinite in steps ``first_step``…``step``: the loop checks on the
    device and reads the verdict once per log window (and before a checkpoint)."""

    def __init__(
        self, step: int, value: float, last_finite: float | None, first_step: int | None = None
    ) -> None:
        first_step = step if first_step is None else first_step
        if first_step == step:
            where, hint = f"at step {step}", ""
        else:  # the verdict is read once per log window
            where = f"in steps {first_step}-{step}"
            hint = "; lower train.log_every to find the first bad step"
        super().__init__(
            f"loss became {value} {where} (last finite loss logged: {last_finite}){hint}"
        )
        self.step, self.value, self.last_finite = step, value, last_finite
        self.first_step = first_step


def select_device(name: str, setting: str = "train.device") -> torch.device:
    """The device ``name`` names (``auto``: CUDA when present, else the CPU), or a one-line
    error when this machine does not have it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(
            f"{setting}={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BenchError(
                f"{setting}={name} but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}); use {setting}=auto or cpu"
            )
        if device.index is not None and device.index >= count:
            raise BenchError(f"{setting}={name} but this machine has {count} CUDA device(s)")
        if device.index is not None:  # "cuda" then means this GPU everywhere (FID, pictures)
            torch.cuda.set_device(device)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"{setting}=mps but MPS is not available here; use {setting}=auto or cpu")
    return device


class DataOrder:
    """Batches of dataset rows: a fresh permutation every epoch, seeded by (seed, epoch), of
    every row, or of ``rows`` (the part of the dataset a run trains on) when set."""

    def __init__(
        self, num_images: int, batch_size: int, seed: int, rows: np.ndarray | None = None
    ) -> None:
        self.rows = rows
        self.num_images = num_images if rows is None else len(rows)
        self.batch_size, self.seed = batch_size, seed
        self._epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._permutation = epoch, rng.permutation(self.num_images)
        return self._permutation

    def batch(self, step: int) -> np.ndarray:
        """Rows of batch ``step`` (0-based) in the endless concatenation of epochs."""
        position, parts, missing = step * self.batch_size, [], self.batch_size
        while missing:
            epoch, offset = divmod(position, self.num_images)
            take = min(missing, self.num_images - offset)
            parts.append(self._epoch_permutation(epoch)[offset : offset + take])
            position, missing = position + take, missing - take
        order = np.concatenate(parts)
        return order if self.rows is None else self.rows[order]


def random_hflip(images: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Each image of (B, C, H, W) flipped left-right with probability ½, drawn from (seed,
    step) on the host: the same flips on any device and after a resume."""
    flip = np.random.default_rng([seed, step, 1]).random(len(images)) < 0.5
    mask = torch.from_numpy(flip).to(images.device, non_blocking=True)
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def ema_parameters(method: Method, modules: list[str] | None) -> list[torch.nn.Parameter]:
    """The parameters the EMA averages: those of the named submodules, or every trainable one.
    A module with batch norm is refused: its running statistics follow the live weights, and
    scoring averaged weights with them would mix two models."""
    named = dict(method.named_children())
    if modules is None:
        covered = [method]
    else:
        unknown = [name for name in modules if name not in named]
        if unknown:
            raise BenchError(
                f"train.ema_modules: {type(method).__name__} has no module {unknown[0]!r}; "
                f"its modules: {', '.join(named)}"
            )
        covered = [named[name] for name in modules]
    for module in covered:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            raise BenchError(
                "train.ema_modules: the EMA would cover batch norm layers, whose running "
                "statistics belong to the live weights; list the modules without batch norm "
                f"(of {', '.join(named)})"
            )
    return [p for module in covered for p in module.parameters() if p.requires_grad]


def build_ema(
    decay: float | None, parameters: list[torch.nn.Parameter], warmup: bool = True
) -> EMAModel | None:
    """diffusers' EMA, whose decay warms up as min(decay, (1 + n) / (10 + n)) after n updates,
    as LDM's LitEma: with decay 0.9999 the average follows the weights early in training.
    Without ``warmup`` the decay is constant from the second update on (PDAE, DiTi; the
    first copies the weights in either case). On CUDA it updates every tensor in one
    multi-tensor kernel (``foreach``) instead of one small kernel per tensor; on the CPU,
    where launches cost nothing, tensor by tensor, which keeps CPU numbers as they were."""
    if decay is None:
        return None
    from diffusers.training_utils import EMAModel

    on_cuda = any(p.is_cuda for p in parameters)
    return EMAModel(parameters, decay=decay, min_decay=0.0 if warmup else decay, foreach=on_cuda)


def run_ema(
    method: Method, train_cfg: DictConfig
) -> tuple[EMAModel | None, list[torch.nn.Parameter]]:
    """The run's EMA (``train.ema_*``; None without one) and the parameters it averages."""
    if train_cfg.ema_decay is None:
        return None, []
    modules = None if train_cfg.ema_modules is None else list(train_cfg.ema_modules)
    averaged = ema_parameters(method, modules)
    return build_ema(train_cfg.ema_decay, averaged, train_cfg.ema_warmup), averaged


def note_precision(train_cfg: DictConfig, device: torch.device) -> None:
    """A note when the run trains in another precision than ``train.precision`` asks:
    autocast applies on CUDA (the places the authors keep in fp32 stay so), fp32 elsewhere."""
    asked = Precision(train_cfg.precision)
    if training_precision(asked, device) is not asked:
        tqdm.write(
            f"note: train.precision={asked.value} applies on CUDA; training on "
            f"{device.type} in fp32",
            file=sys.stderr,
        )


@contextmanager
def numerics(train_cfg: DictConfig, device: torch.device) -> Iterator[dict[str, Any]]:
    """The process-wide numerics switches of a run (``train.tf32``, ``train.deterministic``)
    while it trains and is scored, put back afterwards; yields what environment.json records:
    these, the precision the run trains in and ``train.compile``."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
    )
    if train_cfg.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = train_cfg.tf32
    if train_cfg.deterministic:
        # cuBLAS needs a fixed workspace for deterministic products: effective when CUDA has
        # not been initialised yet in this process (a `bench run` sets it before).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True)
    else:  # cuDNN times its kernels once per shape and keeps the fastest
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield {
            "precision": training_precision(train_cfg.precision, device).value,
            "precision_setting": Precision(train_cfg.precision).value,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "deterministic": bool(train_cfg.deterministic),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "compile": bool(train_cfg.compile),
        }
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            deterministic,
        ) = saved
        torch.use_deterministic_algorithms(deterministic)


@contextmanager
def compiled(method: Method, enabled: bool) -> Iterator[None]:
    """``train.compile``: while training, each of the method's trainable submodules (the
    denoiser, the encoder) runs through ``torch.compile``, in place (its weights and
    state-dict keys unchanged); frozen stages run as they are. Static shapes: the training
    batches all have one (dynamic shapes trip inductor here). Evaluation and pictures run
    eagerly afterwards: each of their batch shapes would be compiled anew."""
    children = [
        child
        for child in method.children()
        if enabled and any(p.requires_grad for p in child.parameters())
    ]
    for child in children:
        child.compile(dynamic=False)
    try:
        yield
    finally:
        for child in children:
            child._compiled_call_impl = None  # what nn.Module.compile set: back to eager


def open_tensorboard(record: RunRecord) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise BenchError(
            "train.tensorboard=true needs TensorBoard: pip install 'drlbench[tensorboard]'"
        ) from None
    return SummaryWriter(log_dir=str(record.path / "tensorboard"))


@contextmanager
def stop_signals() -> Iterator[dict[str, int | None]]:
    """Record SIGTERM/SIGUSR1/SIGUSR2/SIGINT instead of dying, so the loop can checkpoint
    first; likewise SIGPIPE (the reader of a piped output went away: bench/outputs.py) and
    SIGHUP (the terminal did). After one Ctrl-C, a second raises KeyboardInterrupt at once,
    as usual."""
    received: dict[str, int | None] = {"signum": None}

    def handler(signum: int, frame: Any) -> None:
        received["signum"] = received["signum"] or signum  # the first reason is the reason
        if signum == signal.SIGINT:
            tqdm.write("Ctrl-C: checkpointing at the end of this step (again: stop now)")
            signal.signal(signal.SIGINT, signal.default_int_handler)

    # SIGUSR2: submitit's warning before a SLURM time limit.
    watched = (
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGINT,
        signal.SIGPIPE,
        signal.SIGHUP,
    )
    try:
        previous = {s: signal.signal(s, handler) for s in watched}
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = {}
    try:
        yield received
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def train(
    method: Method,
    dataset: GroundTruthData,
    cfg: DictConfig,
    record: RunRecord,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Train ``method`` for ``cfg.train.steps`` steps, resuming from the record's checkpoint.
    ``on_step(step)`` runs after every step, before its checkpoint (the runner's metric
    curves), so that a resumed run redoes nothing and misses nothing.

    Nothing is read back from the device between log steps: the losses' finiteness is
    checked on the device and read once per log window, and before a checkpoint."""
    train_cfg = cfg.train
    device = select_device(train_cfg.device)
    method.to(device).train()
    note_precision(train_cfg, device)
    trainer = method.trainer(train_cfg, device)
    ema, averaged = run_ema(method, train_cfg)
    noise = torch.Generator(device).manual_seed(cfg.seed)  # the method's random draws
    # Over the rows it trains on (data.*): every row, or the part its authors train on.
    data_order = DataOrder(
        len(dataset), train_cfg.batch_size, cfg.seed, training_rows(dataset, cfg.data)
    )
    # Labels only for a weakly supervised method: unsupervised ones never see any.
    supervision = method.supervision
    columns = label_columns(dataset, list(supervision.labeled_factors)) if supervision else None
    resident = cfg.data.device or resident_device(dataset, device)
    source = TorchImages(dataset, resident, background=reads_ahead(device))
    tensorboard = open_tensorboard(record) if train_cfg.tensorboard else None

    step = 0
    checkpoint = newest_usable(record.checkpoints_dir)
    if checkpoint is not None:
        step, note = load_checkpoint(
            checkpoint, method, trainer, ema=ema, noise=noise, device=device, seed=cfg.seed
        )
        record.truncate_log(step)
        tqdm.write(f"resuming {record.path} from step {step}", file=sys.stderr)
        if note is not None:
            tqdm.write(f"note: {note}", file=sys.stderr)
            record.append_log({"step": step, "event": "resumed", "note": note})
    else:  # draws from torch's global generator (dropout) start from the seed, whether or
        torch.manual_seed(cfg.seed)  # not this process trained the run's stages first

    # Whether every loss of the current log window was finite: a device tensor, read at
    # log and checkpoint steps only.
    finite, window_first, last_finite = torch.ones((), dtype=torch.bool, device=device), step, None
    window_start, window_images, window_wait = time.perf_counter(), 0, 0.0

    def check_finite(loss: torch.Tensor) -> None:
        if not finite.item():
            raise NonFiniteLoss(step, loss.item(), last_finite, window_first + 1)

    bar = Progress(
        train_cfg.steps,
        f"training {cfg.method.name} (seed {cfg.seed})",
        initial=step,
        enabled=train_cfg.progress,
        every_s=train_cfg.progress_every_s,
    )
    with stop_signals() as stop, bar, compiled(method, train_cfg.compile):
        while step < train_cfg.steps:
            waited = time.perf_counter()
            rows = data_order.batch(step)
            images = source.batch(rows, device)
            if cfg.data.hflip:
                images = random_hflip(images, cfg.seed, step)
            if source.reads_ahead and step + 1 < train_cfg.steps:
                source.prefetch(data_order.batch(step + 1), device)
            window_wait += time.perf_counter() - waited
            labels = None
            if columns is not None:
                labels = torch.from_numpy(factor_labels(dataset, rows, columns)).to(device)
            losses, logs = trainer.step(Batch(images, labels), step, noise)
            for value in losses.values():
                finite &= torch.isfinite(value)
            if ema is not None:
                ema.step(averaged)
            step += 1
            window_images += len(images)
            epoch = step * train_cfg.batch_size // len(dataset)
            progress = TrainingProgress(
                step=step,
                epoch=epoch,
                epoch_ended=epoch > (step - 1) * train_cfg.batch_size // len(dataset),
                images=lambda rows: source.batch(rows, device),
                num_images=len(dataset),
                seed=cfg.seed,
                total_steps=train_cfg.steps,
            )
            try:
                method.after_step(progress)
            except Exception:  # a refit on diverged weights: say that the loss diverged
                check_finite(losses["loss"])
                raise

            due = step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                check_finite(losses["loss"])
                rate = window_images / (time.perf_counter() - window_start)
                shown = {"loss": losses["loss"], **logs, **losses}
                entry = {"step": step, **read_values(shown)}
                last_finite = entry["loss"]
                periodic = method.log_values()
                entry.update(periodic)
                timing = {"images_per_s": round(rate, 1), "data_wait_s": round(window_wait, 4)}
                record.append_log({**entry, **timing, "time": time.time()})
                if tensorboard is not None:
                    for key, scalar in entry.items():
                        if key != "step":
                            tensorboard.add_scalar(f"train/{key}", scalar, step)
                extra = {k: f"{value:.3g}" for k, value in periodic.items()}
                bar.set_postfix(loss=f"{entry['loss']:.4g}", img_s=f"{rate:.0f}", **extra)
                window_start, window_images, window_first = time.perf_counter(), 0, step
                window_wait = 0.0
            bar.update(1)
            if on_step is not None:
                on_step(step)

            if due or stop["signum"] is not None:
                check_finite(losses["loss"])  # a diverged model is never checkpointed
                keep = train_cfg.keep_checkpoints
                save_checkpoint(record, step, method, trainer, ema=ema, noise=noise, keep=keep)
            if stop["signum"] is not None:
                raise Preempted(step, stop["signum"])

    if tensorboard is not None:
        tensorboard.close()
    if ema is not None:  # the averaged weights are kept (and scored, if the EMA covers them)
        ema.copy_to(averaged)
    method.eval()


def reads_ahead(device: torch.device) -> bool:
    """Whether batches not kept on the device are read in the background: on CUDA, where the
    host would otherwise wait while the GPU trains (on a CPU the cores are busy training)."""
    return device.type == "cuda"


def read_values(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors as floats, in one read from the device."""
    if not values:
        return {}
    stacked = torch.stack([v.detach().double().reshape(()) for v in values.values()])
    return {
        name: number if value.is_floating_point() else int(number)  # a stage number stays int
        for (name, value), number in zip(values.items(), stacked.tolist(), strict=True)
    }


def save_checkpoint(
    record: RunRecord,
    step: int,
    method: Method,
    trainer: Trainer,
    ema: EMAModel | None,
    noise: torch.Generator,
    keep: int = 2,
) -> None:
    checkpoint = {
        "step": step,
        "model": method.state_dict(),
        "optimizers": {n: o.state_dict() for n, o in trainer.optimizers.items()},
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "rng": {
            **global_rng_state(),
            "noise": noise.get_state(),
            "noise_device": noise.device.type,
        },
    }
    save_checkpoint_file(record.checkpoints_dir, step, checkpoint, keep)


def saved_optimizers(checkpoint: dict) -> dict[str, dict]:
    """The optimizer states of a checkpoint by name; a checkpoint written before trainers
    held the run's optimizer under ``optimizer`` and the others under ``own_optimizers``."""
    if "optimizers" in checkpoint:
        return checkpoint["optimizers"]
    run = {RUN: checkpoint["optimizer"]} if checkpoint.get("optimizer") is not None else {}
    return {**run, **checkpoint.get("own_optimizers", {})}


def load_checkpoint(
    path: Path,
    method: Method,
    trainer: Trainer,
    ema: EMAModel | None,
    noise: torch.Generator,
    device: torch.device,
    seed: int,
) -> tuple[int, str | None]:
    """Restore everything ``save_checkpoint`` wrote, every tensor onto ``device`` (the run's:
    the file may have been written on another); returns the step to continue from and, when
    random states of another kind or number of devices could not be restored exactly, a
    note saying so."""
    checkpoint = load_checkpoint_file(path)
    step = int(checkpoint["step"])
    method.load_state_dict(checkpoint["model"])  # copied into tensors already on the device
    states = saved_optimizers(checkpoint)
    for name, optimizer in trainer.optimizers.items():  # torch moves the state to the device
        optimizer.load_state_dict(states[name])
    if ema is not None:  # diffusers keeps the shadow weights where torch.load put them
        ema.load_state_dict(checkpoint["ema"])
        ema.to(device)
    if trainer.scaler is not None and checkpoint.get("scaler"):
        trainer.scaler.load_state_dict(checkpoint["scaler"])
    rng = checkpoint["rng"]
    unfit = set_global_rng_state(rng, device)
    notes = [] if unfit is None else [unfit]
    try:
        noise.set_state(rng["noise"])
    except RuntimeError:  # a generator of another kind of device: a state of another size
        saved = rng.get("noise_device", "another kind of device")
        noise.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
        notes.append(
            f"the method's generator was saved on {saved} and this run trains on "
            f"{device.type}: it is re-seeded from (seed, step)"
        )
    if not notes:
        return step, None
    return (
        step,
        f"{'; '.join(notes)}; the resumed run is no longer bit-identical to an uninterrupted one",
    )
