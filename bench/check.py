"""``bench check``: compare fresh numbers with committed reference numbers.

A reference file (``results/reference/<name>.yaml``) lists one entry per configuration,
metric and key, with the same identity ``bench report`` gives a row and a column: dataset,
method, config hash, metric, key, profile, metric version and metric settings (the row label
is kept for reading). Each entry holds the reference mean at full precision, its seed std
and seed count, and a tolerance: the larger of an absolute one and k × the reference's seed
std. A number outside its tolerance in the worse direction (by the metric's
higher_is_better) is a regression; in the better direction, a change to acknowledge with
``--update``; a reference entry with no fresh number of the same identity is missing (a run
of another preset or other settings never stands in for it).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.config import config_hash, known_presets, resolve_config
from bench.errors import BenchError
from bench.fileio import atomic_write_text
from bench.metrics import METRICS
from bench.report import base_metric, collect, with_rows

# A single-seed entry has no seed std to scale: the absolute tolerance is all there is.
DEFAULT_TOLERANCE = {"abs": 0.01, "k_std": 3.0}
IDENTITY = (
    "dataset", "method", "config_hash", "metric", "key", "profile", "version", "protocol_id",
)  # fmt: skip


@dataclass
class Comparison:
    entry: dict[str, Any]
    ours: float | None
    tolerance: float
    verdict: str  # ok, regressed, improved, missing
    note: str = ""


def load_results(path: Path) -> pd.DataFrame:
    """Fresh numbers: a folder of run records, or a ``bench report`` results.csv/.parquet."""
    if path.is_dir():
        return collect(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={k: str for k in ("version", "config_hash", "protocol_id")})
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raise BenchError(f"{path}: give a runs folder or a bench report results.csv / .parquet")


def means(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, seed std and seed count per identity, with the row label of ``bench report``."""
    data = with_rows(results)
    grouped = data.groupby([*IDENTITY, "row"]).value
    return grouped.agg(mean="mean", std="std", seeds="count").fillna({"std": 0.0}).reset_index()


def _key(entry: dict[str, Any] | pd.Series) -> tuple:
    return tuple(str(entry[k]) for k in IDENTITY)


def compare(
    results: pd.DataFrame, reference: dict[str, Any], exact: bool = False
) -> list[Comparison]:
    """Each reference entry against the fresh mean of the same identity. ``exact``: no
    tolerance at all, every number must equal the reference's to the last digit (what a
    change that should move nothing, a refactor, is held to on the machine the reference
    was made on)."""
    table = means(results)
    fresh = {_key(r): r for _, r in table.iterrows()}
    default = {**DEFAULT_TOLERANCE, **(reference.get("tolerance") or {})}
    comparisons = []
    for entry in reference["entries"]:
        rule = {**default, **(entry.get("tolerance") or {})}
        tolerance = 0.0 if exact else max(rule["abs"], rule["k_std"] * entry.get("std", 0.0))
        row = fresh.get(_key(entry))
        if row is None:
            comparisons.append(
                Comparison(entry, None, tolerance, "missing", _why_missing(entry, results))
            )
            continue
        ours, theirs = float(row["mean"]), float(entry["mean"])
        diff = ours - theirs
        verdict = "ok"
        if math.isnan(ours) or math.isnan(theirs):  # undefined (DCI disentanglement of one
            verdict = "ok" if math.isnan(ours) and math.isnan(theirs) else "regressed"  # factor)
        elif abs(diff) > tolerance + (0.0 if exact else 1e-12):
            metric = base_metric(entry["metric"])
            better = diff > 0 if METRICS.get(metric).higher_is_better else diff < 0
            verdict = "improved" if better else "regressed"
        comparisons.append(Comparison(entry, float(row["mean"]), tolerance, verdict))
    return comparisons


