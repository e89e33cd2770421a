"""The command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import FAST, bench_cli


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


RUN = ["run", "--method", "beta_vae", "--dataset", "dsprites-procedural"]


def ls_without_torch(*args: str) -> subprocess.CompletedProcess:
    """``bench ls ARGS`` in a fresh interpreter that fails if it imported torch."""
    code = (
        "import sys\n"
        "from bench.cli import app\n"
        "try:\n"
        f"    app(['ls', *{list(args)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None)\n"
        "assert 'torch' not in sys.modules, 'bench ls imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize(
    "args, error",
    [
        (["--method", "dyga_sdd", "--dataset", "shapes3d"], "unknown method 'dyga_sdd' (did"),
        (["--method", "sd", "--dataset", "shapes3dd"], "unknown dataset 'shapes3dd' (did"),
        (["--method", "sd", "--dataset", "shapes3d", "--preset", "smok"], "preset 'smok' (did"),
        (["--method", "sd", "--dataset", "shapes3d", "--seed", "-1"], "--seed -1: a seed is"),
    ],
)
def test_run_rejects_a_typo_before_importing_torch(tmp_path, args, error):
    code = (
        "import sys\n"
        "from bench.cli import main\n"
        f"sys.argv = ['bench', 'run', *{args!r}, '--out', {str(tmp_path)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code == 2, e.code\n"
        "assert 'torch' not in sys.modules, 'bench run imported torch first'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("error: ") and error in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["methods", "metrics", "datasets"])
def test_ls_lists_without_importing_torch(kind):
    result = ls_without_torch(kind)
    expected = {"methods": "beta_vae", "metrics": "mig", "datasets": "shapes3d-procedural"}[kind]
    assert expected in [line.split()[0] for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--method", "nope", "--dataset", "dsprites-procedural"],
            "error: unknown method 'nope'; known methods: annealed_vae, beta_tc_vae, beta_vae",
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
            "error: unknown preset 'tiny'; known presets: ci, learn, paper, smoke",
        ),
        (
            ["ls", "models"],
            "error: cannot list 'models'; choose one of: methods, metrics, datasets, runs",
        ),
        (
            [*RUN, "train.device=gpu"],
            "error: train.device='gpu' is not a device; use one of: auto, cpu, cuda, cuda:N or mps",
        ),
        (
            [*RUN, "eval.metrics=[mig,irs"],
            "error: override 'eval.metrics=[mig,irs' is not a valid value (",
        ),
        (
            [*RUN, "data.device=auto"],
            "error: data.device='auto' is not a device; use one of: cpu, cuda, cuda:N",
        ),
        (
            [*RUN, "--seed", "-1"],
            "error: --seed -1: a seed is a whole number from 0 to 4294967295, e.g. --seed 1",
        ),
        (
            [*RUN, "--seed", str(2**32)],
            "error: --seed 4294967296: a seed is a whole number from 0 to 4294967295",
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
    args.append("eval.metrics=[mig]")  # of the smoke battery, with its sample size
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
        "checkpoints/step-000000006.pt",
        "checkpoints/step-000000006.json",
        "checkpoints/step-000000003.pt",
        "run.json",
    ):
        assert (record / name).is_file(), name
    assert json.loads((record / "status.json").read_text())["state"] == "complete"
    mig = json.loads((record / "metrics.json").read_text())["mig"]
    assert mig["version"] == "1" and mig["hyperparams"]["num_train"] == 2000
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


@pytest.mark.skipif(torch_has_cuda(), reason="this machine has CUDA")
@pytest.mark.parametrize("setting", ["train.device=cuda", "data.device=cuda:0"])
def test_cuda_on_a_machine_without_it_is_one_line(setting, tmp_path):
    result = bench_cli(*RUN, setting, "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "torch sees no CUDA device on this machine" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_out_is_one_line_and_leaves_no_record(tmp_path):
    # A path under a regular file: not writable even for root (CI runs as root).
    (tmp_path / "file").write_text("")
    result = bench_cli(*RUN, *FAST, "--out", str(tmp_path / "file" / "runs"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: cannot write the run record")
    assert "give a writable folder with --out" in result.stderr


def test_a_report_of_a_folder_that_does_not_exist_says_so(tmp_path):
    result = bench_cli("report", str(tmp_path / "nosuchfolder"), "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no such folder: {tmp_path / 'nosuchfolder'}; give the folder of run records "
        "(default: runs)"
    )


def test_a_sweep_file_with_a_negative_seed_is_one_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [beta_vae]\ndatasets: [dsprites-procedural]\nseeds: [0, -1]\n")
    result = bench_cli("sweep", str(path), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {path}: seed -1: a seed is a whole number from 0 to 4294967295"
    ]
    assert not (tmp_path / "runs").exists()


def test_a_sweep_file_with_a_yaml_error_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmethods: [beta_vae\ndatasets: [dsprites-procedural]\n")
    result = bench_cli("sweep", str(path), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: sweep file {path} is not valid YAML")
    assert not (tmp_path / "runs").exists()


def test_two_configurations_are_listed_rescored_and_reported_apart(tmp_path):
    runs = tmp_path / "runs"
    quick = [*FAST, "eval.metrics=[mig]", "eval.hyperparams.mig.num_train=300"]
    for beta in ("2", "8"):
        result = bench_cli(*RUN, *quick, f"method.beta={beta}", "--out", str(runs))
        assert result.returncode == 0, result.stderr

    listing = bench_cli("ls", "runs", str(runs))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split() == ["dataset", "method", "seed", "state", "configuration", "path"]
    labels = [line.split("  ")[0] for line in lines[1:]]
    assert len(lines) == 3 and len(set(labels)) == 1  # one dataset, two configurations:
    assert "method.beta=2.0, train.steps=6)" in lines[1]
    assert "method.beta=8.0, train.steps=6)" in lines[2]
    assert all("complete" in line and str(runs) in line for line in lines[1:])

    # Both folders re-scored at once with an eval.* override, as `bench run` takes it.
    rescore = bench_cli("eval", str(runs), "eval.hyperparams.mig.num_train=200")
    assert rescore.returncode == 0, rescore.stderr
    assert rescore.stderr.count("mig: re-scored with num_train 300 → 200; replaces") == 2
    for metrics in runs.glob("**/metrics.json"):
        assert json.loads(metrics.read_text())["mig"]["hyperparams"]["num_train"] == 200
        earlier = [json.loads(line) for line in (metrics.parent / "metrics_replaced.jsonl").open()]
        assert [e["hyperparams"]["num_train"] for e in earlier] == [300]

    report = bench_cli("report", str(runs), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "report" / "table.md").read_text()
    assert "method.beta=2.0, train.steps=6)" in table and "method.beta=8.0, train.steps=6)" in table
    assert report.stdout.count("beta_vae: 2 configurations on dsprites-procedural") == 1


def test_ls_runs_does_not_import_torch(tmp_path):
    assert "no run records under" in ls_without_torch("runs", str(tmp_path)).stdout


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    result = bench_cli(
        *RUN, *FAST, "train.progress=true", "train.progress_every_s=0", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("training beta_vae (seed 0)")]
    assert len(lines) == 7  # one per step, and one at the end
    assert "step 6/6 (100.0%)" in lines[-1] and "loss=" in lines[-1]
    assert "scoring mig (1 of 1) ..." in result.stderr and "scored mig in" in result.stderr


def test_a_record_whose_config_was_edited_is_refused_in_one_line(tmp_path):
    from bench.runner import load_run, run

    quick = [*FAST, "eval.metrics=[]", "train.steps=2"]
    record = run("beta_vae", "dsprites-procedural", "smoke", quick, out=tmp_path)
    legacy = record.config_file.read_text()
    edited = legacy.replace("num_latent: 10", "num_latent: 5")
    assert edited != legacy
    record.config_file.write_text(edited)
    again = bench_cli(*RUN, "--preset", "smoke", *quick, "--out", str(tmp_path))
    evaluated = bench_cli("eval", str(record.path), "--metrics", "mig")
    for result in (again, evaluated):
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {record.config_file} was edited: its settings belong in ")
        assert line.endswith(
            f"not in {record.path.parent.name}/seed0; put it back as it was (to "
            "run other settings, `bench run` them: they get a record of their own)"
        )
    # A record from before train.precision (train.amp) still loads, where its old hash put it.
    record.config_file.write_text(legacy.replace("precision: fp32", "amp: false"))
    assert load_run(record.path).config.train.precision.value == "fp32"
