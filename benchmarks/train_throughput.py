"""Training throughput of a method's paper configuration (DyGA+SD by default, DisDiff, DiTi,
DBRL, DisUnknown or FactorVAE), and for DyGA+SD the cost of one DyGA refit.

    python benchmarks/train_throughput.py [--method dyga_sd|disdiff|diti|dbrl|disunknown|
        factor_vae] [--batch-size N] [--steps 3] [--devices cpu,cuda]

For each device (CPU, and CUDA when present), bf16 autocast off/on and ``torch.compile``
off/on, times the training loop as a run trains (batches rendered and copied, the step, the
EMA, a log line each step: ``train()`` itself) on the method's ``paper`` settings (its
optimizer and EMA;
DyGA+SD with anchoring active and Skip Dropout; DisDiff with its six decoder passes and the
disentangling loss; DiTi on its 64-px pixel DDPM; DBRL's NCSN++ and encoder; DisUnknown's
four stages, each timed on its own through its trainer's steps on fixed batches, with the
labels of its 3D Shapes split; FactorVAE with
its discriminator's optimizer) on shapes3d-procedural, at the method's paper batch size
unless ``--batch-size`` says otherwise: images/s, seconds per step (the median over the
timed steps), the time spent waiting for data, peak memory (CUDA:
max allocated; CPU: the process's peak RSS so far). The frozen stages are untrained here: a
step costs the same whatever their weights.

For DyGA+SD it then times one DyGA refit — the batched EM with splits and prune — on 48,000
tokens per unit (Shapes3D's 10% subset) for the 20 units. The tokens are drawn from a random
8-component mixture per unit and normalised as the authors do; the cost depends on their
number and size, not on where they come from. Prints a table and writes
``benchmarks/results/train_throughput-<method>-<device name>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

import bench.datasets
from bench.build import build_method
from bench.config import resolve_config
from bench.datasets.labels import factor_labels, label_columns
from bench.fileio import atomic_write_json
from bench.methods import METHODS
from bench.methods.base import Method
from bench.methods.diffusion.gmm import fit_split_prune
from bench.methods.trainer import Batch
from bench.store import RunRecord
from bench.train import compiled as compiled_for_training
from bench.train import run_ema, train

REFIT_TOKENS = 48_000


def paper_model(method: str, device: torch.device) -> tuple[Method, object]:
    cfg = resolve_config(method, "shapes3d-procedural", "paper")
    model = build_method(cfg, bench.datasets.load("shapes3d-procedural")).to(device)
    return model, cfg


def synthetic_tokens(units: int, count: int, dim: int, device: torch.device) -> torch.Tensor:
    """(units, count, dim) tokens from a random 8-component mixture per unit, normalised by
    the authors' (x − max)/(max − min)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(units, 8, dim, generator=g) * 4
    labels = torch.randint(0, 8, (units, count), generator=g)
    tokens = torch.gather(centres, 1, labels[..., None].expand(-1, -1, dim))
    tokens = (tokens + 0.3 * torch.randn(tokens.shape, generator=g)).relu()
    high, low = tokens.amax(dim=(1, 2), keepdim=True), tokens.amin(dim=(1, 2), keepdim=True)
    return ((tokens - high) / (high - low + 1e-6)).to(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(
    method: str, device, amp: bool, compiled: bool, batch_size: int, steps: int, first: int = 0
) -> dict:
    """``steps`` timed steps after a warm-up one. A method of fixed stages (``first``: the
    warm-up step's index, which says the stage) is timed step by step through its own
    trainer; every other method through the training loop itself, as a run trains:
    batches rendered and copied, the step, the EMA, a log line per step (each line's
    ``images_per_s`` and ``data_wait_s``)."""
    if hasattr(METHODS.get(method), "stage_steps"):
        return time_steps(method, device, amp, compiled, batch_size, steps, first)
    model, cfg = paper_model(method, device)
    with_anchors(model, device)
    cfg.train.merge_with(
        {
            "steps": 1 + steps,
            "batch_size": batch_size,
            "device": str(device),
            "precision": "bf16" if amp else "fp32",
            "compile": compiled,
            "log_every": 1,
            "checkpoint_every": 10**9,
            "progress": False,
        }
    )
    data = bench.datasets.load("shapes3d-procedural")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as folder:
        record = RunRecord(Path(folder))
        start = time.perf_counter()
        train(model, data, cfg, record)
        total = time.perf_counter() - start
        lines = [e for e in record.read_log() if "images_per_s" in e]
    warmup, timed = lines[0], lines[1:]
    seconds = float(np.median([batch_size / e["images_per_s"] for e in timed]))
    return {
        "bf16": amp,
        "compile": compiled,
        "batch_size": batch_size,
        "timed": "the training loop",
        "step_s": round(seconds, 4),
        "images_per_s": round(batch_size / seconds, 1),
        "data_wait_s": round(float(np.median([e["data_wait_s"] for e in timed])), 4),
        "first_step_s": round(batch_size / warmup["images_per_s"], 2),
        "loop_s": round(total, 2),
        "peak_memory_mib": round(peak_memory_mib(device), 1),
    }


def with_anchors(model: Method, device: torch.device) -> None:
    """DyGA's anchors in place, as after the first epoch: the forward pass does the hard
    assignment."""
    if not hasattr(model, "anchoring"):
        return
    anchoring = model.anchoring
    units = synthetic_tokens(model.config.num_units, 2048, model.config.token_dim, device)
    mixtures = fit_split_prune(units, model.config.dyga, torch.Generator().manual_seed(0))
    anchoring.anchor_means.copy_(mixtures.means)
    anchoring.anchor_covariances.copy_(mixtures.covariances)
    anchoring.anchor_log_weights.copy_(mixtures.log_weights)
    anchoring.anchor_refits += 1
    anchoring.read_anchor_state()


def time_steps(
    method: str, device, amp: bool, compiled: bool, batch_size: int, steps: int, first: int = 0
) -> dict:
    """Timed steps ``first + 1 …`` of a method of fixed stages, on two fixed batches."""
    model, cfg = paper_model(method, device)
    model.train()
    # As the loop compiles (train.compile): its trainable submodules, static shapes.
    with compiled_for_training(model, compiled):
        cfg.train.precision = "bf16" if amp else "fp32"
        trainer = model.trainer(cfg.train, device)  # as the loop builds it
        ema, averaged = run_ema(model, cfg.train)
        data = bench.datasets.load("shapes3d-procedural")
        supervision = model.supervision
        columns = label_columns(data, list(supervision.labeled_factors)) if supervision else None
        rng = np.random.default_rng(0)
        rows = [rng.choice(len(data), batch_size, replace=False) for _ in range(2)]
        batches = [
            Batch(
                torch.from_numpy(data.images(r)).to(device).permute(0, 3, 1, 2).float().div(255),
                None
                if columns is None
                else torch.from_numpy(factor_labels(data, r, columns)).to(device),
            )
            for r in rows
        ]
        generator = torch.Generator(device).manual_seed(0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def step(index: int, i: int) -> None:
            trainer.step(batches[i], index, generator)
            if ema is not None:
                ema.step(averaged)

        start = time.perf_counter()
        step(first, 0)  # warm-up: allocations, cuDNN choices, compilation
        sync(device)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(steps):
            step(first + 1 + i, i % 2)
        sync(device)
        seconds = (time.perf_counter() - start) / steps
        return {
            "bf16": amp,
            "compile": compiled,
            "batch_size": batch_size,
            "timed": "steps on fixed batches",
            "step_s": round(seconds, 4),
            "images_per_s": round(batch_size / seconds, 1),
            "first_step_s": round(warmup, 2),
            "peak_memory_mib": round(peak_memory_mib(device), 1),
        }


def time_refit(device: torch.device) -> dict:
    model, _ = paper_model("dyga_sd", torch.device("cpu"))
    units = synthetic_tokens(model.config.num_units, REFIT_TOKENS, model.config.token_dim, device)
    sync(device)
    start = time.perf_counter()
    mixtures = fit_split_prune(units, model.config.dyga, torch.Generator().manual_seed(0))
    sync(device)
    return {
        "tokens_per_unit": REFIT_TOKENS,
        "units": model.config.num_units,
        "refit_s": round(time.perf_counter() - start, 2),
        "components": mixtures.num_components.tolist(),
    }


def stage_starts(method: str) -> dict[str, int]:
    """Each stage's first step index for a method of fixed stages; {"": 0} otherwise."""
    method_cls = METHODS.get(method)
    if not hasattr(method_cls, "stage_steps"):
        return {"": 0}
    cfg = resolve_config(method, "shapes3d-procedural", "paper")
    starts, first = {}, 0
    for stage, steps in method_cls.stage_steps(OmegaConf.to_object(cfg.method)).items():
        starts[stage], first = first, first + steps
    return starts


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    methods = ["dyga_sd", "disdiff", "diti", "dbrl", "disunknown", "factor_vae"]
    parser.add_argument("--method", default="dyga_sd", choices=methods)
    parser.add_argument("--batch-size", type=int, help="default: the method's paper batch")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--compile", default="off,on", help="off, on, or off,on")
    parser.add_argument("--bf16", default="off,on", help="off, on, or off,on")
    args = parser.parse_args()
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    flags = {"off": False, "on": True}
    method = args.method
    paper = resolve_config(method, "shapes3d-procedural", "paper")
    batch_size = args.batch_size or paper.train.batch_size
    for name in devices:
        device = torch.device(name)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name(device)).strip("-").lower()
        out = Path(__file__).parent / "results" / f"train_throughput-{method}-{slug}.json"
        report = {
            "device": device_name(device),
            "host": platform.node(),
            "torch": torch.__version__,
            "config": f"{method} paper",
            "training": [],
            "refit": None,
        }
        print(f"{method}, {device_name(device)}, batch {batch_size}")
        header = f"{'stage':>11}{'bf16':>6}{'compile':>8}{'step s':>9}{'img/s':>9}{'first s':>9}"
        print(f"{header}{'data s':>8}{'peak MiB':>10}")
        # A staged method (DisUnknown) is timed in each stage: from its first step on.
        for (stage, first), amp, compiled in itertools.product(
            stage_starts(method).items(),
            (flags[v] for v in args.bf16.split(",")),
            (flags[v] for v in args.compile.split(",")),
        ):
            setting = {"stage": stage} if stage else {}
            try:
                row = time_training(method, device, amp, compiled, batch_size, args.steps, first)
            except Exception as error:  # e.g. an inductor failure: say so, measure the rest
                message = str(error).strip().splitlines()[0][:160]
                failed = {**setting, "bf16": amp, "compile": compiled, "error": message}
                report["training"].append(failed)
                atomic_write_json(out, report)
                print(f"{stage:>11}{amp!s:>6}{compiled!s:>8}  failed: {message}", flush=True)
                continue
            report["training"].append({**setting, **row})
            atomic_write_json(out, report)  # each row as soon as it is measured
            print(
                f"{stage:>11}{amp!s:>6}{compiled!s:>8}{row['step_s']:>9.3f}"
                f"{row['images_per_s']:>9.1f}{row['first_step_s']:>9.1f}"
                f"{row.get('data_wait_s', float('nan')):>8.3f}{row['peak_memory_mib']:>10.0f}",
                flush=True,
            )
        if method == "dyga_sd":
            report["refit"] = refit = time_refit(device)
            atomic_write_json(out, report)
            units, seconds = refit["units"], refit["refit_s"]
            print(f"DyGA refit, {units} units × {REFIT_TOKENS} tokens: {seconds} s")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
