"""Wall time and peak memory of the README's main job (a smoke run), from a fresh record.

    python benchmarks/smoke_run.py [--method dyga_sd] [--dataset shapes3d-procedural]
    python benchmarks/smoke_run.py --dataset shapes3d-attributes --random-inception
    python benchmarks/smoke_run.py --method beta_vae --dataset dsprites-procedural --keep runs-smoke

Runs ``bench run ... --preset smoke`` in a child process with a new output folder (kept
under ``--keep``, with the run's pictures, instead of a temporary one), then
prints a table and writes ``benchmarks/results/smoke_run-<method>[-<dataset>]-<host>.json``
(the dataset named when it is not the default).

``--random-inception`` times a run scored by FID on a machine without the Inception file:
FID's features then come from the FID Inception-v3 with random weights (the published
network's architecture, so its cost), and the FID value means nothing; the JSON says so.
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

DEFAULT_DATASET = "shapes3d-procedural"
# `bench` with FID's network replaced by the FID Inception-v3 at random weights.
RANDOM_INCEPTION = """
import torch
from bench.cli import app
from bench.metrics import fid
from bench.metrics.helpers import fid_inception
fid_inception.default_weights = lambda: __import__("pathlib").Path("{placeholder}")
torch.manual_seed(0)
network = fid_inception.FIDInceptionV3().eval()
fid.feature_network = lambda weights, device: (network.to(device), "random-inception")
app(prog_name="bench")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dyga_sd")
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument(
        "--random-inception",
        action="store_true",
        help="FID features from a random-weight Inception-v3: its cost, meaningless values",
    )
    parser.add_argument("--keep", type=Path, help="keep the record under this new folder")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: the folder exists; name a new one (a fresh record)")

    with tempfile.TemporaryDirectory() as temporary:
        out = str(args.keep or temporary)
        Path(out).mkdir(parents=True, exist_ok=True)
        command = ["bench"]
        if args.random_inception:
            placeholder = Path(out) / "placeholder-inception.pth"
            placeholder.write_bytes(b"")
            command = [sys.executable, "-c", RANDOM_INCEPTION.format(placeholder=placeholder)]
        command += ["run", "--method", args.method, "--dataset", args.dataset]
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
        # FID scored with a random-weight Inception-v3: the time is real, the value is not.
        "random_inception": args.random_inception,
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
    dataset = "" if args.dataset == DEFAULT_DATASET else f"-{args.dataset}"
    name = f"smoke_run-{args.method}{dataset}-{platform.node()}.json"
    path = Path(__file__).parent / "results" / name
    atomic_write_json(path, result)
    print(f"written: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
