"""Host reads per training step, for every registered method: what would make a GPU wait.

    python benchmarks/host_syncs.py [--methods dyga_sd,beta_vae] [--label after]

On CUDA, every conversion of a tensor to a Python value (``.item()``, ``.tolist()``,
``bool``/``int``/``float`` of a tensor, ``.numpy()``, ``.cpu()``) and every data-dependent
shape (``nonzero``) blocks the host until the GPU has finished all the work queued before it.
This counts them on the CPU: it patches those conversions, trains each method for a few steps
of its ``ci`` preset through the real runner (so the loop's own reads count, and its stages
train first through the same loop), and attributes each read to the training step in which
it happens (a step starts when the loop asks the data order for its batch).

Steps of three kinds are told apart: a log step (``train.log_every``; the loop reads its
values there by design), an epoch-end step (DyGA's refit reads what it fitted), and the
rest, where the goal is none. Prints a table and writes
``benchmarks/results/host_syncs-<label>.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import tempfile
import traceback
from pathlib import Path

import torch

import bench.runner
import bench.train
from bench.fileio import atomic_write_json
from bench.methods import METHODS

CONVERSIONS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")
DATA_DEPENDENT = ("nonzero",)
STEPS, LOG_EVERY = 12, 6


class Counter:
    """Host reads since the current step began, by where in our code they happen; those of
    the method's end-of-step hook (``after_step``: DyGA's refits) apart."""

    def __init__(self) -> None:
        self.active, self.in_hook = False, False
        self.current: collections.Counter = collections.Counter()
        self.hook: collections.Counter = collections.Counter()

    def hit(self, name: str) -> None:
        if not self.active:
            return
        where = caller()
        if where is not None:
            (self.hook if self.in_hook else self.current)[f"{name} at {where}"] += 1


def caller() -> str | None:
    """The innermost frame in bench/ outside this file: where the read is asked for. None
    for torch's optimizers, whose reads are of the step counters they keep on the host (on
    CUDA too, unless ``capturable``): no wait for the GPU."""
    stack = traceback.extract_stack()[:-3]
    if "/torch/optim/" in stack[-1].filename:
        return None
    for frame in reversed(stack):
        if "/bench/" in frame.filename and "host_syncs" not in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


@contextlib.contextmanager
def counting(counter: Counter):
    """Every conversion and data-dependent op of torch.Tensor reports to ``counter``."""
    originals = {}
    for name in CONVERSIONS + DATA_DEPENDENT:
        original = getattr(torch.Tensor, name)
        originals[name] = original

        def patched(self, *args, __name=name, __original=original, **kwargs):
            counter.hit(__name)
            return __original(self, *args, **kwargs)

        setattr(torch.Tensor, name, patched)
    original_nonzero = torch.nonzero

    def nonzero(*args, **kwargs):
        counter.hit("nonzero")
        return original_nonzero(*args, **kwargs)

    torch.nonzero = nonzero
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        torch.nonzero = original_nonzero


def measure(method: str, out: Path) -> dict:
    """Reads per step of the run itself (its stages train uncounted, once)."""
    counter = Counter()
    steps: list[collections.Counter] = []
    original_batch, original_train = bench.train.DataOrder.batch, bench.runner.train

    def batch(self, step):  # a training step begins (the first: setup reads go)
        if counter.active and not counter.in_hook:
            steps.append(counter.current)
            counter.current = collections.Counter()
        return original_batch(self, step)

    def train(method_, dataset, cfg, record, on_step=None):
        counter.active = "artifacts" not in record.path.parts  # the run, not a stage
        after_step = method_.after_step

        def hook(progress):
            counter.in_hook = True
            try:
                after_step(progress)
            finally:
                counter.in_hook = False

        method_.after_step = hook
        try:
            return original_train(method_, dataset, cfg, record, on_step)
        finally:
            if counter.active:
                steps.append(counter.current)
            counter.active = False

    bench.train.DataOrder.batch, bench.runner.train = batch, train
    overrides = [
        f"train.steps={STEPS}",
        f"train.log_every={LOG_EVERY}",
        "train.checkpoint_every=100000",
        "eval.metrics=[]",
    ]
    if "class_frequencies" in {f for f in METHODS.get(method).config_class.__dataclass_fields__}:
        overrides.append("method.steps={stage1: 4, classifier: 2, stage2: 4, lenc: 2}")
    try:
        with counting(counter):
            bench.runner.run(method, "shapes3d-procedural", "ci", overrides, 0, out)
    finally:
        bench.train.DataOrder.batch, bench.runner.train = original_batch, original_train
    steps = steps[1:]  # steps[0]: the reads before the first step (setup, resume)
    kinds: dict[str, list[int]] = {"log": [], "other": []}
    where: collections.Counter = collections.Counter()
    for index, reads in enumerate(steps, start=1):  # steps[i] is step i + 1
        logged = index % LOG_EVERY == 0 or index == STEPS
        kinds["log" if logged else "other"].append(sum(reads.values()))
        if not logged:
            where.update(reads)
    return {
        "method": method,
        "steps": len(steps),
        "reads_per_other_step": max(kinds["other"], default=0),
        "reads_per_log_step": max(kinds["log"], default=0),
        "other_steps": kinds["other"],
        "where_between_log_steps": dict(where.most_common()),
        "after_step_hook_reads": sum(counter.hook.values()),
        "where_in_hook": dict(counter.hook.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated; default: every registered method")
    parser.add_argument("--label", default="now", help="names the JSON: host_syncs-<label>.json")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else METHODS.names()
    results = []
    print(f"{'method':<18}{'reads/step':>11}{'log step':>10}{'hook':>6}  where (between log steps)")
    with tempfile.TemporaryDirectory() as out:
        for method in methods:
            row = measure(method, Path(out))
            results.append(row)
            where = ", ".join(f"{k} ×{v}" for k, v in list(row["where_between_log_steps"].items()))
            print(
                f"{method:<18}{row['reads_per_other_step']:>11}{row['reads_per_log_step']:>10}"
                f"{row['after_step_hook_reads']:>6}  {where[:150]}",
                flush=True,
            )
    path = Path(__file__).parent / "results" / f"host_syncs-{args.label}.json"
    atomic_write_json(
        path,
        {
            "what": "host reads per training step (max over the non-log steps; log steps "
            "apart), ci preset on shapes3d-procedural, counted on the CPU",
            "torch": torch.__version__,
            "steps": STEPS,
            "log_every": LOG_EVERY,
            "methods": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
