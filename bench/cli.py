"""The ``bench`` command line. Heavy imports (torch) happen inside the commands that need
them, so ``bench ls`` answers instantly."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from bench.errors import BenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="drlbench: train, score and report disentangled representation learning methods.",
)

KINDS = ("methods", "metrics", "datasets")


@app.command(context_settings={"allow_extra_args": False})
def run(
    method: Annotated[str, typer.Option(help="Registered method name (see `bench ls methods`).")],
    dataset: Annotated[str, typer.Option(help="Registered dataset name (`bench ls datasets`).")],
    overrides: Annotated[
        Optional[list[str]],  # noqa: UP045 (typer needs typing.Optional)
        typer.Argument(help="Dotted config overrides, e.g. train.steps=2000 method.beta=4."),
    ] = None,
    preset: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="smoke (CPU minutes) or paper (published protocol)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="The run's seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Root folder of run records.")] = Path("runs"),
    config: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="Extra YAML config files, merged before the overrides."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun even if the record is complete.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            help="When another process is training this run: wait for it (--no-wait: exit 75)."
        ),
    ] = True,
    print_config: Annotated[
        bool, typer.Option(help="Print the resolved config and its hash, then exit.")
    ] = False,
    stage: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            hidden=True,  # what `bench sweep` runs first: one shared stage of this run
            help="Train only the shared stage of this run whose artifact folder this is.",
        ),
    ] = None,
) -> None:
    """Train, evaluate and record one run (resumes an interrupted one)."""
    check_run_request(method, dataset, preset, seed)
    if print_config:
        from bench.config import config_hash, resolve_config, to_yaml

        cfg = resolve_config(method, dataset, preset, overrides or [], seed, config or [])
        typer.echo(to_yaml(cfg) + f"# config hash: {config_hash(cfg)}")
        return

    from bench.claim import ClaimLost
    from bench.outputs import outlive_readers
    from bench.runner import RunClaimed
    from bench.runner import run as run_one
    from bench.sweep import CLAIMED
    from bench.train import NonFiniteLoss, Preempted

    outlive_readers()  # `bench run … | tee log`, then Ctrl-C: checkpointed, not killed

    if stage is not None:
        from bench.stages import train_shared_stage

        train_shared_stage(
            method, dataset, preset, overrides or [], seed=seed, out=out, artifact=stage
        )
        typer.echo(f"stage: {stage}")
        return
    try:
        record = run_one(
            method,
            dataset,
            preset,
            overrides or [],
            seed=seed,
            out=out,
            force=force,
            config_files=config or [],
            wait=wait,
        )
    except RunClaimed as claimed:
        typer.echo(f"{claimed}; not started (--wait waits for it)", err=True)
        raise typer.Exit(CLAIMED) from None
    except ClaimLost as lost:
        typer.echo(f"stopped: {lost}; this process wrote nothing more to the record", err=True)
        raise typer.Exit(1) from None
    except Preempted as stop:
        typer.echo(f"{stop}; checkpoint saved. Run the same command to resume.", err=True)
        raise typer.Exit(128 + stop.signum) from None
    except NonFiniteLoss as error:
        typer.echo(f"run failed: {error}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(
            "interrupted; run the same command to resume (training from its last checkpoint, "
            "evaluation from its last finished metric)",
            err=True,
        )
        raise typer.Exit(130) from None
    metrics = record.metrics()
    for name, result in metrics.items():
        values = ", ".join(f"{k}={v:.4f}" for k, v in result["values"].items())
        typer.echo(f"{name}: {values}")
    typer.echo(f"record: {record.path}")


def check_run_request(method: str, dataset: str, preset: str | None, seed: int) -> None:
    """The names and the seed of a run, checked before torch is imported: a typo that
    `bench ls` would reject at once is rejected at once."""
    from bench.datasets import DATASETS
    from bench.methods import METHODS

    METHODS.entry(method)
    DATASETS.entry(dataset)
    from bench.config import check_preset, check_seed  # reads the metric registry: ~1 s

    check_seed(seed)
    if preset is not None:
        check_preset(method, preset)


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep YAML: methods, datasets, seeds, variants.")],
    status: Annotated[bool, typer.Option(help="Print each run's state and exit.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the runs and exit.")] = False,
    executor: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="local or slurm (default: the sweep file's, else local)."),
    ] = None,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="local: parallel runs (default: one per GPU, else 1)."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Root of run records (default: the sweep file's, else ./runs)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="slurm: follow the jobs to the end.")] = True,
    partition: Annotated[Optional[str], typer.Option(help="slurm partition.")] = None,  # noqa: UP045
    time_min: Annotated[Optional[int], typer.Option(help="slurm time limit, minutes.")] = None,  # noqa: UP045
    gpus: Annotated[Optional[int], typer.Option(help="slurm GPUs per run.")] = None,  # noqa: UP045
    cpus: Annotated[Optional[int], typer.Option(help="slurm CPUs per run.")] = None,  # noqa: UP045
    mem_gb: Annotated[Optional[float], typer.Option(help="slurm memory per run, GB.")] = None,  # noqa: UP045
    array_parallelism: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="slurm: runs at once."),
    ] = None,
    account: Annotated[Optional[str], typer.Option(help="slurm account.")] = None,  # noqa: UP045
    qos: Annotated[Optional[str], typer.Option(help="slurm quality of service.")] = None,  # noqa: UP045
    constraint: Annotated[Optional[str], typer.Option(help="slurm node constraint.")] = None,  # noqa: UP045
    gres: Annotated[Optional[str], typer.Option(help="slurm gres, e.g. gpu:a100:1.")] = None,  # noqa: UP045
) -> None:
    """Run a sweep (methods × datasets × seeds × variants), skipping complete runs."""
    from bench.sweep import load_sweep, run_local, run_slurm, status_table

    plan = load_sweep(file, out)
    if not (status or dry_run):
        from bench.fileio import make_folder

        plan.check_files()
        make_folder(plan.out, "run records under")
    if status or dry_run:
        rows, counts = status_table(plan)
        cells = [
            [spec.method, spec.dataset, spec.variant, f"seed{spec.seed}", state, str(spec.path)]
            for spec, state in rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(5)] if cells else []
        for row in cells:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            typer.echo("  ".join([*padded[:5], row[5]]))
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        typer.echo(f"{len(rows)} runs: {summary}")
        if dry_run:
            for line in plan_lines(plan, executor or plan.executor["kind"], workers):
                typer.echo(line)
        return
    cli_slurm = {
        "partition": partition,
        "time_min": time_min,
        "gpus_per_task": gpus,
        "cpus_per_task": cpus,
        "mem_gb": mem_gb,
        "array_parallelism": array_parallelism,
        "account": account,
        "qos": qos,
        "constraint": constraint,
        "gres": gres,
    }
    plan.slurm.update({k: v for k, v in cli_slurm.items() if v is not None})
    kind = executor or plan.executor["kind"]
    if kind == "local":
        try:
            failed = run_local(plan, workers, log=lambda line: typer.echo(line, err=True))
        except KeyboardInterrupt:
            typer.echo(f"interrupted; `bench sweep {file}` again resumes every run", err=True)
            raise typer.Exit(130) from None
    elif kind == "slurm":
        failed = run_slurm(plan, wait, log=lambda line: typer.echo(line, err=True))
    else:
        raise BenchError(f"unknown executor {kind!r}; choose local or slurm")
    if failed:
        typer.echo(
            f"{len(failed)} run(s) failed; `bench sweep {file} --status` lists them", err=True
        )
        raise typer.Exit(1)


def plan_lines(plan, kind: str, workers: int | None) -> list[str]:
    """What `bench sweep --dry-run` says it would do: shared stages first, then the runs."""
    from bench.store import COMPLETE
    from bench.sweep import gpu_of, state_of, worker_plan

    todo = [spec for spec in plan.runs() if state_of(spec) != COMPLETE]
    lines = []
    if kind == "local":
        slots, gpus = worker_plan(plan, workers, log=lines.append)
        where = [f"GPU {gpu_of(i, gpus)}" if gpus else "CPU" for i in range(slots)]
        lines.append(f"workers: {slots} ({', '.join(where)})")
    for number, wave in enumerate(plan.stage_waves(todo), start=1):
        for i, (stage, _) in enumerate(wave):
            on = f"worker {i % slots + 1}" if kind == "local" else "its own job"
            lines.append(f"stage, wave {number}: {stage.method} {stage.path} ({on})")
    then = "the first free worker" if kind == "local" else "array jobs after their stages"
    lines.append(f"then {len(todo)} run(s), each on {then}")
    lines.append(estimate_line(plan.estimate(todo), slots if kind == "local" else None))
    return lines


def estimate_line(estimate, slots: int | None) -> str:
    """The sweep's estimated time left, and where the numbers came from."""
    unknown = estimate.sources["none"]
    known = {
        "measured": "measured on a complete seed of the same run here",
        "estimate_s": "from the sweep file's estimate_s",
    }
    said = [
        f"{estimate.sources[key]} {words}" for key, words in known.items() if estimate.sources[key]
    ]
    if not said:
        if not unknown:
            return "estimate: nothing left to run"
        covers = f"covers none of its {unknown} runs and stages"
        return f"estimate: none (the sweep file's estimate_s {covers})"
    if unknown:
        said.append(f"{unknown} not covered by estimate_s, counted as 0")
    hours = estimate.seconds / 3600
    line = f"estimate: {hours:.1f} h of compute ({'; '.join(said)})"
    if slots and slots > 1:
        line += f", about {hours / slots:.1f} h on {slots} workers"
    return line