def _why_missing(entry: dict[str, Any], table: pd.DataFrame) -> str:
    """What the fresh numbers hold instead, when they hold the same method and metric."""
    same = table[
        (table.dataset == entry["dataset"])
        & (table.method == entry["method"])
        & (table.metric == entry["metric"])
        & (table.key == entry["key"])
    ]
    if same.empty:
        return "no run of this method on this dataset scored this metric"
    if str(entry["config_hash"]) not in set(map(str, same.config_hash)):
        theirs = _preset_of(entry)
        ours = sorted({p or "no" for p in same.preset.fillna("")})
        if theirs is not None and theirs not in ours:
            return (
                f"the reference was made with the {theirs} preset; these runs use "
                f"{' and '.join(ours)} preset"
            )
    differs = [
        f"{k} {entry[k]} here {'/'.join(sorted(map(str, same[k].unique())))}"
        for k in ("config_hash", "profile", "version", "protocol_id")
        if str(entry[k]) not in set(map(str, same[k]))
    ]
    return "other settings: " + "; ".join(differs) if differs else ""


def _preset_of(entry: dict[str, Any]) -> str | None:
    """The preset whose settings (for the entry's method and dataset, no overrides) hash to
    the entry's config hash ("no" for none); None when no preset does."""
    return _preset_hashes(entry["method"], entry["dataset"]).get(str(entry["config_hash"]))


@functools.cache
def _preset_hashes(method: str, dataset: str) -> dict[str, str]:
    """Config hash -> preset ("no" for none) of ``method`` on ``dataset``: resolved once for
    all the entries that ask."""
    try:
        presets = known_presets(method)
    except BenchError:  # a method no longer registered
        return {}
    hashes = {}
    for preset in (None, *presets):
        try:
            hashes[config_hash(resolve_config(method, dataset, preset))] = preset or "no"
        except BenchError:  # a preset this method or dataset does not take
            continue
    return hashes


def diff_table(comparisons: list[Comparison]) -> str:
    """One aligned line per reference entry: where, reference, ours, Δ, tolerance, verdict."""
    header = ("dataset", "row", "metric", "reference", "ours", "Δ", "tol", "verdict")
    rows = [header]
    for c in comparisons:
        e = c.entry
        metric = f"{e['metric']}.{e['key']}" + (
            "" if e["profile"] == "exact" else f" ({e['profile']})"
        )
        rows.append(
            (
                str(e["dataset"]),
                str(e.get("row", e["method"])),
                metric,
                f"{e['mean']:.4f}",
                "–" if c.ours is None else f"{c.ours:.4f}",
                "–" if c.ours is None else f"{c.ours - e['mean']:+.4f}",
                f"{c.tolerance:.4f}",
                c.verdict + (f" ({c.note})" if c.note else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:  # text left-aligned, numbers right-aligned, two spaces between
        cells = [
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def read_reference(path: Path, strict: bool = True) -> dict[str, Any]:
    """The reference file; ``strict=False`` (for ``--update``) accepts entries of an older
    format, whose tolerances are then dropped."""
    if not path.is_file():
        raise BenchError(f"reference {path} does not exist; create it with --update")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise BenchError(f"reference {path} is not valid YAML: {problem}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise BenchError(f"reference {path} has no 'entries' list")
    for entry in entries if strict else []:
        absent = [k for k in (*IDENTITY, "mean") if k not in entry]
        if absent:
            raise BenchError(
                f"reference {path}: an entry lacks {', '.join(absent)} (written by an older "
                "bench check?); rewrite it with --update"
            )
    return data


def updated_reference(results: pd.DataFrame, old: dict[str, Any] | None) -> dict[str, Any]:
    """The reference rewritten from fresh numbers at full precision, keeping the tolerances
    already set."""
    old = old or {}
    kept = {
        _key(e): e.get("tolerance") for e in old.get("entries", []) if all(k in e for k in IDENTITY)
    }
    entries = []
    for _, row in means(results).iterrows():
        entry = {k: str(row[k]) for k in IDENTITY}
        entry.update(row=row["row"], mean=float(row["mean"]), std=float(row["std"]))
        entry["seeds"] = int(row["seeds"])
        if kept.get(_key(entry)):
            entry["tolerance"] = kept[_key(entry)]
        entries.append(entry)
    return {
        "description": old.get("description", "reference numbers for bench check"),
        "tolerance": old.get("tolerance", DEFAULT_TOLERANCE),
        "entries": entries,
    }


def write_reference(path: Path, reference: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(reference, sort_keys=False, allow_unicode=True))
