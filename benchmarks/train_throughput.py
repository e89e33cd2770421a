"""Training throughput of a method's paper configuration (DyGA+SD by default, DisDiff, DiTi
or DBRL), and for DyGA+SD the cost of one DyGA refit.

    python benchmarks/train_throughput.py [--method dyga_sd|disdiff|diti|dbrl] [--batch-size N]
        [--steps 3] [--devices cpu,cuda]

For each device (CPU, and CUDA when present), bf16 autocast off/on and ``torch.compile``
off/on, times full training steps of the method's ``paper`` settings (its optimizer and EMA;
DyGA+SD with anchoring active and Skip Dropout; DisDiff with its six decoder passes and the
disentangling loss; DiTi on its 64-px pixel DDPM; DBRL's NCSN++ and encoder) on
shapes3d-procedural batches, at the method's paper batch size unless ``--batch-size`` says
otherwise: images/s, seconds per step,
peak memory (CUDA: max allocated; CPU: the process's peak RSS so far). The frozen stages are
untrained here: a step costs the same whatever their weights.

For DyGA+SD it then times one DyGA refit — the batched EM with splits and prune — on 48,000
tokens per unit (Shapes3D's 10% subset) for the 20 units. The tokens are drawn from a random
8-component mixture per unit and normalised as the authors do; the cost depends on their
number and size, not on where they come from. Prints a table and writes
``benchmarks/results/train_throughput-<method>-<device name>.json``.
"""

from __future__ import annotations

import argparse
import platform
import re
import resource
import time
from pathlib import Path

import numpy as np
import torch

import bench.datasets
from bench.config import resolve_config
from bench.fileio import atomic_write_json
from bench.methods.base import Method
from bench.methods.diffusion.gmm import fit_split_prune
from bench.runner import build_method
from bench.train import build_ema, build_optimizer, ema_parameters

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
    method: str, device, amp: bool, compiled: bool, batch_size: int, steps: int
) -> dict:
    model, cfg = paper_model(method, device)
    model.train()
    if hasattr(model, "anchoring"):
        # Anchors in place, as after the first epoch: the forward pass does the hard assignment.
        anchoring = model.anchoring
        units = synthetic_tokens(model.config.num_units, 2048, model.config.token_dim, device)
        mixtures = fit_split_prune(units, model.config.dyga, torch.Generator().manual_seed(0))
        anchoring.anchor_means.copy_(mixtures.means)
        anchoring.anchor_covariances.copy_(mixtures.covariances)
        anchoring.anchor_log_weights.copy_(mixtures.log_weights)
        anchoring.anchor_refits += 1
    if compiled:  # static shapes: every step has the same batch
        for child in model.children():
            child.compile(dynamic=False)
    optimizer = build_optimizer(model, cfg.train)
    averaged = ema_parameters(model, list(cfg.train.ema_modules))
    ema = build_ema(cfg.train.ema_decay, averaged, cfg.train.ema_warmup)
    data = bench.datasets.load("shapes3d-procedural")
    rng = np.random.default_rng(0)
    batches = [
        torch.from_numpy(data.images(rng.choice(len(data), batch_size, replace=False)))
        .to(device)
        .permute(0, 3, 1, 2)
        .float()
        .div(255)
        for _ in range(2)
    ]
    generator = torch.Generator(device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(images):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = model.training_loss(images, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.step(averaged)

    start = time.perf_counter()
    step(batches[0])  # warm-up: allocations, cuDNN choices, compilation
    sync(device)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % 2])
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {
        "bf16": amp,
        "compile": compiled,
        "batch_size": batch_size,
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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    methods = ["dyga_sd", "disdiff", "diti", "dbrl"]
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
        print(f"{'bf16':>5}{'compile':>8}{'step s':>9}{'img/s':>9}{'first s':>9}{'peak MiB':>10}")
        for amp in (flags[v] for v in args.bf16.split(",")):
            for compiled in (flags[v] for v in args.compile.split(",")):
                try:
                    row = time_training(method, device, amp, compiled, batch_size, args.steps)
                except Exception as error:  # e.g. an inductor failure: say so, measure the rest
                    message = str(error).strip().splitlines()[0][:160]
                    report["training"].append({"bf16": amp, "compile": compiled, "error": message})
                    atomic_write_json(out, report)
                    print(f"{amp!s:>5}{compiled!s:>8}  failed: {message}", flush=True)
                    continue
                report["training"].append(row)
                atomic_write_json(out, report)  # each row as soon as it is measured
                print(
                    f"{amp!s:>5}{compiled!s:>8}{row['step_s']:>9.3f}{row['images_per_s']:>9.1f}"
                    f"{row['first_step_s']:>9.1f}{row['peak_memory_mib']:>10.0f}",
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
