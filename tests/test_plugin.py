"""A method and a metric added from outside bench (tests/plugin/) go through ``bench run``, the
report and ``bench check`` as bench's own do: installed as a distribution whose entry points
name them, with no file of bench and no generic test edited."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import bench_cli

PLUGIN = Path(__file__).parent / "plugin"
ENTRY_POINTS = """\
[bench.methods]
linear_autoencoder = drlbench_example_plugin:LinearAutoencoder

[bench.metrics]
code_variance = drlbench_example_plugin:SPEC
"""


def install_plugin(site: Path) -> dict[str, str]:
    """The environment of a Python that has the plugin installed: its module and a
    dist-info folder with its entry points, as pip leaves them."""
    info = site / "drlbench_example_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: drlbench-example-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    path = os.pathsep.join([str(site), str(PLUGIN), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path}


def test_a_plugin_method_and_metric_run_report_and_check_like_bench_s_own(tmp_path, monkeypatch):
    for key, value in install_plugin(tmp_path / "site").items():
        monkeypatch.setenv(key, value)
    listed = bench_cli("ls", "methods")
    assert listed.returncode == 0, listed.stderr
    assert "linear_autoencoder" in listed.stdout and "drlbench-example-plugin" in listed.stdout

    runs = tmp_path / "runs"
    for seed in ("0", "1"):
        done = bench_cli(
            "run",
            "--method",
            "linear_autoencoder",
            "--dataset",
            "dsprites-procedural",
            "--preset",
            "smoke",
            "--seed",
            seed,
            "--out",
            str(runs),
            "train.steps=4",
            "train.progress=false",
            "eval.metrics=[mig,code_variance]",
        )
        assert done.returncode == 0, done.stderr
    (record,) = runs.glob("dsprites-procedural/linear_autoencoder/*/seed0")
    metrics = json.loads((record / "metrics.json").read_text())
    assert set(metrics) == {"mig", "code_variance"}
    assert metrics["code_variance"]["values"]["mean_variance"] > 0

    report = bench_cli("report", str(runs), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    header, *rows = (tmp_path / "report" / "table.md").read_text().splitlines()
    assert "Code var." in header and "MIG" in header
    assert any("linear_autoencoder" in row and "(2)" in row for row in rows)

    reference = tmp_path / "reference.yaml"
    assert bench_cli("check", str(runs), "--reference", str(reference), "--update").returncode == 0
    assert "linear_autoencoder" in reference.read_text()
    checked = bench_cli("check", str(runs), "--reference", str(reference))
    assert checked.returncode == 0, checked.stdout + checked.stderr
