"""Paper-ready results from run records: a tidy table, LaTeX/Markdown tables, ablation plots,
and a page of each run's pictures. Reads records only, never models.

The table has one row per (run, metric, key). The summary table has methods (with their
sweep variant) as rows and (dataset, metric) as columns; each cell is mean ± std over seeds
with the seed count, the best mean per column in bold (by the metric's higher_is_better), and
a dagger where Welch's t-test separates the best from the runner-up at p < 0.05.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from bench.fileio import atomic_path, atomic_write_text
from bench.metrics import METRICS
from bench.registry import BenchError
from bench.store import COMPLETE, RunRecord

# The key each metric contributes to the summary table (the one papers report).
HEADLINE = {
    "factor_vae": "eval_accuracy",
    "dci": "disentanglement",
    "mig": "discrete_mig",
    "sap_score": "SAP_score",
    "modularity_explicitness": "modularity_score",
    "beta_vae": "eval_accuracy",
    "irs": "IRS",
    "tad": "tad",
}
SHORT = {
    "factor_vae.eval_accuracy": "FactorVAE",
    "dci.disentanglement": "DCI",
    "mig.discrete_mig": "MIG",
    "sap_score.SAP_score": "SAP",
    "modularity_explicitness.modularity_score": "Modularity",
    "beta_vae.eval_accuracy": "BetaVAE",
    "irs.IRS": "IRS",
    "tad.tad": "TAD",
}
COLUMNS = [
    "sweep", "variant", "dataset", "method", "config_hash", "seed", "metric", "key", "value",
    "version", "profile", "path",
]  # fmt: skip
SIGNIFICANCE = 0.05


def collect(runs: Path) -> pd.DataFrame:
    """Every complete run's metrics under ``runs``: one row per (run, metric, key)."""
    rows: list[dict[str, Any]] = []
    for status_file in sorted(runs.glob("*/*/*/seed*/status.json")):
        record = RunRecord(status_file.parent)
        if record.state() != COMPLETE:
            continue
        dataset, method, config_hash, seed = record.path.parts[-4:]
        sweep_file = record.path / "sweep.json"
        tag = json.loads(sweep_file.read_text()) if sweep_file.is_file() else {}
        for metric, result in record.metrics().items():
            for key, value in result["values"].items():
                rows.append(
                    {
                        "sweep": tag.get("sweep", ""),
                        "variant": tag.get("variant", "default"),
                        "dataset": dataset,
                        "method": method,
                        "config_hash": config_hash,
                        "seed": int(seed[len("seed") :]),
                        "metric": metric,
                        "key": key,
                        "value": float(value),
                        "version": result.get("version"),
                        "profile": result.get("profile", "exact"),
                        "path": str(record.path),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def row_label(method: str, variant: str) -> str:
    return method if variant == "default" else f"{method} [{variant}]"


def summarise(results: pd.DataFrame, all_keys: bool = False) -> pd.DataFrame:
    """mean, std, n per (row label, dataset, metric.key); std is the sample std (ddof 1)."""
    data = results.copy()
    if not all_keys:
        data = data[data.apply(lambda r: HEADLINE.get(r.metric) == r.key, axis=1)]
    data["column"] = data.metric + "." + data.key
    data["row"] = [row_label(m, v) for m, v in zip(data.method, data.variant, strict=True)]
    grouped = data.groupby(["row", "dataset", "column"]).value
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    summary["values"] = grouped.apply(list).values
    summary["std"] = summary["std"].fillna(0.0)
    return summary


def read_reported(folder: Path) -> pd.DataFrame:
    """Published rows from ``results/published/*.yaml`` in ``summarise``'s shape."""
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        for table in yaml.safe_load(path.read_text())["tables"]:
            for entry in table["rows"]:
                label = f"{entry['method']} (reported{', reprinted' if entry['reprinted'] else ''})"
                for dataset, values in entry["values"].items():
                    for column, (mean, std) in values.items():
                        rows.append(
                            {
                                "row": label,
                                "dataset": dataset,
                                "column": column,
                                "mean": mean,
                                "std": std,
                                "n": table.get("seeds") or 0,
                                "values": [],
                                "reported": True,
                            }
                        )
    return pd.DataFrame(rows)


def _higher_is_better(column: str) -> bool:
    return METRICS.get(column.split(".")[0]).higher_is_better


def mark_best(summary: pd.DataFrame) -> pd.DataFrame:
    """Adds ``best`` (the best mean of our rows per column) and ``significant`` (Welch's
    t-test of the best against the runner-up, p < 0.05)."""
    summary = summary.copy()
    summary["best"], summary["significant"] = False, False
    ours = summary[~summary.get("reported", pd.Series(False, index=summary.index)).fillna(False)]
    for _, group in ours.groupby(["dataset", "column"]):
        ranked = group.sort_values("mean", ascending=not _higher_is_better(group.column.iloc[0]))
        best = ranked.index[0]
        summary.loc[best, "best"] = True
        if len(ranked) > 1:
            a, b = ranked.iloc[0]["values"], ranked.iloc[1]["values"]
            if len(a) > 1 and len(b) > 1:
                p = stats.ttest_ind(a, b, equal_var=False).pvalue
                summary.loc[best, "significant"] = bool(np.isfinite(p) and p < SIGNIFICANCE)
    return summary


def _cell(row: pd.Series, latex: bool) -> str:
    pm = r"$\pm$" if latex else "±"
    n = f" ({int(row.n)})" if row.n else ""
    text = f"{row['mean']:.3f} {pm} {row['std']:.3f}"
    if row.significant:
        text += r"$^\dagger$" if latex else "†"
    if row.best:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    return text + (rf"\,{{\scriptsize{n}}}" if latex and n else n)


def pivot(summary: pd.DataFrame, latex: bool) -> pd.DataFrame:
    cells = summary.assign(cell=[_cell(r, latex) for _, r in summary.iterrows()])
    cells["column"] = cells.column.map(lambda c: SHORT.get(c, c))
    table = cells.pivot(index="row", columns=["dataset", "column"], values="cell")
    ours = [r for r in table.index if "(reported" not in r]
    table = table.loc[ours + [r for r in table.index if r not in ours]]
    return table.sort_index(axis=1).fillna("–")


def caption(summary: pd.DataFrame) -> str:
    return (
        "Mean $\\pm$ standard deviation over seeds (number of seeds in parentheses); best of "
        "our rows in bold; $^\\dagger$: the best differs from the runner-up by Welch's t-test "
        f"at p < {SIGNIFICANCE}. Rows marked reported are published numbers."
    )


def to_latex(summary: pd.DataFrame) -> str:
    table = pivot(summary, latex=True)
    table.index.name = None
    styler = table.style
    return styler.to_latex(
        hrules=True,
        column_format="l" + "c" * table.shape[1],
        multicol_align="c",
        caption=caption(summary),
        label="tab:drlbench",
        position_float="centering",
    )


def to_markdown(summary: pd.DataFrame) -> str:
    table = pivot(summary, latex=False)
    table.columns = [f"{d} {c}" for d, c in table.columns]
    table.index.name = "method"
    note = caption(summary).replace("$\\pm$", "±").replace("$^\\dagger$", "†")
    return table.to_markdown() + f"\n\n{note}\n"


def ablation_plots(results: pd.DataFrame, out: Path) -> list[Path]:
    """Per (sweep, method, dataset, headline metric) with several variants: every seed as a
    point and the mean with a 95% CI per variant; a line plot when the variants are one
    numeric override swept over values (e.g. method.skip_dropout.p=0.1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    written = []
    data = results[results.apply(lambda r: HEADLINE.get(r.metric) == r.key, axis=1)]
    for (sweep, method, dataset, metric), group in data.groupby(
        ["sweep", "method", "dataset", "metric"]
    ):
        if group.variant.nunique() < 2:
            continue
        numeric = _numeric_sweep(group.variant.unique())
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        if numeric is not None:
            name, values = numeric
            group = group.assign(**{name: group.variant.map(values)})
            sns.lineplot(data=group, x=name, y="value", errorbar=("ci", 95), marker="o", ax=ax)
            sns.scatterplot(data=group, x=name, y="value", color="0.3", s=14, ax=ax)
        else:
            sns.pointplot(
                data=group, x="variant", y="value", errorbar=("ci", 95), linestyle="none", ax=ax
            )
            sns.stripplot(data=group, x="variant", y="value", color="0.3", size=3, ax=ax)
            ax.tick_params(axis="x", rotation=30)
        ax.set_ylabel(SHORT.get(f"{metric}.{HEADLINE[metric]}", metric))
        ax.set_title(f"{method} on {dataset}")
        fig.tight_layout()
        stem = _slug(f"ablation-{sweep}-{method}-{dataset}-{metric}")
        for suffix in ("pdf", "png"):
            path = out / f"{stem}.{suffix}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=suffix, dpi=150)
            written.append(path)
        plt.close(fig)
    return written


def _numeric_sweep(variants) -> tuple[str, dict[str, float]] | None:
    """(key, variant → value) when every variant is ``key=<number>`` for one key."""
    parsed = [re.fullmatch(r"([\w.]+)=([-+0-9.eE]+)", v) for v in variants]
    if not all(parsed) or len({m.group(1) for m in parsed}) != 1:
        return None
    return parsed[0].group(1), {m.group(0): float(m.group(2)) for m in parsed}


def figure_page(results: pd.DataFrame, out: Path) -> Path:
    """figures.md: each run's pictures, copied under figures/, grouped by dataset and method."""
    lines = ["# Pictures of every run", ""]
    runs = results.drop_duplicates("path").sort_values(["dataset", "method", "variant", "seed"])
    for _, run in runs.iterrows():
        pictures = sorted((Path(run.path) / "pictures").glob("*.png"))
        if not pictures:
            continue
        lines.append(f"## {run.dataset} · {row_label(run.method, run.variant)} · seed {run.seed}")
        for picture in pictures:
            target = out / "figures" / _slug(f"{run.dataset}-{run.method}-{run.variant}")
            target = target / f"seed{run.seed}-{picture.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, target)
            lines.append(f"![{picture.stem}]({target.relative_to(out)})")
        lines.append("")
    page = out / "figures.md"
    atomic_write_text(page, "\n".join(lines) + "\n")
    return page


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def write_report(
    runs: Path, out: Path, reported: Path | None = None, all_keys: bool = False
) -> dict[str, Path]:
    """Everything ``bench report`` writes; returns what it wrote, by kind."""
    results = collect(runs)
    if results.empty:
        raise BenchError(f"no complete runs under {runs}; run some first (bench run / sweep)")
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "results.csv", "parquet": out / "results.parquet"}
    with atomic_path(written["csv"]) as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(written["parquet"]) as tmp:
        results.to_parquet(tmp, index=False)
    summary = summarise(results, all_keys)
    if reported is not None:
        published = read_reported(reported)
        columns = set(zip(summary.dataset, summary.column, strict=True))
        keep = [(d, c) in columns for d, c in zip(published.dataset, published.column, strict=True)]
        summary = pd.concat([summary.assign(reported=False), published[keep]], ignore_index=True)
    summary = mark_best(summary)
    written["latex"], written["markdown"] = out / "table.tex", out / "table.md"
    atomic_write_text(written["latex"], to_latex(summary))
    atomic_write_text(written["markdown"], to_markdown(summary))
    for i, path in enumerate(ablation_plots(results, out)):
        written[f"plot{i}"] = path
    written["figures"] = figure_page(results, out)
    return written
