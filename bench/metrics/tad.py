"""TAD, Total AUROC Difference (Yeats et al. 2022, NashAE), for attribute datasets such as CelebA.

For every attribute and latent, a threshold detector sweeps a grid of ``grid_step`` over the
latent's observed range (latents whose range is at most 0.2 are skipped and score 0.5); its
AUROC is a right-endpoint sum over the grid points, with FPRs and TPRs each sorted ascending,
the better of "latent ≥ threshold" and "latent < threshold". An attribute counts when its best
AUROC is at least 0.75 and at most 0.2 of its entropy is shared with another attribute; TAD
is the *sum* over counted attributes of the gap between the best and second-best latent.

The grid step changes the numbers: NashAE uses 0.01, DisDiff, EncDiff and DyGA+SD 0.1. The
two are not comparable, so the step is part of what is recorded with the score (its
``protocol``), and so are the number of images and where a per-unit PCA was fitted. DyGA+SD's
evaluation encodes 10,000 images, fits one PCA(1) per latent unit on *those* tokens and scores
the 20 scalars: ``pca_units`` does that inside the metric.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from bench.datasets.attribute_data import AttributeData
from bench.errors import BenchError
from bench.metrics.spec import MetricSpec, check_codes
from bench.metrics.utils import RepresentationFunction, obtain_representation, unit_slices

RANGE_CUT, AUROC_CUT, REDUNDANCY_CUT = 0.2, 0.75, 0.2


def compute_tad(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_eval: int = 5000,
    grid_step: float = 0.01,
    batch_size: int = 64,
    pca_units: int | list[int] = 0,
) -> dict[str, float]:
    """TAD on ``num_eval`` images drawn without replacement from an attribute dataset
    (``AttributeData``: ``__len__``, ``observations(indices)``, ``attributes`` (N, A) in
    {0, 1}).
    ``pca_units`` > 0 (or a list of widths): the code is that many equal-sized tokens (or
    tokens of those widths), each reduced to one scalar by a PCA(1) fitted on the codes of the
    scored images."""
    del artifact_dir
    if not isinstance(ground_truth_data, AttributeData):
        raise BenchError(
            "tad: needs an attribute dataset (images and binary labels, e.g. celeba); "
            f"{type(ground_truth_data).__name__} has no attributes"
        )
    count = min(num_eval, len(ground_truth_data))
    indices = random_state.choice(len(ground_truth_data), size=count, replace=False)
    observations = ground_truth_data.observations(indices)
    codes = obtain_representation(observations, representation_function, batch_size).T
    if pca_units:
        codes = pca1_per_unit(codes, pca_units)
    return tad_score(codes, ground_truth_data.attributes[indices], grid_step)


def pca1_per_unit(codes: np.ndarray, units: int | list[int]) -> np.ndarray:
    """(n, units) first principal component scores of each unit's token, fitted on ``codes``:
    ``units`` equal tokens, or tokens of the listed widths in order."""
    codes = np.asarray(codes).reshape(len(codes), -1)
    return np.stack(
        [
            PCA(n_components=1).fit_transform(codes[:, unit])[:, 0]
            for unit in unit_slices(units, codes.shape[1])
        ],
        axis=1,
    ).astype(np.float32)


def describe_protocol(hyperparams: dict) -> str:
    """What makes two TAD numbers comparable, in a few words (a column header's qualifier)."""
    text = f"step {hyperparams['grid_step']:g}, {hyperparams['num_eval']} images"
    if hyperparams.get("pca_units"):
        text += ", PCA on them"
    return text


def tad_score(
    representation: np.ndarray, attributes: np.ndarray, grid_step: float = 0.01
) -> dict[str, float]:
    """TAD of codes (n, L) against binary attributes (n, A)."""
    check_codes("tad", np.asarray(representation).T)
    aurocs = auroc_matrix(representation, attributes, grid_step)  # (A, L)
    ordered = np.sort(aurocs, axis=1)
    best = ordered[:, -1]
    second = ordered[:, -2] if aurocs.shape[1] > 1 else np.zeros_like(best)
    keep = (best >= AUROC_CUT) & (entropy_redundancy(attributes) <= REDUNDANCY_CUT)
    return {"tad": float(np.sum((best - second)[keep])), "num_attributes_captured": int(keep.sum())}


def auroc_matrix(codes: np.ndarray, attributes: np.ndarray, grid_step: float) -> np.ndarray:
    """AUROC (A, L) of the best single-latent threshold detector of each attribute."""
    z = np.asarray(codes, dtype=np.float32)
    y = np.asarray(attributes, dtype=np.float32)
    positives = y.sum(axis=0)
    negatives = len(y) - positives
    grid = np.arange(0.0, 1.0001, grid_step, dtype=np.float32)
    result = np.full((y.shape[1], z.shape[1]), 0.5)
    low, high = z.min(axis=0), z.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for latent in np.flatnonzero(high - low > RANGE_CUT):
            thresholds = grid * (high[latent] - low[latent]) + low[latent]
            above = (z[None, :, latent] >= thresholds[:, None]).astype(np.float32)  # (T, n)
            tp = above @ y  # (T, A): positives predicted by "latent ≥ threshold"
            fp = above.sum(axis=1, keepdims=True) - tp
            area_above = _area(fp / negatives, tp / positives)
            area_below = _area((negatives - fp) / negatives, (positives - tp) / positives)
            result[:, latent] = np.maximum(area_above, area_below)
    return result


def _area(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Right-endpoint rectangle rule over the grid points, FPR and TPR each sorted."""
    fpr, tpr = np.sort(fpr, axis=0), np.sort(tpr, axis=0)
    return np.sum(tpr[1:] * np.diff(fpr, axis=0), axis=0)


def entropy_redundancy(attributes: np.ndarray) -> np.ndarray:
    """Per attribute, the largest mutual information with another attribute over its entropy."""
    y = np.asarray(attributes, dtype=np.float64)
    n, count = len(y), y.shape[1]
    mutual = np.zeros((count, count))
    for a_value in (0, 1):
        a = y if a_value else 1.0 - y
        for b_value in (0, 1):
            b = y if b_value else 1.0 - y
            joint = (a.T @ b) / n
            outer = np.outer(a.mean(axis=0), b.mean(axis=0))
            with np.errstate(divide="ignore", invalid="ignore"):
                term = joint * np.log(joint / outer)
            mutual += np.where((joint > 0) & (outer > 0), term, 0.0)
    entropy = np.diag(mutual).copy()
    np.fill_diagonal(mutual, -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        return mutual.max(axis=1) / entropy


SPEC = MetricSpec(
    name="tad",
    function=compute_tad,
    version="1",
    higher_is_better=True,
    keys=("tad", "num_attributes_captured"),
    headline="tad",
    label="TAD",
    protocol=describe_protocol,
    data="attributes",
)