@app.command()
def report(
    runs: Annotated[Path, typer.Argument(help="Root folder of run records.")] = Path("runs"),
    out: Annotated[Path, typer.Option(help="Where tables, plots and pages go.")] = Path("report"),
    reported: Annotated[
        bool, typer.Option(help="Add the published numbers of results/published/*.yaml.")
    ] = False,
    published: Annotated[Path, typer.Option(help="Folder of published-number YAML files.")] = Path(
        "results/published"
    ),
    all_keys: Annotated[
        bool, typer.Option(help="Every result key, not only each metric's headline one.")
    ] = False,
    metrics: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Columns to show, comma-separated metric.key (or a metric for its headline "
            "key), e.g. dci.disentanglement,factor_vae.eval_accuracy."
        ),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            help="LaTeX: fit (shrink to the text width; graphicx), landscape (pdflscape) "
            "or plain (booktabs only)."
        ),
    ] = "fit",
    per_dataset: Annotated[
        bool, typer.Option(help="One LaTeX table per dataset (table-<dataset>.tex).")
    ] = False,
) -> None:
    """Tables (LaTeX, Markdown; a row per configuration, mean ± std over its seeds, best in
    bold), ablation plots and a page of pictures from every complete run."""
    from bench.report import write_report

    columns = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    written = write_report(
        runs,
        out,
        reported=published if reported else None,
        all_keys=all_keys,
        columns=columns,
        layout=layout,
        per_dataset=per_dataset,
    )
    typer.echo((out / "table.md").read_text())
    files = [v for k, v in written.items() if k != "notes"]  # the notes are in table.md
    typer.echo(f"wrote {len(files)} files to {out}; `pdflatex report.tex` there renders the tables")


