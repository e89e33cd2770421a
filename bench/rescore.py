"""Re-scoring a finished run (``bench eval``): other metrics, disentanglement_lib .gin files,
other hyperparameters, written beside the scores it has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.claim import Claim, say_waiting
from bench.config import Profile, apply_overrides, check_metrics
from bench.evaluate import check_ready, evaluate
from bench.metrics.helpers.gin_config import read_gin
from bench.runner import load_run
from bench.train import select_device


def evaluate_run(
    path: Path | str,
    metrics: list[str] | None = None,
    gin_files: list[Path] | tuple[Path, ...] = (),
    device: str = "auto",
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Re-score a finished run: its configured metrics, or ``metrics``, with hyperparameters
    from disentanglement_lib .gin files layered over the run's own, then ``eval.*``
    overrides (``eval.hyperparams.dci.num_train=2000``) as ``bench run`` takes them. Returns
    the results of the metrics scored (metrics.json keeps the others too)."""
    run_device = select_device(device, "--device")
    loaded = load_run(path, device=str(run_device))
    eval_cfg = loaded.config.eval.copy()
    gin_metrics: list[str] = []
    for gin_file in gin_files:
        settings = read_gin(Path(gin_file))
        gin_metrics += [m for m in settings.metrics if m not in gin_metrics]
        eval_cfg.hyperparams = OmegaConf.merge(eval_cfg.hyperparams, settings.hyperparams)
        if settings.random_seed is not None:
            eval_cfg.random_seed = settings.random_seed
    if metrics is not None or gin_metrics:
        eval_cfg.metrics = metrics if metrics is not None else gin_metrics
    if profile is not None:
        eval_cfg.profile = profile
    if overrides:  # the command line has the last word, as in `bench run`
        cfg = loaded.config.copy()
        cfg.eval = eval_cfg
        eval_cfg = apply_overrides(cfg, list(overrides), "eval.").eval
    check_metrics(
        list(eval_cfg.metrics),
        OmegaConf.to_container(eval_cfg.hyperparams),
        Profile(eval_cfg.profile).value,
    )
    check_ready(type(loaded.method), loaded.dataset, eval_cfg)
    train = loaded.config.train
    with Claim(loaded.record.path, train.heartbeat_s, train.stale_after_s) as claim:
        claim.acquire(on_wait=lambda holder: say_waiting(loaded.record.path, holder))
        results = evaluate(
            loaded.method, loaded.dataset, eval_cfg, loaded.record, device=run_device
        )
    return {name: results[name] for name in eval_cfg.metrics}
