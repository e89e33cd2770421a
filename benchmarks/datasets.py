"""Images/s of the procedural datasets for random training batches, first-call cost, memory.

    python benchmarks/datasets.py

Prints a table and writes ``benchmarks/results/datasets-<host>.json``. The shapes3d geometry
cache is built in a fresh temporary cache folder, so its first-call time is measured too.
"""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.fileio import atomic_write_json


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def images_per_second(dataset, batch_size: int, seconds: float = 3.0) -> float:
    rng = np.random.default_rng(0)
    dataset.images(rng.integers(0, len(dataset), batch_size))  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset.images(rng.integers(0, len(dataset), batch_size))
        count += batch_size
    return count / (time.perf_counter() - start)


def main() -> None:
    os.environ["BENCH_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
    import bench.datasets

    rows = []
    for name in ("shapes3d-procedural", "dsprites-procedural"):
        start = time.perf_counter()
        dataset = bench.datasets.load(name)
        dataset.images(np.arange(1))  # first call: builds any cache
        first_call = time.perf_counter() - start
        for batch_size in (64, 256, 1024):
            rows.append(
                {
                    "dataset": name,
                    "batch_size": batch_size,
                    "images_per_s": round(images_per_second(dataset, batch_size)),
                    "first_call_s": round(first_call, 2),
                    "peak_rss_mib": round(peak_rss_mib(), 1),
                }
            )
    print(f"\n{'dataset':<22}{'batch':>6}{'img/s':>10}{'first call (s)':>16}{'peak RSS (MiB)':>16}")
    for r in rows:
        print(
            f"{r['dataset']:<22}{r['batch_size']:>6}{r['images_per_s']:>10}"
            f"{r['first_call_s']:>16}{r['peak_rss_mib']:>16}"
        )
    result = {"host": platform.node(), "cpu_count": os.cpu_count(), "rows": rows}
    atomic_write_json(
        Path(__file__).parent / "results" / f"datasets-{platform.node()}.json", result
    )


if __name__ == "__main__":
    main()
