"""bench report and bench check on hand-made records: numbers equal a hand computation, a
row is one configuration, a column one scoring protocol, and the LaTeX compiles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from bench.check import compare, updated_reference
from bench.report import (
    caption,
    collect,
    configurations_note,
    latex_escape,
    mark_best,
    summarise,
    to_latex,
    to_markdown,
    write_report,
)
from bench.store import COMPLETE, RunRecord
from tests.conftest import bench_cli

VALUES = {  # (method, variant) -> seed -> (mig, dci disentanglement)
    ("dyga_sd", "default"): [(0.30, 0.80), (0.32, 0.82), (0.31, 0.81)],
    ("dyga_sd_base", "default"): [(0.10, 0.50), (0.20, 0.60), (0.15, 0.40)],
    ("dyga_sd", "method.skip_dropout.p=0.1"): [(0.25, 0.70), (0.27, 0.72)],
}


def make_record(
    root,
    dataset,
    method,
    config_hash,
    seed,
    metrics,
    distinguishing=(),
    preset=None,
    variant=None,
):
    """A complete record as `bench run` leaves it; ``metrics``: name -> (values, extra)."""
    record = RunRecord(root / dataset / method / config_hash / f"seed{seed}")
    record.set_status(COMPLETE)
    identity = {"method": method, "dataset": dataset, "seed": seed, "preset": preset}
    identity.update(config_hash=config_hash, distinguishing=list(distinguishing))
    record.identity_file.write_text(json.dumps(identity))
    for name, (values, extra) in metrics.items():
        record.write_metric(name, {"version": "1", "profile": "exact", **extra, "values": values})
    if variant is not None:
        record.sweep_file.write_text(json.dumps({"sweep": "t", "variant": variant}))
    return record


def make_records(root, values=VALUES, dataset="shapes3d-procedural"):
    for (method, variant), seeds in values.items():
        for seed, (mig, dci) in enumerate(seeds):
            metrics = {
                "mig": ({"discrete_mig": mig}, {}),
                "dci": ({"disentanglement": dci, "completeness": 0.5}, {}),
            }
            config_hash = f"h{abs(hash(variant)) % 10**6}"
            make_record(root, dataset, method, config_hash, seed, metrics, variant=variant)
    RunRecord(root / dataset / "beta_vae" / "x" / "seed0").set_status("running")


def test_summary_equals_a_hand_computation(tmp_path):
    make_records(tmp_path)
    results = collect(tmp_path)
    assert set(results.method) == {"dyga_sd", "dyga_sd_base"}  # the running one is left out
    summary = summarise(results).set_index(["row", "base"])
    for (method, variant), seeds in VALUES.items():
        label = method if variant == "default" else f"{method} [{variant}]"
        for i, column in enumerate(["mig.discrete_mig", "dci.disentanglement"]):
            values = np.array([s[i] for s in seeds])
            row = summary.loc[(label, column)]
            assert row["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert row["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert row["n"] == len(values)


def mig_of(value):
    return {"mig": ({"discrete_mig": value}, {})}


def test_two_configurations_of_one_method_are_two_rows(tmp_path):
    # β = 1 and β = 8: two config hashes, two seeds each; never averaged into one row.
    for seed, value in enumerate([0.10, 0.12]):
        make_record(tmp_path, "d", "beta_vae", "aaa111", seed, mig_of(value), ["method.beta=1.0"])
    for seed, value in enumerate([0.30, 0.34]):
        make_record(tmp_path, "d", "beta_vae", "bbb222", seed, mig_of(value), ["method.beta=8.0"])
    summary = summarise(collect(tmp_path)).set_index("row")
    assert sorted(summary.index) == ["beta_vae (method.beta=1.0)", "beta_vae (method.beta=8.0)"]
    assert summary.loc["beta_vae (method.beta=1.0)", "mean"] == pytest.approx(0.11)
    assert summary.loc["beta_vae (method.beta=8.0)", "mean"] == pytest.approx(0.32)
    assert (summary.n == 2).all()


def test_records_without_identity_are_still_split_by_config_hash(tmp_path):
    for config_hash, value in [("aaa111", 0.1), ("bbb222", 0.3)]:
        record = RunRecord(tmp_path / "d" / "beta_vae" / config_hash / "seed0")
        record.set_status(COMPLETE)
        record.write_metric("mig", {"version": "1", "values": {"discrete_mig": value}})
    summary = summarise(collect(tmp_path))
    assert sorted(summary.row) == ["beta_vae #aaa111", "beta_vae #bbb222"]
    assert sorted(summary["mean"]) == [0.1, 0.3]


def test_runs_of_two_presets_are_labelled_with_them(tmp_path):
    make_record(tmp_path, "d", "beta_vae", "aaa111", 0, mig_of(0.1), preset="smoke")
    make_record(tmp_path, "d", "beta_vae", "bbb222", 0, mig_of(0.3), preset="ci")
    rows = sorted(summarise(collect(tmp_path)).row)
    assert rows == ["beta_vae (ci preset)", "beta_vae (smoke preset)"]


def test_exact_and_fast_dci_are_two_cells(tmp_path):
    def dci(value, profile):
        extra = {"profile": profile, "version": "1-fast" if profile == "fast" else "1"}
        return {"dci": ({"disentanglement": value}, extra)}

    make_record(tmp_path, "d", "m", "aaa111", 0, dci(0.5, "exact"))
    make_record(tmp_path, "d", "m", "aaa111", 1, dci(0.7, "fast"))
    summary = summarise(collect(tmp_path)).set_index("column")
    assert summary.loc["DCI disent.", "mean"] == 0.5
    assert summary.loc["DCI disent. (fast)", "mean"] == 0.7
    assert (summary.n == 1).all() and summary.row.nunique() == 1
    table = to_markdown(mark_best(summary.reset_index()))
    # One seed: no ± 0.000. One row: best of nothing, so not bold.
    assert "| 0.500 (1) " in table and "| 0.700 (1) " in table and "**" not in table


def test_tad_numbers_of_two_protocols_are_two_columns(tmp_path):
    def tad(value, step):
        extra = {"hyperparams": {"grid_step": step}, "protocol": f"step {step}, 10000 images"}
        return {"tad": ({"tad": value}, extra)}

    make_record(tmp_path, "celeba", "m", "aaa111", 0, tad(0.5, 0.1))
    make_record(tmp_path, "celeba", "n", "bbb222", 0, tad(0.3, 0.01))
    summary = summarise(collect(tmp_path)).set_index("column")
    assert summary.loc["TAD [step 0.1, 10000 images]", "row"] == "m"
    assert summary.loc["TAD [step 0.01, 10000 images]", "row"] == "n"


def test_a_rescored_seed_gets_a_column_named_by_its_settings_and_the_rest_stays_averaged(
    tmp_path,
):
    # Seed 0 of three re-scored with mig's num_train=100 (bench eval); dci untouched.
    for seed, mig in enumerate([0.4, 0.2, 0.3]):
        num_train = 100 if seed == 0 else 10000
        metrics = {
            "mig": ({"discrete_mig": mig}, {"hyperparams": {"num_train": num_train}}),
            "dci": ({"disentanglement": 0.5 + seed / 10}, {"hyperparams": {"num_train": 10}}),
        }
        make_record(tmp_path, "d", "m", "aaa111", seed, metrics)
    results = collect(tmp_path)
    summary = summarise(results).set_index("column")
    assert set(summary.row) == {"m"}  # one configuration, one row
    assert summary.loc["MIG [num_train=100]", "values"] == [0.4]
    assert sorted(summary.loc["MIG [num_train=10000]", "values"]) == [0.2, 0.3]
    assert summary.loc["DCI disent.", "n"] == 3
    assert summary.loc["DCI disent.", "mean"] == pytest.approx(0.6)
    assert configurations_note(results) == [
        "m on d: mig was scored 2 ways, one column each (MIG [num_train=100]: seed 0; "
        "MIG [num_train=10000]: seeds 1, 2); `bench eval` the other seeds with the same "
        "settings to average them"
    ]


def test_a_cpu_preset_row_says_so_and_is_bold_only_against_its_own_preset(tmp_path):
    make_record(tmp_path, "d", "beta_vae", "aaa111", 0, mig_of(0.9), preset="smoke")
    make_record(tmp_path, "d", "dyga_sd", "bbb222", 0, mig_of(0.2))
    make_record(tmp_path, "d", "sd", "ccc333", 0, mig_of(0.3))
    summary = mark_best(summarise(collect(tmp_path))).set_index("row")
    assert sorted(summary.index) == ["beta_vae (smoke preset)", "dyga_sd", "sd"]
    # The smoke row's 0.9 is higher, but it is alone in its preset: the paper rows compete.
    assert summary.best.to_dict() == {
        "beta_vae (smoke preset)": False,
        "dyga_sd": False,
        "sd": True,
    }


def test_best_is_bold_and_significance_is_welchs_test(tmp_path):
    make_records(tmp_path)
    summary = mark_best(summarise(collect(tmp_path))).set_index(["row", "base"])
    assert summary.loc[("dyga_sd", "mig.discrete_mig"), "best"]
    # Runner-up for MIG is the skip-dropout variant; dagger iff Welch's p < 0.05.
    p = stats.ttest_ind([0.30, 0.32, 0.31], [0.25, 0.27], equal_var=False).pvalue
    assert summary.loc[("dyga_sd", "mig.discrete_mig"), "significant"] == (p < 0.05)
    latex = to_latex(summary.reset_index())
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert r"\textbf{0.310 $\pm$ 0.010" in latex and r"\begin{table}" in latex
    assert r"{\scriptsize (3)}" in latex
    assert r"$p < 0.05$" in latex and "dyga\\_sd\\_base" in latex
    assert "DCI disent. = dci.disentanglement".replace("_", r"\_") in latex
    markdown = to_markdown(summary.reset_index())
    assert "**0.310 ± 0.010" in markdown and "(3)" in markdown


def test_the_caption_explains_only_the_marks_the_table_has(tmp_path):
    make_record(tmp_path / "one", "d", "beta_vae", "aaa111", 0, mig_of(0.3))
    lone = caption(mark_best(summarise(collect(tmp_path / "one"))), latex=False)
    assert "bold" not in lone and "†" not in lone and "reported" not in lone
    assert lone.startswith("Mean ± standard deviation over seeds")
    assert lone.endswith("Columns: MIG = mig.discrete_mig.")
    make_records(tmp_path / "many")
    summary = mark_best(summarise(collect(tmp_path / "many")))
    published = summary.head(1).assign(row="dyga_sd (reported)", reported=True)
    full = caption(pd.concat([summary.assign(reported=False), published]), latex=False)
    assert "best of two or more of our rows of one preset in bold" in full
    assert ("Welch's t-test" in full) == summary.significant.any()
    assert "Rows marked reported are published numbers." in full


def test_latex_escape_covers_every_special_character():
    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\k<l") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
        r"\textless{}l"
    )


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


def test_metrics_option_chooses_the_columns(tmp_path):
    make_records(tmp_path / "runs")
    summary = summarise(collect(tmp_path / "runs"), columns=["dci.completeness", "mig"])
    assert set(summary.base) == {"dci.completeness", "mig.discrete_mig"}
    unknown = bench_cli("report", str(tmp_path / "runs"), "--metrics", "dci.nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "error: --metrics: no results for dci.nope; available: dci.completeness, "
        "dci.disentanglement, mig.discrete_mig"
    ]


def pdflatex_pages(folder, overfull_ok: bool = False) -> int:
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert overfull_ok or "Overfull" not in result.stdout, result.stdout[-3000:]
    return int(re.search(r"Output written on report\.pdf \((\d+) pages?", result.stdout)[1])


@pytest.mark.parametrize("layout", ["fit", "landscape", "plain"])
def test_table_tex_with_underscores_compiles_one_page_per_table(tmp_path, layout):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-recommended)")
    # Underscores, dots and equals signs in labels, and 3 datasets × 3 metrics = 9 columns.
    values = {("beta_vae", "default"): [(0.1, 0.2), (0.2, 0.3)], **VALUES}
    for dataset in ("shapes3d_procedural", "mpi3d_toy", "cars3d"):
        make_records(tmp_path / "runs", values, dataset)
    out = tmp_path / "out"
    write_report(tmp_path / "runs", out, columns=["dci", "mig", "dci.completeness"], layout=layout)
    # booktabs alone (plain): 9 columns may run past the margin, but it compiles.
    assert pdflatex_pages(out, overfull_ok=layout == "plain") == 1
    per_dataset = tmp_path / "per-dataset"
    write_report(tmp_path / "runs", per_dataset, layout=layout, per_dataset=True)
    if layout != "plain":
        assert pdflatex_pages(per_dataset) == 3


def test_check_identifies_runs_like_the_report(tmp_path):
    make_records(tmp_path / "runs")
    results = collect(tmp_path / "runs")
    reference = updated_reference(results, None)
    assert all(c.verdict == "ok" for c in compare(results, reference))

    worse = json.loads(json.dumps(reference))
    entry = next(e for e in worse["entries"] if e["method"] == "dyga_sd_base")
    entry["mean"] += 0.5  # our number is now far below the reference: higher is better
    verdicts = {c.verdict for c in compare(results, worse)}
    assert verdicts == {"ok", "regressed"}

    # A run of another configuration (another preset, say) never stands in for an entry.
    other = json.loads(json.dumps(reference))
    other["entries"][0]["config_hash"] = "smoke0"
    comparison = compare(results, other)[0]
    assert comparison.verdict == "missing" and "config_hash smoke0" in comparison.note

    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump(worse))
    failing = bench_cli("check", str(tmp_path / "runs"), "--reference", str(path))
    assert failing.returncode == 1 and "regressed" in failing.stdout


def test_check_explains_a_preset_mismatch_in_words_and_counts_apart(tmp_path):
    from bench.config import config_hash, resolve_config

    def hash_of(preset):
        return config_hash(resolve_config("beta_vae", "dsprites-procedural", preset))

    mig = {"mig": ({"discrete_mig": 0.3}, {})}
    make_record(tmp_path / "runs", "dsprites-procedural", "beta_vae", hash_of("smoke"), 0, mig,
                preset="smoke")  # fmt: skip
    reference = updated_reference(collect(tmp_path / "runs"), None)
    made_with_ci = json.loads(json.dumps(reference))
    made_with_ci["entries"][0]["config_hash"] = hash_of("ci")
    (comparison,) = compare(collect(tmp_path / "runs"), made_with_ci)
    assert comparison.verdict == "missing"
    assert (
        comparison.note == "the reference was made with the ci preset; these runs use smoke preset"
    )

    regressed = json.loads(json.dumps(reference))
    regressed["entries"][0]["mean"] = 0.9
    regressed["entries"].append(made_with_ci["entries"][0])
    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump(regressed))
    result = bench_cli("check", str(tmp_path / "runs"), "--reference", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == "1 regression(s); 1 reference number(s) missing here"
    header, *rows = result.stdout.strip().splitlines()
    end = header.index("reference") + len("reference")  # numbers are right-aligned under it
    assert sorted(row[end - 6 : end] for row in rows) == ["0.3000", "0.9000"]
    assert [row.split()[-1] for row in rows if "regressed" in row] == ["regressed"]


@pytest.mark.parametrize("seeds", [1, 3])
def test_update_then_check_passes(tmp_path, seeds):
    rng = np.random.default_rng(seeds)
    for seed in range(seeds):  # values with every digit set: rounding would show
        make_record(tmp_path / "runs", "d", "m", "aaa111", seed, mig_of(float(rng.random())))
    path = tmp_path / "reference.yaml"
    runs = str(tmp_path / "runs")
    assert bench_cli("check", runs, "--reference", str(path), "--update").returncode == 0
    entry = yaml.safe_load(path.read_text())["entries"][0]
    assert entry["seeds"] == seeds and entry["mean"] == pytest.approx(
        np.mean(
            [
                e["values"]["discrete_mig"]
                for e in map(
                    lambda r: json.loads((r / "metrics.json").read_text())["mig"],
                    sorted((tmp_path / "runs").glob("d/m/aaa111/seed*")),
                )
            ]
        ),
        rel=0,
        abs=0,
    )
    passing = bench_cli("check", runs, "--reference", str(path))
    assert passing.returncode == 0 and "no regression" in passing.stdout, passing.stdout
    # A single-seed entry still gets a tolerance (the default absolute one), never 0.
    assert compare(collect(tmp_path / "runs"), yaml.safe_load(path.read_text()))[0].tolerance > 0


def test_published_dyga_rows_stand_beside_runs_on_the_procedural_stand_in(tmp_path):
    # The committed published tables: DyGA+SD's own Shapes3D row goes beside shapes3d-procedural.
    make_records(tmp_path / "runs")
    published = Path(__file__).parents[1] / "results" / "published"
    write_report(tmp_path / "runs", tmp_path / "out", published)
    table = (tmp_path / "out" / "table.md").read_text()
    row = next(line for line in table.splitlines() if "DyGA+SD (reported on shapes3d)" in line)
    assert "0.938 ± 0.001" in row  # Table 1, Shapes3D DCI
    assert "EncDiff (reported on shapes3d)" in table


def test_file_names_of_long_row_labels_are_cut_and_stay_apart():
    from bench.report import _slug

    base = "dsprites-procedural-beta_vae (" + ", ".join(f"eval.k{i}={i}" for i in range(40))
    one, two = _slug(base + ", a)"), _slug(base + ", b)")
    assert len(one) <= 120 and len(two) <= 120 and one != two
    assert _slug("shapes3d-beta_vae (method.beta=4.0)") == "shapes3d-beta_vae_method.beta_4.0"


def test_a_run_scoring_downstream_task_and_unsupervised_shows_their_headline_columns(tmp_path):
    # Each registered metric names its headline key and header (MetricSpec), so none is left
    # out of the default table for want of an entry in the report.
    from bench.metrics import METRICS
    from bench.runner import run
    from tests.conftest import FAST

    overrides = [
        *FAST,
        "eval.metrics=[downstream_task,unsupervised]",
        "eval.hyperparams.downstream_task.num_train=[10000]",
        "eval.hyperparams.downstream_task.num_test=100",
        "eval.hyperparams.downstream_task.predictor=logistic_regression_cv",
    ]
    run("beta_vae", "dsprites-procedural", "smoke", overrides, out=tmp_path / "runs")
    write_report(tmp_path / "runs", tmp_path / "out")
    header = (tmp_path / "out" / "table.md").read_text().splitlines()[0]
    for name in ("downstream_task", "unsupervised"):
        assert METRICS.get(name).label in header, header


def test_exact_check_fails_on_a_change_in_the_last_digit_that_the_tolerance_allows(tmp_path):
    make_record(tmp_path / "runs", "d", "m", "aaa111", 0, mig_of(0.3))
    path = tmp_path / "reference.yaml"
    reference = updated_reference(collect(tmp_path / "runs"), None)
    reference["entries"][0]["mean"] = float(np.nextafter(0.3, 1.0))  # one ulp above ours
    path.write_text(yaml.safe_dump(reference))
    runs = str(tmp_path / "runs")
    assert bench_cli("check", runs, "--reference", str(path)).returncode == 0
    exact = bench_cli("check", runs, "--reference", str(path), "--exact")
    assert exact.returncode == 1, exact.stdout
    (comparison,) = compare(collect(tmp_path / "runs"), reference, exact=True)
    assert comparison.verdict == "regressed" and comparison.tolerance == 0.0
    reference["entries"][0]["mean"] = 0.3
    (comparison,) = compare(collect(tmp_path / "runs"), reference, exact=True)
    assert comparison.verdict == "ok"


def test_the_keys_of_one_metric_are_not_taken_for_ways_of_scoring_it(tmp_path):
    # One seed, DCI's keys in one metrics.json entry: one way, so no note (the CI report
    # said "dci was scored 4 ways" for every method before).
    dci = {"disentanglement": 0.1, "completeness": 0.2, "informativeness_test": 0.3}
    make_record(tmp_path, "d", "m", "aaa111", 0, {"dci": (dci, {})})
    assert configurations_note(collect(tmp_path)) == []
