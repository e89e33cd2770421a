"""bench report and bench check on hand-made records: numbers equal a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from bench.check import compare, updated_reference
from bench.report import collect, mark_best, summarise, to_latex, to_markdown, write_report
from bench.store import COMPLETE, RunRecord
from tests.conftest import bench_cli

VALUES = {  # (method, variant) -> seed -> (mig, dci disentanglement)
    ("dyga_sd", "default"): [(0.30, 0.80), (0.32, 0.82), (0.31, 0.81)],
    ("dyga_sd_base", "default"): [(0.10, 0.50), (0.20, 0.60), (0.15, 0.40)],
    ("dyga_sd", "method.skip_dropout.p=0.1"): [(0.25, 0.70), (0.27, 0.72)],
}


def make_records(root, values=VALUES, dataset="shapes3d-procedural"):
    for (method, variant), seeds in values.items():
        for seed, (mig, dci) in enumerate(seeds):
            record = RunRecord(
                root / dataset / method / f"h{abs(hash(variant)) % 10**6}" / f"seed{seed}"
            )
            record.set_status(COMPLETE)
            record.write_metric("mig", {"version": "1", "values": {"discrete_mig": mig}})
            record.write_metric(
                "dci", {"version": "1", "values": {"disentanglement": dci, "completeness": 0.5}}
            )
            (record.path / "sweep.json").write_text(
                json.dumps({"sweep": "t", "variant": variant, "overrides": []})
            )
    unfinished = RunRecord(root / dataset / "beta_vae" / "x" / "seed0")
    unfinished.set_status("running")


def test_summary_equals_a_hand_computation(tmp_path):
    make_records(tmp_path)
    results = collect(tmp_path)
    assert set(results.method) == {"dyga_sd", "dyga_sd_base"}  # the running one is left out
    summary = summarise(results).set_index(["row", "column"])
    for (method, variant), seeds in VALUES.items():
        label = method if variant == "default" else f"{method} [{variant}]"
        for i, column in enumerate(["mig.discrete_mig", "dci.disentanglement"]):
            values = np.array([s[i] for s in seeds])
            row = summary.loc[(label, column)]
            assert row["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert row["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert row["n"] == len(values)


def test_best_is_bold_and_significance_is_welchs_test(tmp_path):
    make_records(tmp_path)
    summary = mark_best(summarise(collect(tmp_path))).set_index(["row", "column"])
    assert summary.loc[("dyga_sd", "mig.discrete_mig"), "best"]
    # Runner-up for MIG is the skip-dropout variant; dagger iff Welch's p < 0.05.
    p = stats.ttest_ind([0.30, 0.32, 0.31], [0.25, 0.27], equal_var=False).pvalue
    assert summary.loc[("dyga_sd", "mig.discrete_mig"), "significant"] == (p < 0.05)
    latex = to_latex(summary.reset_index())
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert r"\textbf{0.310 $\pm$ 0.010" in latex and r"\begin{table}" in latex
    assert r"{\scriptsize (3)}" in latex
    markdown = to_markdown(summary.reset_index())
    assert "**0.310 ± 0.010" in markdown and "(3)" in markdown


def test_report_writes_tables_plots_and_reported_rows(tmp_path):
    make_records(tmp_path / "runs", dataset="shapes3d")
    published = tmp_path / "published"
    published.mkdir()
    (published / "p.yaml").write_text(
        yaml.safe_dump(
            {
                "tables": [
                    {
                        "name": "T",
                        "seeds": 15,
                        "rows": [
                            {
                                "method": "EncDiff",
                                "reprinted": False,
                                "values": {"shapes3d": {"dci.disentanglement": [0.969, 0.03]}},
                            }
                        ],
                    }
                ]
            }
        )
    )
    written = write_report(tmp_path / "runs", tmp_path / "out", published)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "EncDiff (reported)" in table and "0.969 ± 0.030 (15)" in table
    # Our best stays bold even though the reported number is higher.
    assert "**0.810 ± 0.010" in table
    assert pd.read_parquet(written["parquet"]).shape == pd.read_csv(written["csv"]).shape
    plots = sorted(p.name for p in (tmp_path / "out").glob("ablation-*"))
    assert any(p.endswith(".pdf") for p in plots) and any(p.endswith(".png") for p in plots)


def test_check_passes_on_the_same_numbers_and_fails_on_a_perturbed_one(tmp_path):
    make_records(tmp_path / "runs")
    results = collect(tmp_path / "runs")
    reference = updated_reference(results, None)
    assert all(c.verdict == "ok" for c in compare(results, reference))

    worse = json.loads(json.dumps(reference))
    entry = next(e for e in worse["entries"] if e["method"] == "dyga_sd_base")
    entry["mean"] += 0.5  # our number is now far below the reference: higher is better
    verdicts = {c.verdict for c in compare(results, worse)}
    assert verdicts == {"ok", "regressed"}

    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump(worse))
    failing = bench_cli("check", str(tmp_path / "runs"), "--reference", str(path))
    assert failing.returncode == 1 and "regressed" in failing.stdout
    assert (
        bench_cli("check", str(tmp_path / "runs"), "--reference", str(path), "--update").returncode
        == 0
    )
    passing = bench_cli("check", str(tmp_path / "runs"), "--reference", str(path))
    assert passing.returncode == 0 and "no regression" in passing.stdout