@app.command()
def check(
    results: Annotated[Path, typer.Argument(help="Runs folder, or a report's results.csv.")],
    reference: Annotated[Path, typer.Option(help="results/reference/NAME.yaml")],
    update: Annotated[
        bool, typer.Option(help="Rewrite the reference from these numbers, on purpose.")
    ] = False,
    exact: Annotated[
        bool,
        typer.Option(help="No tolerance: every number must equal the reference's exactly."),
    ] = False,
) -> None:
    """Compare numbers with a committed reference; exit 1 on a regression."""
    from bench.check import (
        compare,
        diff_table,
        load_results,
        read_reference,
        updated_reference,
        write_reference,
    )

    fresh = load_results(results)
    if update:
        old = read_reference(reference, strict=False) if reference.is_file() else None
        write_reference(reference, updated_reference(fresh, old))
        typer.echo(f"rewrote {reference} from {results}")
        return
    comparisons = compare(fresh, read_reference(reference), exact=exact)
    typer.echo(diff_table(comparisons))
    counts = Counter(c.verdict for c in comparisons)
    if counts["improved"]:
        typer.echo(
            f"{counts['improved']} number(s) improved beyond tolerance; --update records them"
        )
    if counts["regressed"] or counts["missing"]:
        typer.echo(
            f"{counts['regressed']} regression(s); {counts['missing']} reference number(s) "
            "missing here",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"no regression ({counts['ok']} number(s) within tolerance)")


