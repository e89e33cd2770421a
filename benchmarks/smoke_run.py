"""Wall time and peak memory of the README's main job (a smoke run), from a fresh record.

    python benchmarks/smoke_run.py [--method dyga_sd] [--dataset shapes3d-procedural]

Runs ``bench run ... --preset smoke`` in a child process with a new output folder, then
prints a table and writes ``benchmarks/results/smoke_run-<method>-<host>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fileio import atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dyga_sd")
    parser.add_argument("--dataset", default="shapes3d-procedural")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        command = ["bench", "run", "--method", args.method, "--dataset", args.dataset]
        command += ["--preset", "smoke", "--out", out]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        (record,) = Path(out).glob(f"{args.dataset}/{args.method}/*/seed0")
        environment = json.loads((record / "environment.json").read_text())
        metrics = json.loads((record / "metrics.json").read_text())
        steps = json.loads((record / "log.jsonl").read_text().splitlines()[-1])["step"]

    peak_child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "method": args.method,
        "dataset": args.dataset,
        "preset": "smoke",
        "steps": steps,
        "host": platform.node(),
        "cpu_count": environment["cpu_count"],
        "device": environment["device"],
        "device_name": environment["device_name"],
        "wall_time_s": round(wall, 1),
        "run_wall_time_s": environment["wall_time_s"],
        "peak_memory_mib": round(peak_child_mib, 1),
        "metrics": {name: m["values"] for name, m in metrics.items()},
        "packages": environment["packages"],
    }
    rows = [
        ("command wall time (s)", result["wall_time_s"]),
        ("run wall time, in record (s)", result["run_wall_time_s"]),
        ("peak memory (MiB)", result["peak_memory_mib"]),
        ("training steps", steps),
        *((f"{n}.{k}", f"{v:.4f}") for n, vs in result["metrics"].items() for k, v in vs.items()),
    ]
    where = f"{result['cpu_count']} CPUs, {result['device_name']}"
    print(f"\nsmoke run: {args.method} on {args.dataset}, {where}")
    for label, value in rows:
        print(f"  {label:<32} {value}")
    path = Path(__file__).parent / "results" / f"smoke_run-{args.method}-{platform.node()}.json"
    atomic_write_json(path, result)
    print(f"written: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
