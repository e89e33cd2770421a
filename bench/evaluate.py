"""Score a trained method with the registered metrics, writing each result as it finishes.

Encode once, score many: the metrics see a view of the dataset whose observations are row
indices, and a representation function that looks rows up in a table of codes. Every row is
encoded at most once, in large batches (on the GPU when there is one), however many times
FactorVAE or BetaVAE ask for it. Sampling is untouched: factors and nuisances are drawn from
the metric's RandomState exactly as with images, so the numbers are those the metrics give
with the method's encoder called directly.

Metrics never see the model: only a dataset with the ground-truth interface and a
numpy-in/numpy-out representation function, as in disentanglement_lib; or, for FID, the
dataset and a numpy-out function giving the images the model generates for its rows.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from sklearn.decomposition import PCA

from bench.config import Encode, PcaFit, Profile, Reduce, check_pca_on_sample
from bench.datasets import GroundTruthData
from bench.datasets.attribute_data import AttributeData
from bench.errors import BenchError
from bench.methods.base import Method, ScoreSubset
from bench.metrics import METRICS
from bench.metrics.spec import MetricSpec
from bench.metrics.utils import unit_slices
from bench.progress import Progress, progress_messages
from bench.rng import global_rng_state, set_global_rng_state
from bench.store import RunRecord, scoring_settings, settings_changes

# Metrics that ask for millions of images (15,000 batches of 64 or 128): with them in the
# battery, encoding the whole dataset up front is cheaper than encoding on demand.
IMAGE_HUNGRY = {"factor_vae", "beta_vae"}


class CodeTable:
    """Codes of dataset rows, each encoded once, on demand or all at once. An observation is
    a row index, or (row, 1) for the row's image flipped left-right (the attribute probe's
    training images), whose codes are kept apart."""

    def __init__(self, dataset, method: Method, device: torch.device, batch_size: int) -> None:
        self.dataset, self.method, self.device, self.batch_size = (
            dataset,
            method,
            device,
            batch_size,
        )
        self.codes: np.ndarray | None = None
        self.done = np.zeros(len(dataset), dtype=bool)
        self.pca_means: np.ndarray | None = None
        self.pca_axes: np.ndarray | None = None
        self.flipped: dict[int, np.ndarray] = {}  # row → code of its mirrored image

    def _encode(
        self, rows: np.ndarray, mirrored: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, their codes) by batch; ``mirrored``: of the images flipped left-right."""
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            images = torch.from_numpy(self.dataset.images(chunk)).to(self.device)
            images = images.permute(0, 3, 1, 2).float().div_(255.0)
            codes = self.method.encode(images.flip(-1) if mirrored else images)
            yield chunk, codes.float().cpu().numpy()

    def _encode_rows(self, rows: np.ndarray) -> None:
        for chunk, codes in self._encode(rows):
            if self.codes is None:
                self.codes = np.zeros((len(self.dataset), *codes.shape[1:]), dtype=np.float32)
            self.codes[chunk] = codes
        self.done[rows] = True

    def encode_all(self) -> None:
        rows = np.flatnonzero(~self.done)
        step = self.batch_size * 16
        with Progress(len(rows), "encoding", unit="image", every_s=30) as progress:
            for start in range(0, len(rows), step):
                self._encode_rows(rows[start : start + step])
                progress.update(len(rows[start : start + step]))

    def fit_pca1(self, rows: int | None, random_seed: int) -> None:
        """One scalar per latent unit from now on: each unit's token projected on its first
        principal component (DisDiff, DyGA+SD). The PCA is fitted on every row, as the
        authors do, or on ``rows`` random rows (seeded) when that is given. A method's
        ``code_units`` says how its flat code splits into units; without it, every dimension
        is a unit of its own."""
        if rows is None or rows >= len(self.dataset):
            self.encode_all()
            fit_rows = np.arange(len(self.dataset))
        else:
            fit_rows = np.sort(
                np.random.default_rng(random_seed).choice(len(self.dataset), rows, replace=False)
            )
            self.lookup(fit_rows[:, None])
        codes = self.codes[fit_rows].reshape(len(fit_rows), -1)
        units = unit_slices(self.method.code_units, codes.shape[1])
        pcas = [PCA(n_components=1).fit(codes[:, unit]) for unit in units]
        # One (D, U) projection: each unit's principal axis in its own rows, zeros elsewhere.
        self.pca_means = np.concatenate([p.mean_ for p in pcas])  # (D,)
        self.pca_axes = np.zeros((codes.shape[1], len(units)))
        for u, (unit, pca) in enumerate(zip(units, pcas, strict=True)):
            self.pca_axes[unit, u] = pca.components_[0]

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """The flat codes of ``rows`` as ``encode`` gave them, encoding those not yet done."""
        missing = np.unique(rows[~self.done[rows]])
        if missing.size:
            self._encode_rows(missing)
        return self.codes[rows].reshape(len(rows), -1)

    def raw_mirrored(self, rows: np.ndarray) -> np.ndarray:
        """The flat codes of ``rows``' images flipped left-right, each encoded once."""
        missing = np.unique([r for r in rows.tolist() if r not in self.flipped])
        for chunk, codes in self._encode(missing.astype(np.int64), mirrored=True):
            self.flipped.update(zip(chunk.tolist(), codes, strict=True))
        return np.stack([self.flipped[r] for r in rows.tolist()]).reshape(len(rows), -1)

    def lookup(self, observations: np.ndarray) -> np.ndarray:
        observations = np.asarray(observations).astype(np.int64)
        rows = observations[:, 0]
        mirrored = observations.shape[1] > 1 and bool(observations[0, 1])
        if observations.shape[1] > 1 and (observations[:, 1] != observations[0, 1]).any():
            raise ValueError("look up mirrored and plain images in separate calls")
        codes = self.raw_mirrored(rows) if mirrored else self.raw(rows)
        if self.pca_axes is None:
            return codes
        return ((codes - self.pca_means) @ self.pca_axes).astype(np.float32)


