"""Our forward passes and loss terms against the authors' own code, on the same weights.

    python benchmarks/parity.py --method ldm \
        --authors ~/src/DisDiff --authors ~/src/taming-transformers
    python benchmarks/parity.py --method dyga_sd \
        --authors ~/src/dis-dis --authors ~/src/taming-transformers --manifests

For one method (``--list`` names them and the repositories each needs) it imports the
authors' modules from the checkouts given as ``--authors`` (nothing of theirs is copied into
this repository), builds their networks and ours at the paper configuration, puts seeded
random weights in ours, maps them into theirs with our key maps (``bench.authors``), and on
fixed inputs, time steps and noise compares every forward output and loss term in float32
on the CPU (and in float64 where their code allows it). It prints max |Δ| per quantity and
writes ``benchmarks/results/parity-<method>.json`` with each repository's commit; it exits 1
when a quantity differs by more than 1e-5 (relative to its size where that is above 1:
float32 rounds relatively).

``--manifests`` also (re)writes the manifests of the authors' modules
(``bench/authors/manifests/``: their key names and shapes), which the tests check our key
maps against without the authors' code. Needs ``pip install -e ".[parity]"`` (einops).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
from parity_cases import CASES, case
from parity_cases.common import Comparison

from bench.authors.keymap import shapes
from bench.authors.layouts import MANIFESTS
from bench.fileio import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=CASES)
    parser.add_argument("--authors", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--manifests", action="store_true", help="rewrite their manifests")
    parser.add_argument("--list", action="store_true", help="the methods and their repos")
    args = parser.parse_args()
    if args.list or args.method is None:
        for name in CASES:
            print(f"{name:16} {', '.join(case(name).NEEDS)}")
        return 0
    torch.use_deterministic_algorithms(True)
    comparison = case(args.method).compare([path.expanduser().resolve() for path in args.authors])
    record = summary(args.method, comparison)
    print_table(record)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"parity-{args.method}.json", record)
    if args.manifests:
        write_manifests(comparison)
    return 0 if record["passed"] else 1


def summary(method: str, comparison: Comparison) -> dict:
    quantities = []
    for name, (ours, theirs) in comparison.quantities.items():
        ours, theirs = torch.as_tensor(ours).double(), torch.as_tensor(theirs).double()
        if ours.shape != theirs.shape:
            raise SystemExit(
                f"{name}: ours {tuple(ours.shape)} against theirs {tuple(theirs.shape)}"
            )
        quantities.append(
            {
                "name": name,
                "shape": list(ours.shape),
                "max_abs_diff": float((ours - theirs).abs().max()),
                "max_abs": float(theirs.abs().max()),
            }
        )
    return {
        "method": method,
        "command": " ".join(["python", "benchmarks/parity.py", *sys.argv[1:]]),
        "authors": [
            {"repo": c.repo, "commit": c.commit, "config": comparison.configs.get(c.repo)}
            for c in comparison.checkouts.values()
        ],
        "dtype": "float32",
        "device": "cpu",
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "tolerance": TOLERANCE,
        "passed": all(within(q) for q in quantities),
        "quantities": quantities,
        "notes": comparison.notes,
    }


def within(quantity: dict) -> bool:
    return quantity["max_abs_diff"] <= TOLERANCE * max(1.0, quantity["max_abs"])


def print_table(record: dict) -> None:
    width = max(len(q["name"]) for q in record["quantities"])
    print(
        f"{record['method']}: ours against "
        + ", ".join(f"{a['repo']}@{short(a['commit'])}" for a in record["authors"])
    )
    print(f"{'quantity':{width}}  {'max |Δ|':>10}  {'max |theirs|':>12}")
    for q in record["quantities"]:
        flag = "" if within(q) else "  > tolerance"
        print(f"{q['name']:{width}}  {q['max_abs_diff']:10.2e}  {q['max_abs']:12.3e}{flag}")
    for note in record["notes"]:
        print(f"note: {note}")


def short(commit: str) -> str:
    """A git commit's first 7 digits; a package version as it is."""
    return commit[:7] if len(commit) == 40 else commit


def write_manifests(comparison: Comparison) -> None:
    folder = Path(str(MANIFESTS))
    for name, (repo, module, state) in comparison.manifests.items():
        commit = comparison.checkouts[repo].commit
        head = json.dumps({"repo": repo, "commit": commit, "module": module}, indent=1)[:-2]
        keys = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in shapes(state).items())
        atomic_write_text(folder / f"{name}.json", f'{head},\n "keys": {{\n{keys}\n }}\n}}\n')
        print(f"wrote {folder / name}.json ({len(state)} keys)")


if __name__ == "__main__":
    sys.exit(main())
