"""Paper-ready results from run records: a tidy table, LaTeX/Markdown tables, ablation plots,
and a page of each run's pictures. Reads records only, never models.

The tidy table has one row per (run, metric, key). In the summary table a row is one
*configuration*: runs that differ only in their seed. Runs of one method with different
settings (a config hash of their own) are separate rows, labelled by what sets them apart:
the sweep variant, else the overrides that differ from the method's defaults
(``beta_vae (method.beta=8.0)``). Columns are (dataset, metric key), and a column never
mixes profiles (exact and fast DCI), metric versions or hyperparameters: a seed re-scored
with other settings (``bench eval``) has a column of its own, named by them. Each
cell is mean ± std over the row's seeds with the seed count, the best mean per column in bold
(by the metric's higher_is_better), and a dagger where Welch's t-test separates the best from
the runner-up at p < 0.05.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from bench.datasets import STANDS_IN_FOR
from bench.errors import BenchError
from bench.fileio import atomic_path, atomic_write_text
from bench.metrics import METRICS
from bench.metrics.spec import MetricSpec
from bench.store import (
    COMPLETE,
    DEVIATION_MARK,
    RunRecord,
    find_runs,
    run_label,
    scoring_settings,
)

COLUMNS = [
    "sweep", "variant", "preset", "overrides", "deviation", "supervision", "dataset", "method",
    "config_hash",
    "seed", "metric", "key", "value", "version", "profile", "protocol", "scoring", "protocol_id",
    "path",
]  # fmt: skip
SIGNIFICANCE = 0.05
LAYOUTS = ("fit", "plain", "landscape")
# What table.tex needs in the preamble, by layout.
PACKAGES = {"plain": ["booktabs"], "fit": ["booktabs", "graphicx"]}
PACKAGES["landscape"] = [*PACKAGES["fit"], "pdflscape"]


def base_metric(name: str) -> str:
    """The registered metric of a metrics.json entry: ``mig`` of ``mig/unknown`` (the scores of
    a method's score subset, ``Supervision.score_subsets``)."""
    return name.partition("/")[0]


def metric_spec(name: str) -> MetricSpec | None:
    """The registered metric of a metrics.json entry, or None for one no longer registered
    (a plugin since uninstalled): its columns then go by their keys."""
    base = base_metric(name)
    return METRICS.get(base) if base in METRICS else None


def headline(name: str) -> str | None:
    """The key a metrics.json entry contributes to the summary table (``MetricSpec``)."""
    spec = metric_spec(name)
    return spec.headline if spec is not None else None


def column_label(metric: str, key: str) -> str:
    """A ``metric.key`` column's header: the metric's label for its headline key."""
    spec = metric_spec(metric)
    return spec.label if spec is not None and spec.headline == key else f"{metric}.{key}"


# What a score subset's scores are, in a column header (default: the subset's name).
SUBSET_HEADERS = {"unknown": "unknown factors", "raw": "raw dims"}


def short_name(column: str) -> str:
    """A column's header: ``MIG``, or ``MIG (unknown factors)`` for a subset's scores."""
    metric, _, key = column.partition(".")
    base, _, subset = metric.partition("/")
    name = column_label(base, key)
    return f"{name} ({SUBSET_HEADERS.get(subset, subset)})" if subset else name


# How a metric was scored, beyond the profile and version a column already names.
SCORING_KEYS = ("hyperparams", "random_seed", "protocol")
# The settings a column names in words when one metric was scored several ways here.
WORDED_KEYS = ("hyperparams", "random_seed")


def metric_settings_id(result: dict[str, Any], keys: tuple[str, ...] = SCORING_KEYS) -> str:
    """A short hash of how a metric was scored: seeds of one row must share it."""
    blob = json.dumps({k: result.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def collect(runs: Path) -> pd.DataFrame:
    """Every complete run's metrics under ``runs``: one row per (run, metric, key)."""
    rows: list[dict[str, Any]] = []
    for record in find_runs(runs):
        if record.state() != COMPLETE:
            continue
        dataset, method, config_hash, seed = record.path.parts[-4:]
        identity = record.identity()
        for metric, result in record.metrics().items():
            for key, value in result["values"].items():
                rows.append(
                    {
                        "sweep": identity.get("sweep", ""),
                        "variant": identity.get("variant", "default"),
                        "preset": identity.get("preset") or "",
                        "overrides": ", ".join(identity.get("distinguishing", [])),
                        "deviation": "; ".join(identity.get("deviations", [])),
                        "supervision": identity.get("supervision", ""),
                        "dataset": dataset,
                        "method": method,
                        "config_hash": config_hash,
                        "seed": int(seed[len("seed") :]),
                        "metric": metric,
                        "key": key,
                        "value": float(value),
                        "version": str(result.get("version")),
                        "profile": result.get("profile", "exact"),
                        "protocol": result.get("protocol") or "",
                        "scoring": json.dumps(
                            scoring_settings(result, WORDED_KEYS), sort_keys=True, default=str
                        ),
                        "protocol_id": metric_settings_id(
                            result, ("version", "profile", *SCORING_KEYS)
                        ),
                        "path": str(record.path),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS).fillna(
        {"preset": "", "overrides": "", "protocol": "", "supervision": "", "scoring": "{}"}
    )


def with_rows(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``row``: one label per configuration. Runs share a row only when they
    share dataset-independent settings and a config hash per dataset; labels gain the
    preset, then the config hash where that is what tells two configurations apart. (Seeds
    of a row scored in different ways go to different columns: ``column_names``.)"""
    data = results.copy()
    if "row" in data:  # labelled already (a report's results.csv, or a second caller)
        return data
    if data.empty:
        return data.assign(row=[])
    overrides = [tuple(o.split(", ")) if o else () for o in data.overrides]
    data["row"] = [
        run_label(m, o, v) for m, o, v in zip(data.method, overrides, data.variant, strict=True)
    ]
    # A run of a preset other than the paper's (a CPU preset) says so, as do the runs of a
    # method under several presets in one folder: a smoke row never passes for a paper one.
    several = data.groupby("method").preset.transform("nunique") > 1
    several |= ~data.preset.fillna("").isin(["", "paper"])
    data.loc[several, "row"] = [
        run_label(m, (f"{p or 'default'} preset", *o), v)
        for m, o, v, p in zip(
            data.method[several],
            [overrides[i] for i in np.flatnonzero(several)],
            data.variant[several],
            data.preset[several],
            strict=True,
        )
    ]
    # A results.csv of an earlier report has no supervision column: nothing to mark.
    supervision = data.get("supervision", pd.Series("", index=data.index)).fillna("")
    supervised = supervision != ""
    data.loc[supervised, "row"] = data.row[supervised] + " [" + supervision[supervised] + "]"
    deviates = data.deviation != ""
    data.loc[deviates, "row"] = data.row[deviates] + f" {DEVIATION_MARK}"
    # What was still ambiguous (records without run.json): the config hash tells them apart.
    clash = data.groupby(["dataset", "row"]).config_hash.transform("nunique") > 1
    data.loc[clash, "row"] = data.row[clash] + " #" + data.config_hash[clash].str[:6]
    return data


def configurations_note(results: pd.DataFrame) -> list[str]:
    """One line per (method, dataset) whose runs here are of several configurations, and one
    per configuration whose seeds were scored in different ways (one column each)."""
    lines = []
    data = with_rows(results)
    for (method, dataset), group in data.groupby(["method", "dataset"]):
        rows = sorted(group.row.unique())
        if len(rows) > 1:
            lines.append(
                f"{method}: {len(rows)} configurations on {dataset}, one row each: "
                + "; ".join(rows)
            )
    data = data.assign(column=column_names(data))
    for (row, dataset, metric), group in data.groupby(["row", "dataset", "metric"]):
        # The ways one key was scored (its headline where scored): a metric's other keys
        # are other columns, not other ways.
        keys = set(group.key)
        key = headline(metric) if headline(metric) in keys else sorted(keys)[0]
        one_key = group[group.key == key]
        ways = one_key.drop_duplicates(["seed", "column"]).groupby("column").seed.apply(sorted)
        if len(ways) > 1:
            seeds = "; ".join(
                f"{column}: seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}"
                for column, s in sorted(ways.items(), key=lambda way: way[1])
            )
            lines.append(
                f"{row} on {dataset}: {metric} was scored {len(ways)} ways, one column each "
                f"({seeds}); `bench eval` the other seeds with the same settings to average "
                "them"
            )
    return lines


def column_names(data: pd.DataFrame) -> pd.Series:
    """The header of each (metric, key, profile, protocol, version): the short name, then the
    profile when it is not exact, the protocol where the metric has one, and the version
    where one report holds several."""
    base = data.metric + "." + data.key
    names = base.map(short_name)
    names = names.where(data.profile == "exact", names + " (" + data.profile + ")")
    # Numbers of different protocols (TAD's grid step) are never in one column.
    names = names.where(data.protocol == "", names + " [" + data.protocol + "]")
    versions = data.assign(name=names).groupby("name").version.transform("nunique")
    names = names.where(versions <= 1, names + " v" + data.version)
    # One metric scored with other hyperparameters (a seed re-scored by bench eval): a
    # column per way, named by the settings that differ.
    scoring = data.get("scoring", pd.Series("{}", index=data.index)).fillna("{}")
    for name, ways in scoring.groupby(names.copy()):
        if ways.nunique() > 1:
            worded = differing_settings([json.loads(w) for w in ways.unique()])
            for way, words in zip(ways.unique(), worded, strict=True):
                names[(names == name) & (scoring == way)] = f"{name} [{words}]"
    return names


def differing_settings(ways: list[dict[str, Any]]) -> list[str]:
    """``num_train=200`` per way: the settings whose values differ among ``ways``."""
    keys = sorted({k for w in ways for k in w if len({json.dumps(x.get(k)) for x in ways}) > 1})
    return [", ".join(f"{k}={w.get(k)}" for k in keys) for w in ways]


def summarise(
    results: pd.DataFrame, all_keys: bool = False, columns: list[str] | None = None
) -> pd.DataFrame:
    """mean, std, n per (row, dataset, column); std is the sample std (ddof 1). ``columns``
    keeps only those ``metric.key`` (or ``metric`` for its headline key) columns."""
    data = with_rows(results)
    if columns:
        data = data[select_columns(data, columns)]
    elif not all_keys:
        data = data[[headline(m) == k for m, k in zip(data.metric, data.key, strict=True)]]
    data = data.assign(column=column_names(data), base=data.metric + "." + data.key)
    grouped = data.groupby(["row", "dataset", "column"]).value
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    summary["values"] = grouped.apply(list).values
    summary["std"] = summary["std"].fillna(0.0)
    first = data.groupby(["row", "dataset", "column"])[["base", "profile", "preset"]].first()
    return summary.merge(first.reset_index(), on=["row", "dataset", "column"])


def select_columns(data: pd.DataFrame, wanted: list[str]) -> pd.Series:
    """Rows of ``data`` in the ``metric.key`` columns asked for (``metric``: its headline)."""
    available = sorted(set(data.metric + "." + data.key))
    keys = [w if "." in w else f"{w}.{headline(w) or ''}" for w in wanted]
    unknown = [w for w, k in zip(wanted, keys, strict=True) if k not in available]
    if unknown:
        raise BenchError(
            f"--metrics: no results for {', '.join(unknown)}; available: {', '.join(available)}"
        )
    return (data.metric + "." + data.key).isin(keys)


def read_reported(folder: Path) -> pd.DataFrame:
    """Published rows from ``results/published/*.yaml`` in ``summarise``'s shape."""
    if not folder.is_dir():
        raise BenchError(
            f"--reported: no folder of published numbers at {folder}; run from the repository "
            "root or give --published"
        )
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        for table in yaml.safe_load(path.read_text())["tables"]:
            for entry in table["rows"]:
                label = f"{entry['method']} (reported{', reprinted' if entry['reprinted'] else ''})"
                # How the authors scored a column, where their code says (TAD's grid step and
                # image count, FID's sample count): the column of ours scored the same way.
                protocols = entry.get("protocols", {})
                for dataset, values in entry["values"].items():
                    for base, (mean, std) in values.items():
                        protocol = protocols.get(base)
                        rows.append(
                            {
                                "row": label,
                                "dataset": dataset,
                                "column": column_label(*base.partition(".")[::2])
                                + (f" [{protocol}]" if protocol else ""),
                                "base": base,
                                "profile": "exact",
                                "mean": mean,
                                "std": std,
                                "n": table.get("seeds") or 0,
                                "values": [],
                                "reported": True,
                                "method": entry["method"],
                                "reprinted": bool(entry["reprinted"]),
                                "table": table["name"],
                            }
                        )
    columns = ["row", "dataset", "column", "base", "profile", "mean", "std", "n", "values"]
    data = pd.DataFrame(rows, columns=[*columns, "reported", "method", "reprinted", "table"])
    # A number one paper reprints from another file here is one cell, the first-hand one.
    data = data.sort_values("reprinted", kind="stable").drop_duplicates(
        ["method", "dataset", "column", "mean", "std"]
    )
    # One label with two numbers for a cell (two papers' runs of one baseline): every row of
    # that label names its table instead.
    clash = data.duplicated(["row", "dataset", "column"], keep=False)
    relabel = data.row.isin(set(data.row[clash]))
    data.loc[relabel, "row"] = data.method[relabel] + " (reported in " + data.table[relabel] + ")"
    return data[[*columns, "reported"]].sort_index().reset_index(drop=True)


def on_stand_ins(published: pd.DataFrame, datasets: set[str]) -> pd.DataFrame:
    """Published rows of a real dataset that only its procedural stand-in has runs of here
    (shapes3d → shapes3d-procedural), moved to the stand-in's column and labelled so."""
    moved = []
    for stand_in, real in STANDS_IN_FOR.items():
        if stand_in in datasets and real not in datasets:
            rows = published[published.dataset == real].copy()
            rows["row"] = rows.row.str.replace("(reported", f"(reported on {real}", regex=False)
            moved.append(rows.assign(dataset=stand_in))
    return pd.concat([published, *moved], ignore_index=True) if moved else published


def mark_best(summary: pd.DataFrame) -> pd.DataFrame:
    """Adds ``best`` (the best mean per column among our rows of one preset, when there are
    two or more of them: a lone row is best of nothing) and ``significant`` (Welch's t-test
    of the best against the runner-up, p < 0.05)."""
    summary = summary.copy()
    summary["best"], summary["significant"] = False, False
    ours = summary[~summary.get("reported", pd.Series(False, index=summary.index)).fillna(False)]
    preset = ours.get("preset", pd.Series("", index=ours.index)).fillna("")
    for _, group in ours.groupby([ours.dataset, ours.column, preset]):
        metric = base_metric(group.base.iloc[0].split(".")[0])
        higher_is_better = METRICS.get(metric).higher_is_better
        ranked = group.dropna(subset=["mean"]).sort_values("mean", ascending=not higher_is_better)
        if len(ranked) < 2:  # nothing to be best of (or undefined everywhere)
            continue
        best = ranked.index[0]
        summary.loc[best, "best"] = True
        if len(ranked) > 1:
            a, b = ranked.iloc[0]["values"], ranked.iloc[1]["values"]
            if len(a) > 1 and len(b) > 1:
                with warnings.catch_warnings():  # identical seeds: p is NaN, no dagger
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p = stats.ttest_ind(a, b, equal_var=False).pvalue
                summary.loc[best, "significant"] = bool(np.isfinite(p) and p < SIGNIFICANCE)
    return summary


def _cell(row: pd.Series, latex: bool) -> str:
    pm = r"$\pm$" if latex else "±"
    if np.isnan(row["mean"]):
        return "n/a"  # the metric is undefined here (DCI disentanglement of a single factor)
    n = f" ({int(row.n)})" if row.n else ""
    # One seed has no spread to show; a published number without a seed count keeps its std.
    text = f"{row['mean']:.3f}" if row.n == 1 else f"{row['mean']:.3f} {pm} {row['std']:.3f}"
    if row.significant:
        text += r"$^\dagger$" if latex else "†"
    if row.best:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    return text + (rf"\,{{\scriptsize{n}}}" if latex and n else n)


def pivot(summary: pd.DataFrame, latex: bool) -> pd.DataFrame:
    cells = summary.assign(cell=[_cell(r, latex) for _, r in summary.iterrows()])
    table = cells.pivot(index="row", columns=["dataset", "column"], values="cell")
    ours = [r for r in table.index if "(reported" not in r]
    table = table.loc[ours + [r for r in table.index if r not in ours]]
    table = table.sort_index(axis=1).fillna("–")
    arrows = dict(zip(summary.column, summary.base.map(direction), strict=True))
    table.columns = pd.MultiIndex.from_tuples(
        [(d, f"{c} {arrows[c]}" if arrows[c] else c) for d, c in table.columns]
    )
    return table


def direction(base: str) -> str:
    """↑ or ↓ for a metric's headline key (which way is better); "" for any other key."""
    metric, _, key = base.partition(".")
    spec = metric_spec(metric)
    if spec is None or spec.headline != key:
        return ""
    return "↑" if spec.higher_is_better else "↓"


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    # Unicode that pdflatex's inputenc does not know: method names (β-VAE) and marks.
    "β": r"$\beta$",
    "λ": r"$\lambda$",
    "×": r"$\times$",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "‡": r"$^\ddagger$",
}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX prints it literally (method names, overrides, dataset names)."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def caption(summary: pd.DataFrame, latex: bool = True) -> str:
    """What the table shows, and which result key each column header stands for."""
    pm, dagger, p = (r"$\pm$", r"$^\dagger$", f"$p < {SIGNIFICANCE}$")
    up, down = r"$\uparrow$", r"$\downarrow$"
    if not latex:
        pm, dagger, p, up, down = "±", "†", f"p < {SIGNIFICANCE}", "↑", "↓"
    keys = summary.drop_duplicates("column").sort_values("column")
    named = [f"{c} = {b}" for c, b in zip(keys.column, keys.base, strict=True)]
    if latex:
        named = [latex_escape(n) for n in named]
    deviation = ""
    if summary.row.str.endswith(DEVIATION_MARK).any():
        mark = latex_escape(DEVIATION_MARK) if latex else DEVIATION_MARK
        deviation = f" {mark}: deviates from the authors' released code (its run.json says how)."
    undefined = ""
    if summary["mean"].isna().any():
        undefined = " n/a: the metric is undefined there (one factor scored)."
    # Each mark is explained only where the table has one.
    marks = [f"Mean {pm} standard deviation over seeds (number of seeds in parentheses)"]
    if summary.get("best", pd.Series(False, index=summary.index)).any():
        marks.append("best of two or more of our rows of one preset in bold")
    if summary.get("significant", pd.Series(False, index=summary.index)).any():
        marks.append(f"{dagger}: the best differs from the runner-up by Welch's t-test at {p}")
    marks.append(f"{up} higher is better, {down} lower.")
    reported = ""
    if summary.get("reported", pd.Series(False, index=summary.index)).fillna(False).any():
        reported = " Rows marked reported are published numbers."
    return f"{'; '.join(marks)}{reported}{deviation}{undefined} Columns: {'; '.join(named)}."


def to_latex(summary: pd.DataFrame, layout: str = "fit", label: str = "tab:drlbench") -> str:
    """A ``table`` float with booktabs rules; every label escaped. ``fit`` shrinks a table
    wider than the text to its width (graphicx), ``landscape`` also turns the page
    (pdflscape), ``plain`` needs booktabs only."""
    if layout not in LAYOUTS:
        raise BenchError(f"unknown table layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    table = pivot(summary, latex=True)
    table.index = [latex_escape(r) for r in table.index]
    table.columns = pd.MultiIndex.from_tuples(
        [(latex_escape(d), latex_escape(c)) for d, c in table.columns]
    )
    latex = table.style.to_latex(
        hrules=True,
        column_format="l" + "c" * table.shape[1],
        multicol_align="c",
        caption=caption(summary),
        label=label,
        position_float="centering",
    )
    if layout != "plain":  # shrink to the text width, never enlarge
        begin, end = latex.index(r"\begin{tabular}"), latex.index(r"\end{tabular}")
        end += len(r"\end{tabular}")
        latex = (
            latex[:begin]
            + "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            + latex[begin:end]
            + "%\n}"
            + latex[end:]
        )
    if layout == "landscape":
        latex = "\\begin{landscape}\n" + latex + "\\end{landscape}\n"
    return latex


def to_markdown(summary: pd.DataFrame) -> str:
    table = pivot(summary, latex=False)
    table.columns = [f"{d} {c}" for d, c in table.columns]
    table.index.name = "method"
    return table.to_markdown() + f"\n\n{caption(summary, latex=False)}\n"


def latex_document(tables: list[str], layout: str) -> str:
    """report.tex: a complete document around the tables, one page each."""
    packages = ",".join(PACKAGES[layout])
    body = "\n\\clearpage\n".join(f"\\input{{{name}}}" for name in tables)
    return (
        f"% pdflatex report.tex: every table of this report, one page each.\n"
        f"\\documentclass{{article}}\n\\usepackage[margin=2cm]{{geometry}}\n"
        f"\\usepackage{{{packages}}}\n\\pagestyle{{empty}}\n"
        f"\\begin{{document}}\n{body}\n\\end{{document}}\n"
    )


def ablation_plots(results: pd.DataFrame, out: Path) -> list[Path]:
    """Per (sweep, method, dataset, headline metric) with several variants: every seed as a
    point and the mean with a 95% CI per variant; a line plot when the variants are one
    numeric override swept over values (e.g. method.skip_dropout.p=0.1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    written = []
    data = results[results.apply(lambda r: headline(r.metric) == r.key, axis=1)]
    for (sweep, method, dataset, metric, profile), group in data.groupby(
        ["sweep", "method", "dataset", "metric", "profile"]
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
        ax.set_ylabel(metric_label(metric, profile))
        ax.set_title(f"{method} on {dataset}")
        written += save_figure(
            fig, out / _slug(f"ablation-{sweep}-{method}-{dataset}-{metric}-{profile}")
        )
    return written


def metric_label(metric: str, profile: str) -> str:
    """A plot's axis label for a metric's headline key."""
    spec = metric_spec(metric)
    name = spec.label if spec is not None else metric
    return name if profile == "exact" else f"{name} ({profile})"


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """``fig`` as ``stem``.pdf and .png (atomic writes), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    written = []
    for suffix in ("pdf", "png"):
        path = stem.with_name(f"{stem.name}.{suffix}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=150)
        written.append(path)
    plt.close(fig)
    return written


def curve_plots(results: pd.DataFrame, out: Path) -> list[Path]:
    """Per (dataset, headline metric) of the runs' metric histories (``eval.every``): the
    metric against the training step, a line per configuration, its seeds as a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = with_rows(results).drop_duplicates("path")
    points = [
        {
            "dataset": run.dataset,
            "row": run.row,
            "seed": run.seed,
            "step": entry["step"],
            "metric": entry["metric"],
            "profile": entry.get("profile", "exact"),
            "value": value,
        }
        for run in runs.itertuples()
        for entry in RunRecord(Path(run.path)).read_history()
        for key, value in entry["values"].items()
        if headline(entry["metric"]) == key
    ]
    written: list[Path] = []
    if not points:
        return written
    for (dataset, metric, profile), group in pd.DataFrame(points).groupby(
        ["dataset", "metric", "profile"]
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        sns.lineplot(data=group, x="step", y="value", hue="row", errorbar="sd", marker="o", ax=ax)
        ax.set_ylabel(metric_label(metric, profile))
        ax.set_xlabel("training step")
        ax.set_title(f"{dataset}: {metric_label(metric, profile)} during training")
        ax.legend(title=None, fontsize="small")
        written += save_figure(fig, out / _slug(f"curve-{dataset}-{metric}-{profile}"))
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
    runs = with_rows(results).drop_duplicates("path").sort_values(["dataset", "row", "seed"])
    for _, run in runs.iterrows():
        pictures = sorted((Path(run.path) / "pictures").glob("*.png"))
        if not pictures:
            continue
        lines.append(f"## {run.dataset} · {run.row} · seed {run.seed}")
        for picture in pictures:
            target = out / "figures" / _slug(f"{run.dataset}-{run.row}")
            target = target / f"seed{run.seed}-{picture.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, target)
            lines.append(f"![{picture.stem}]({target.relative_to(out)})")
        lines.append("")
    page = out / "figures.md"
    atomic_write_text(page, "\n".join(lines) + "\n")
    return page


def _slug(text: str, limit: int = 120) -> str:
    """``text`` as a file name: safe characters only, and at most ``limit`` of them (a row
    label with many overrides is cut and keeps a hash of the whole, so names stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
    if len(slug) <= limit:
        return slug
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{slug[: limit - 9]}_{digest}"


def write_report(
    runs: Path,
    out: Path,
    reported: Path | None = None,
    all_keys: bool = False,
    columns: list[str] | None = None,
    layout: str = "fit",
    per_dataset: bool = False,
) -> dict[str, Any]:
    """Everything ``bench report`` writes; returns what it wrote, by kind, and under
    ``notes`` the lines that say where a folder holds several configurations of a method."""
    if not Path(runs).is_dir():
        raise BenchError(f"no such folder: {runs}; give the folder of run records (default: runs)")
    results = collect(runs)
    if results.empty:
        raise BenchError(f"no complete runs under {runs}; run some first (bench run / sweep)")
    if layout not in LAYOUTS:
        raise BenchError(f"unknown --layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    results = with_rows(results)  # labelled once; every helper below reuses the labels
    summary = summarise(results, all_keys, columns)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchError(f"cannot write the report to {out}: {error.strerror}") from None
    written: dict[str, Any] = {"csv": out / "results.csv", "parquet": out / "results.parquet"}
    with atomic_path(written["csv"]) as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(written["parquet"]) as tmp:
        results.to_parquet(tmp, index=False)
    if reported is not None:
        published = on_stand_ins(read_reported(reported), set(summary.dataset))
        ours = set(zip(summary.dataset, summary.base, strict=True))
        keep = [(d, b) in ours for d, b in zip(published.dataset, published.base, strict=True)]
        summary = pd.concat([summary.assign(reported=False), published[keep]], ignore_index=True)
    summary = mark_best(summary)
    tables = {"table": summary}
    if per_dataset:
        tables = {
            f"table-{_slug(d)}": summary[summary.dataset == d] for d in summary.dataset.unique()
        }
    for name, part in tables.items():
        written[name] = out / f"{name}.tex"
        atomic_write_text(written[name], to_latex(part, layout, label=f"tab:{name}"))
    written["document"] = out / "report.tex"
    atomic_write_text(written["document"], latex_document(list(tables), layout))
    written["markdown"] = out / "table.md"
    notes = configurations_note(results)
    atomic_write_text(
        written["markdown"], to_markdown(summary) + "".join(f"\n{n}\n" for n in notes)
    )
    for i, path in enumerate(ablation_plots(results, out) + curve_plots(results, out)):
        written[f"plot{i}"] = path
    written["figures"] = figure_page(results, out)
    written["notes"] = notes
    return written