@app.command(name="eval")
def eval_run(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Run folders (runs/<dataset>/<method>/<hash>/seed<k>, or any folder above "
            "them), then eval.* overrides such as eval.hyperparams.dci.num_train=2000."
        ),
    ],
    metrics: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Metrics to score (repeat or comma-separate); default: the run's."),
    ] = None,
    gin: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="disentanglement_lib metric .gin files (dci.gin, mig.gin, ...)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    profile: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="exact (dlib's numbers) or fast (approximate DCI, stamped as such)."),
    ] = None,
) -> None:
    """Re-score finished runs; metrics.json keeps each result as it finishes, and
    metrics_replaced.jsonl every score a re-scoring replaces."""
    from bench.rescore import evaluate_run
    from bench.store import find_runs

    if profile not in (None, "exact", "fast"):
        raise BenchError(f"unknown profile {profile!r}; choose exact or fast")
    overrides = [t for t in targets if "=" in t]
    folders = [Path(t) for t in targets if "=" not in t]
    if not folders:
        raise BenchError("bench eval: name at least one run folder (see `bench ls runs`)")
    records = []
    for folder in folders:
        found = find_runs(folder) if folder.is_dir() else []
        if not found:
            raise BenchError(f"{folder} holds no run record; `bench ls runs` lists them")
        for record in found:
            if record.is_complete():
                records.append(record)
            else:
                typer.echo(f"skipping {record.path}: {record.state()}, not complete", err=True)
    if not records:
        raise BenchError("no complete run to score; finish them first (`bench run` resumes)")
    names = [n for item in metrics or [] for n in item.split(",") if n] or None
    for record in records:
        typer.echo(f"{record.path}:")
        results = evaluate_run(
            record.path,
            metrics=names,
            gin_files=gin or [],
            device=device,
            profile=profile,
            overrides=overrides,
        )
        for name, result in results.items():
            values = result["values"]
            typer.echo(f"  {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))


@app.command(name="ls")
def list_registered(
    kind: Annotated[str, typer.Argument(help="methods, metrics, datasets or runs")],
    folder: Annotated[
        Path, typer.Argument(help="runs: the records folder (or any folder inside it).")
    ] = Path("runs"),
) -> None:
    """List registered methods, metrics or datasets with a one-line description, or the run
    records under a folder with their state and what sets each configuration apart."""
    if kind == "runs":
        list_runs(folder)
        return
    if kind not in KINDS:
        raise BenchError(f"cannot list {kind!r}; choose one of: {', '.join((*KINDS, 'runs'))}")
    if kind == "methods":
        from bench.methods import METHODS as registry
    elif kind == "metrics":
        from bench.metrics import METRICS as registry
    else:
        from bench.datasets import DATASETS as registry
    entries = registry.entries()
    width = max(len(name) for name in entries)
    for name, entry in entries.items():
        typer.echo(f"{name:<{width}}  {entry.description}")


def list_runs(folder: Path) -> None:
    """One line per run record: dataset, method, seed, state, configuration, path."""
    from bench.store import find_runs

    if not folder.is_dir():
        raise BenchError(f"{folder} is not a folder of run records; `bench run` makes one")
    records = find_runs(folder)
    if not records:
        typer.echo(f"no run records under {folder}")
        return
    rows = []
    for record in records:
        identity = record.identity()
        preset = identity.get("preset")
        rows.append(
            (
                record.path.parts[-4],
                record.path.parts[-3],
                record.path.name[len("seed") :],
                record.describe_state(),
                record.label() + (f" [{preset} preset]" if preset else ""),
                str(record.path),
            )
        )
    rows.sort(key=lambda r: (r[0], r[1], r[4], int(r[2]) if r[2].isdigit() else 0))
    header = ("dataset", "method", "seed", "state", "configuration", "path")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        typer.echo(
            "  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
        )


data_app = typer.Typer(no_args_is_help=True, help="Download, list and verify dataset files.")
app.add_typer(data_app, name="data")


@data_app.command(name="download")
def data_download(name: Annotated[str, typer.Argument(help="Dataset (see `bench data ls`).")]):
    """Fetch a dataset's official files into $BENCH_DATA, checksummed and resumable."""
    from bench.datasets.download import download

    path = download(name)
    typer.echo(f"{name}: ready at {path}")


@data_app.command(name="ls")
def data_list() -> None:
    """Each dataset: present / missing, size on disk, where it goes."""
    from bench.datasets.download import SOURCES, folder_of

    typer.echo(f"{'dataset':<18}{'state':<10}{'size':>10}  where")
    for name, source in SOURCES.items():
        folder = folder_of(name)
        files = [folder / f.name for f in source.files]
        present = [f for f in files if f.is_file()]
        state = "present" if len(present) == len(files) else "partial" if present else "missing"
        size = sum(f.stat().st_size for f in present) / 2**20
        typer.echo(f"{name:<18}{state:<10}{size:>8.0f}MB  {folder}")
    typer.echo("dsprites-procedural and shapes3d-procedural need no files.")


@data_app.command(name="verify")
def data_verify(name: Annotated[str, typer.Argument(help="Dataset (see `bench data ls`).")]):
    """Check every file of a dataset against its published (or recorded) hash again."""
    from bench.datasets.download import verify

    verdicts = verify(name)
    for file_name, verdict in verdicts:
        typer.echo(f"{file_name}: {verdict}")
    if any(v.startswith(("missing", "MISMATCH", "CHANGED")) for _, v in verdicts):
        raise typer.Exit(1)


def main() -> None:
    # A closed pipe (`bench ls methods | head`) ends the program quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        app()
    except BenchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
