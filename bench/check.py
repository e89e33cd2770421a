"""``bench check``: compare fresh numbers with committed reference numbers.

A reference file (``results/reference/<name>.yaml``) lists, per (dataset, method, variant,
metric, key), the reference mean, its seed std and seed count, and a tolerance: the larger of
an absolute one and k × the reference's seed std. A number outside its tolerance in the worse
direction (by the metric's higher_is_better) is a regression; in the better direction, a
change to acknowledge with ``--update``; a reference entry with no fresh number is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.fileio import atomic_write_text
from bench.metrics import METRICS
from bench.registry import BenchError
from bench.report import collect

DEFAULT_TOLERANCE = {"abs": 0.0, "k_std": 3.0}
IDENTITY = ("dataset", "method", "variant", "metric", "key")


@dataclass
class Comparison:
    entry: dict[str, Any]
    ours: float | None
    tolerance: float
    verdict: str  # ok, regressed, improved, missing


def load_results(path: Path) -> pd.DataFrame:
    """Fresh numbers: a folder of run records, or a ``bench report`` results.csv/.parquet."""
    if path.is_dir():
        return collect(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raise BenchError(f"{path}: give a runs folder or a bench report results.csv / .parquet")


def means(results: pd.DataFrame) -> pd.DataFrame:
    grouped = results.groupby(list(IDENTITY)).value
    return grouped.agg(mean="mean", std="std", seeds="count").fillna(0.0).reset_index()


def compare(results: pd.DataFrame, reference: dict[str, Any]) -> list[Comparison]:
    fresh = {tuple(r[k] for k in IDENTITY): r for _, r in means(results).iterrows()}
    default = {**DEFAULT_TOLERANCE, **(reference.get("tolerance") or {})}
    comparisons = []
    for entry in reference["entries"]:
        rule = {**default, **(entry.get("tolerance") or {})}
        tolerance = max(rule["abs"], rule["k_std"] * entry.get("std", 0.0))
        row = fresh.get(tuple(entry[k] for k in IDENTITY))
        if row is None:
            comparisons.append(Comparison(entry, None, tolerance, "missing"))
            continue
        diff = row["mean"] - entry["mean"]
        verdict = "ok"
        if abs(diff) > tolerance + 1e-12:
            better = diff > 0 if METRICS.get(entry["metric"]).higher_is_better else diff < 0
            verdict = "improved" if better else "regressed"
        comparisons.append(Comparison(entry, float(row["mean"]), tolerance, verdict))
    return comparisons


def diff_table(comparisons: list[Comparison]) -> str:
    lines = [
        f"{'dataset':<22}{'method':<14}{'variant':<12}{'metric':<34}"
        f"{'reference':>10}{'ours':>10}{'Δ':>10}{'tol':>8}  verdict"
    ]
    for c in comparisons:
        e = c.entry
        ours = "–" if c.ours is None else f"{c.ours:.4f}"
        delta = "–" if c.ours is None else f"{c.ours - e['mean']:+.4f}"
        lines.append(
            f"{e['dataset']:<22}{e['method']:<14}{e['variant']:<12}"
            f"{e['metric'] + '.' + e['key']:<34}{e['mean']:>10.4f}{ours:>10}{delta:>10}"
            f"{c.tolerance:>8.4f}  {c.verdict}"
        )
    return "\n".join(lines)


def read_reference(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BenchError(f"reference {path} does not exist; create it with --update")
    data = yaml.safe_load(path.read_text()) or {}
    if "entries" not in data:
        raise BenchError(f"reference {path} has no 'entries' list")
    return data


def updated_reference(results: pd.DataFrame, old: dict[str, Any] | None) -> dict[str, Any]:
    """The reference rewritten from fresh numbers, keeping the tolerances already set."""
    old = old or {}
    kept = {tuple(e[k] for k in IDENTITY): e.get("tolerance") for e in old.get("entries", [])}
    entries = []
    for _, row in means(results).iterrows():
        entry = {k: row[k] for k in IDENTITY}
        entry.update(mean=round(float(row["mean"]), 6), std=round(float(row["std"]), 6))
        entry["seeds"] = int(row["seeds"])
        if kept.get(tuple(entry[k] for k in IDENTITY)):
            entry["tolerance"] = kept[tuple(entry[k] for k in IDENTITY)]
        entries.append(entry)
    return {
        "description": old.get("description", "reference numbers for bench check"),
        "tolerance": old.get("tolerance", DEFAULT_TOLERANCE),
        "entries": entries,
    }


def write_reference(path: Path, reference: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(reference, sort_keys=False, allow_unicode=True))
