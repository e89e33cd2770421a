"""The command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import FAST, bench_cli

RUN = ["run", "--method", "beta_vae", "--dataset", "dsprites-procedural"]


@pytest.mark.parametrize("kind", ["methods", "metrics", "datasets"])
def test_ls_lists_without_importing_torch(kind):
    code = (
        "import sys\n"
        "from bench.cli import app\n"
        "try:\n"
        f"    app(['ls', '{kind}'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None)\n"
        "assert 'torch' not in sys.modules, 'bench ls imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = {"methods": "beta_vae", "metrics": "mig", "datasets": "shapes3d-procedural"}[kind]
    assert expected in [line.split()[0] for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--method", "nope", "--dataset", "dsprites-procedural"],
            "error: unknown method 'nope'; known methods: beta_vae",
        ),
        (
            [*RUN, "train.stepz=10"],
            "error: unknown config key 'train.stepz' from command line "
            "(did you mean 'train.steps'?)",
        ),
        (
            [*RUN, "train.steps=ten"],
            "error: config key 'train.steps' from command line: "
            "Value 'ten' of type 'str' could not be converted to Integer",
        ),
        (
            [*RUN, "--preset", "tiny"],
            "error: unknown preset 'tiny'; known presets: ci, paper, smoke",
        ),
        (
            ["ls", "models"],
            "error: cannot list 'models'; choose one of: methods, metrics, datasets",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_record(args, message, tmp_path):
    result = (
        bench_cli(*args, "--out", str(tmp_path / "runs")) if args[0] == "run" else bench_cli(*args)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "runs").exists()


def test_print_config_shows_the_resolved_config_without_running(tmp_path):
    result = bench_cli(
        *RUN,
        "--preset",
        "smoke",
        "--seed",
        "3",
        "method.beta=4",
        "--print-config",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "beta: 4.0" in result.stdout and "seed: 3" in result.stdout
    assert "# config hash: " in result.stdout and not any(tmp_path.iterdir())


def test_run_leaves_a_complete_record_and_is_not_repeated(tmp_path):
    args = [*RUN, "--preset", "smoke", "--seed", "2", "--out", str(tmp_path), *FAST]
    result = bench_cli(*args)
    assert result.returncode == 0, result.stderr
    (record,) = tmp_path.glob("dsprites-procedural/beta_vae/*/seed2")
    assert f"record: {record}" in result.stdout and "mig: discrete_mig=" in result.stdout
    for name in (
        "config.yaml",
        "status.json",
        "environment.json",
        "log.jsonl",
        "metrics.json",
        "model.safetensors",
        "checkpoints/last.pt",
    ):
        assert (record / name).is_file(), name
    assert json.loads((record / "status.json").read_text())["state"] == "complete"
    mig = json.loads((record / "metrics.json").read_text())["mig"]
    assert mig["version"] == "1" and mig["hyperparams"]["num_train"] == 10000
    assert 0.0 <= mig["values"]["discrete_mig"] <= 1.0
    environment = json.loads((record / "environment.json").read_text())
    assert environment["packages"]["torch"] and environment["peak_memory_mib"] > 0
    assert not list(tmp_path.glob("**/*.tmp"))

    again = bench_cli(*args)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert (record / "log.jsonl").read_text().count("\n") == 6  # not trained again


def test_a_missing_dataset_names_the_download_and_the_stand_in(tmp_path):
    result = bench_cli(
        "run", "--method", "beta_vae", "--dataset", "shapes3d", "--out", str(tmp_path / "runs")
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "bench data download shapes3d" in result.stderr
    assert "--dataset shapes3d-procedural" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_beta_vae_runs_on_shapes3d_procedural(tmp_path):
    result = bench_cli(
        "run",
        "--method",
        "beta_vae",
        "--dataset",
        "shapes3d-procedural",
        "--preset",
        "smoke",
        "--out",
        str(tmp_path),
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    (record,) = tmp_path.glob("shapes3d-procedural/beta_vae/*/seed0")
    assert json.loads((record / "status.json").read_text())["state"] == "complete"
    assert "discrete_mig" in json.loads((record / "metrics.json").read_text())["mig"]["values"]