class CodeBlock:
    """Dimensions [start, stop) of a CodeTable's raw codes: a score subset reads the codes
    the full battery encoded, never encoding an image twice."""

    def __init__(self, table: CodeTable, dims: tuple[int, int]) -> None:
        self.table, (self.start, self.stop) = table, dims

    def encode_all(self) -> None:
        self.table.encode_all()

    def lookup(self, observations: np.ndarray) -> np.ndarray:
        rows = np.asarray(observations)[:, 0].astype(np.int64)
        return self.table.raw(rows)[:, self.start : self.stop]


class EncodedGroundTruth(GroundTruthData):
    """``dataset`` as metrics see it here: same factors and draws, row indices as observations.
    ``excluded`` factors become nuisances: drawn at random, never scored."""

    def __init__(self, dataset: GroundTruthData, excluded: tuple[str, ...] = ()) -> None:
        self.dataset = dataset
        self.state_names, self.state_sizes = dataset.state_names, dataset.state_sizes
        self.nuisance_factors = (*dataset.nuisance_factors, *excluded)
        self.image_shape = dataset.image_shape

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        state = self.complete_factors(factors, random_state)
        return self.dataset.index_of(state)[:, None]

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self.dataset.images(indices)


class EncodedAttributes(AttributeData):
    """An attribute dataset (CelebA) as TAD and the attribute probe see it here: row indices
    as observations."""

    def __init__(self, dataset) -> None:
        self.dataset, self.attributes = dataset, dataset.attributes
        self.attribute_names, self.partition = dataset.attribute_names, dataset.partition

    def __len__(self) -> int:
        return len(self.dataset)

    def observations(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(indices)[:, None]

    def flipped_observations(self, indices: np.ndarray) -> np.ndarray:
        """The rows' images flipped left-right (the attribute probe's training images)."""
        return np.stack([np.asarray(indices), np.ones(len(indices), dtype=np.int64)], 1)


class Generated:
    """What generation metrics (FID) score: the images ``method`` generates for dataset rows
    (``Method.generate``), as (n, H, W, C) floats in [0, 1]."""

    def __init__(self, dataset, method: Method, device: torch.device) -> None:
        self.dataset, self.method, self.device = dataset, method, device

    @torch.no_grad()
    def __call__(self, rows: np.ndarray, seed: int, steps: int) -> np.ndarray:
        images = torch.from_numpy(self.dataset.images(rows)).to(self.device)
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
        generated = self.method.generate(images, seed, steps)
        return generated.permute(0, 2, 3, 1).float().cpu().numpy()


def evaluate(
    method: Method,
    dataset,
    eval_cfg: DictConfig,
    record: RunRecord,
    device: torch.device,
) -> dict[str, Any]:
    """Run every metric in ``eval_cfg.metrics`` not already in the record with these settings,
    writing each to metrics.json as it finishes."""
    method.eval()
    table = CodeTable(dataset, method, device, eval_cfg.batch_size)
    done = record.metrics()
    scored = score_battery(method, dataset, eval_cfg, device, done, table=table)
    supervision = method.supervision
    subsets = (
        score_subset(method, dataset, eval_cfg, device, done, spec, subset, table)
        for subset, spec in (supervision.score_subsets if supervision else {}).items()
    )
    for name, result in itertools.chain(scored, *subsets):
        earlier = record.write_metric(name, result)
        if earlier is not None:
            print(replacement_line(name, earlier, result), file=sys.stderr)
    return record.metrics()


def replacement_line(name: str, earlier: dict[str, Any], result: dict[str, Any]) -> str:
    """What a re-scoring replaced, in words: the earlier values and the settings that
    changed."""
    values = ", ".join(f"{k} {v:.4f}" for k, v in earlier.get("values", {}).items())
    changes = settings_changes(scoring_settings(earlier), scoring_settings(result))
    return (
        f"{name}: re-scored with {'; '.join(changes) or 'the same settings'}; replaces "
        f"{values or 'an earlier score'}, kept in metrics_replaced.jsonl"
    )


def score_subset(
    method: Method,
    dataset,
    eval_cfg: DictConfig,
    device: torch.device,
    done: dict[str, Any],
    subset: ScoreSubset,
    name: str,
    table: CodeTable,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``<metric>/<name>``, result) for the battery's factor metrics on a subset: its factors
    only (the excluded ones drawn as nuisances), its code dimensions raw, read from the full
    battery's ``table``."""
    if isinstance(dataset, AttributeData):
        return
    specs = {m: METRICS.get(m) for m in eval_cfg.metrics}
    cfg = eval_cfg.copy()
    cfg.metrics = [m for m, s in specs.items() if s.data == "factors" and s.scores == "codes"]
    cfg.reduce = Reduce.none
    suffix = f"/{name}"
    earlier = {k.removesuffix(suffix): v for k, v in done.items() if k.endswith(suffix)}
    excluded = tuple(subset.excluded_factors)
    block = CodeBlock(table, subset.dims)
    details = {
        "subset": subset.description,
        "factors": [f for f in dataset.factor_names if f not in excluded],
        "dims": list(subset.dims),
    }
    for metric, result in score_battery(method, dataset, cfg, device, earlier, excluded, block):
        yield metric + suffix, {**result, **details}


def score_history(
    method: Method,
    dataset,
    eval_cfg: DictConfig,
    record: RunRecord,
    device: torch.device,
    step: int,
) -> None:
    """Score ``eval.history``'s cheap battery on the model as it is at ``step`` of training
    (the live weights, in eval mode) into metrics_history.jsonl. Training goes on exactly as
    without it: every global random state is put back, and the model back in training mode."""
    history = eval_cfg.history
    cfg = eval_cfg.copy()
    cfg.metrics, cfg.profile, cfg.hyperparams = (
        history.metrics,
        history.profile,
        history.hyperparams,
    )
    cfg.encode = Encode.lazy
    cfg.pca_rows = history.pca_rows
    saved = global_rng_state()
    method.eval()
    try:
        for name, result in score_battery(method, dataset, cfg, device, {}):
            record.append_history({"step": step, "metric": name, **result})
    finally:
        method.train()
        set_global_rng_state(saved)


def metric_settings(
    name: str, profile: str, overrides: dict[str, dict[str, Any]]
) -> tuple[MetricSpec, Callable[..., dict[str, float]], str, dict[str, Any]]:
    """(spec, function, version, hyperparameters) metric ``name`` is scored with under
    ``profile``: its defaults, then the run's ``eval.hyperparams`` for it."""
    spec = METRICS.get(name)
    function, version = spec.for_profile(Profile(profile).value)
    return spec, function, version, {**spec.hyperparameters(function), **overrides.get(name, {})}


def batteries(eval_cfg: DictConfig) -> list[tuple[list[str], str, dict, str]]:
    """(metrics, profile, hyperparameters, config key) of every battery a run scores:
    ``eval.metrics``, and the curves' ``eval.history.metrics`` when ``eval.every`` is set."""
    found = [
        (
            list(eval_cfg.metrics),
            eval_cfg.profile,
            OmegaConf.to_container(eval_cfg.hyperparams),
            "eval.metrics",
        )
    ]
    if eval_cfg.get("every") is not None:
        history = eval_cfg.history
        hyperparams = OmegaConf.to_container(history.hyperparams)
        found.append((list(history.metrics), history.profile, hyperparams, "eval.history.metrics"))
    return found


def check_files(eval_cfg: DictConfig) -> None:
    """What the metrics will read from disk later (FID's Inception file) is there: needs
    neither the model nor the data, so a sweep checks it before it queues any run."""
    for metrics, profile, overrides, _ in batteries(eval_cfg):
        for name in metrics:
            spec, _, _, settings = metric_settings(name, profile, overrides)
            if spec.preflight is not None:
                spec.preflight(settings)


def check_ready(method_class: type[Method], dataset, eval_cfg: DictConfig) -> None:
    """Before a run trains: every metric it will score can score this method on this kind of
    data, and what a metric will read later is there (``check_files``). A one-line error now
    instead of one after training."""
    kind = "attributes" if isinstance(dataset, AttributeData) else "factors"
    for metrics, profile, overrides, key in batteries(eval_cfg):
        for name in metrics:
            spec, _, _, _ = metric_settings(name, profile, overrides)
            if spec.data not in (kind, "any"):
                fitting = [m for m in METRICS.names() if METRICS.get(m).data in (kind, "any")]
                raise BenchError(
                    f"{name} needs a dataset of {spec.data}, and {type(dataset).__name__} has "
                    f"{kind}; score it with {', '.join(fitting)} ({key}=[...])"
                )
            if spec.scores == "generated" and method_class.generate is Method.generate:
                raise BenchError(
                    f"{name} scores generated images and {method_class.__name__} does not "
                    f"generate any; leave {name} out of {key}"
                )
    check_files(eval_cfg)


def score_battery(
    method: Method,
    dataset,
    eval_cfg: DictConfig,
    device: torch.device,
    done: dict[str, Any],
    excluded: tuple[str, ...] = (),
    table: CodeTable | CodeBlock | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(metric, result with its settings) for every metric of ``eval_cfg`` in turn, skipping
    those ``done`` holds with the same settings (scored before an interruption). Factors
    in ``excluded`` are not scored (drawn at random as nuisances). Codes come from ``table``
    when given (shared with another battery), else from a table of their own."""
    if table is None:
        table = CodeTable(dataset, method, device, eval_cfg.batch_size)
    view = (
        EncodedAttributes(dataset)
        if isinstance(dataset, AttributeData)
        else EncodedGroundTruth(dataset, excluded)
    )
    overrides = OmegaConf.to_container(eval_cfg.hyperparams)
    encode_all = eval_cfg.encode == "all" or (
        eval_cfg.encode == "auto" and IMAGE_HUNGRY & set(eval_cfg.metrics)
    )
    pca = Reduce(eval_cfg.reduce) == Reduce.pca1
    on_sample = pca and PcaFit(eval_cfg.pca_fit) == PcaFit.sample
    if on_sample:
        check_pca_on_sample(eval_cfg.metrics, "eval.metrics")
    prepared = False
    for position, name in enumerate(eval_cfg.metrics, start=1):
        spec, function, version, hyperparams = metric_settings(name, eval_cfg.profile, overrides)
        reads_codes = spec.scores == "codes"
        if on_sample and reads_codes:  # the metric reduces the tokens of the images it scores
            hyperparams["pca_units"] = method.code_units or method.representation_dim
        settings = {
            "version": version,
            "profile": spec.profile_used(Profile(eval_cfg.profile).value),
            "hyperparams": hyperparams,
            "random_seed": eval_cfg.random_seed,
            "reduce": Reduce(eval_cfg.reduce).value,
            "pca_rows": eval_cfg.pca_rows if pca and not on_sample else None,
        }
        if spec.protocol is not None:
            settings["protocol"] = spec.protocol(hyperparams) + (
                f", PCA on {eval_cfg.pca_rows or 'all'} dataset images"
                if pca and not on_sample and reads_codes
                else ""
            )
        previous = done.get(name, {})
        if {k: previous.get(k) for k in settings} == settings:
            continue
        if not prepared and reads_codes:
            if encode_all:
                table.encode_all()
            if pca and not on_sample:
                table.fit_pca1(eval_cfg.pca_rows, eval_cfg.random_seed)
            prepared = True
        print(f"scoring {name} ({position} of {len(eval_cfg.metrics)}) ...", file=sys.stderr)
        start = time.perf_counter()
        with progress_messages():  # what long metrics (exact DCI) say while they run
            scored = (
                (dataset, Generated(dataset, method, device))
                if spec.scores == "generated"
                else (view, table.lookup)
            )
            values = function(
                *scored, np.random.RandomState(eval_cfg.random_seed), None, **hyperparams
            )
        seconds = time.perf_counter() - start
        print(f"scored {name} in {seconds:.1f} s", file=sys.stderr, flush=True)
        yield (
            name,
            {
                **settings,
                "values": {k: float(v) for k, v in values.items()},
                **(spec.provenance(hyperparams) if spec.provenance is not None else {}),
                "seconds": round(seconds, 3),
            },
        )
