"""DiTi's CelebA attribute probe (eval/multitask_classification.py; methods-pdae.md §3.2), as a
metric any method can be scored with.

A single linear layer (the representation's width → one logit per attribute) is trained on
frozen codes with the mean binary cross-entropy over all attributes, Adam at 1e-3, batch 128,
unshuffled batches (the authors' DataLoader default), for 15 epochs. After each epoch the
mean over attributes of scikit-learn's ``average_precision_score`` on the validation split
picks the epoch; the score is that epoch's mean AP on the test split, with every
attribute's AP beside it (``ap.<attribute>``). The layer's initial weights come from
``random_state``, so the number repeats.

Data: an attribute dataset with a train/valid/test ``partition`` (CelebA: the official split,
which is DiTi's index split) uses all of it. A ground-truth dataset gets an attribute view
instead: ``num_train``, ``num_valid`` and ``num_test`` images drawn with ``random_state``,
and one binary attribute per factor with more than one value, "the factor's value index is
in its upper half" (``factor_attributes``). So the CelebA path runs on procedural data too.

The authors re-encode the training images every epoch under a random horizontal flip
(``flip_train``, on by default): each training image is encoded once as it is and once
flipped left-right, and every epoch takes either code for it with probability ½ (drawn from
``random_state``) — the same codes re-encoding would give, the encoder being deterministic
in eval mode. The data must then offer ``flipped_observations(indices)``, as the evaluator's
CelebA view does. The ground-truth attribute view is never flipped: a flip mirrors factors.
With ``pca_units``, the PCA is fitted on the probe's codes, flipped ones included.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from bench.datasets.attribute_data import AttributeData
from bench.datasets.ground_truth import factor_attributes
from bench.errors import BenchError
from bench.metrics.spec import MetricSpec, check_codes
from bench.metrics.tad import pca1_per_unit
from bench.metrics.utils import RepresentationFunction, obtain_representation

TRAIN, VALID, TEST = 0, 1, 2  # partition labels, as CelebA's list_eval_partition.txt


def compute_attribute_probe(
    ground_truth_data,
    representation_function: RepresentationFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    epochs: int = 15,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    num_train: int = 10000,
    num_valid: int = 2000,
    num_test: int = 2000,
    pca_units: int | list[int] = 0,
    flip_train: bool = True,
) -> dict[str, float]:
    """Mean test AP of a linear probe on the codes (DiTi's protocol); ``num_*`` size the
    attribute view of a ground-truth dataset and are unused on an attribute dataset.
    ``pca_units`` as TAD's: each unit's token reduced to one scalar by a PCA(1) fitted on the
    codes of the probe's images."""
    del artifact_dir
    flipped = None
    if isinstance(ground_truth_data, AttributeData):
        partition = ground_truth_data.partition
        if partition is None:
            raise BenchError(
                "attribute_probe: needs train, valid and test images; load the dataset whole "
                "(celeba with split=all, and list_eval_partition.txt beside a partial copy)"
            )
        observations = ground_truth_data.observations(np.arange(len(ground_truth_data)))
        attributes = ground_truth_data.attributes
        names = list(ground_truth_data.attribute_names or range(attributes.shape[1]))
        if flip_train:
            if getattr(ground_truth_data, "flipped_observations", None) is None:
                raise BenchError(
                    "attribute_probe: flip_train=True needs the data's flipped_observations("
                    "indices) (its images flipped left-right); give it, or set flip_train=False"
                )
            train = np.flatnonzero(np.asarray(partition) == TRAIN)
            flipped = ground_truth_data.flipped_observations(train)
    else:
        sizes = (num_train, num_valid, num_test)
        factors, observations = ground_truth_data.sample(sum(sizes), random_state)
        attributes, names = factor_attributes(factors, ground_truth_data.factors_num_values)
        partition = np.repeat([TRAIN, VALID, TEST], sizes)
    codes = obtain_representation(observations, representation_function, batch_size).T
    if flipped is not None:
        flipped = obtain_representation(flipped, representation_function, batch_size).T
    if pca_units:
        both = pca1_per_unit(
            codes if flipped is None else np.concatenate([codes, flipped]), pca_units
        )
        codes, flipped = both[: len(codes)], None if flipped is None else both[len(codes) :]
    check_codes("attribute_probe", codes.T)
    return probe_scores(
        codes,
        attributes,
        partition,
        names,
        random_state,
        epochs,
        batch_size,
        learning_rate,
        flipped_train=flipped,
    )


def probe_scores(
    codes: np.ndarray,
    attributes: np.ndarray,
    partition: np.ndarray,
    names: list[str],
    random_state: np.random.RandomState,
    epochs: int = 15,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    flipped_train: np.ndarray | None = None,
) -> dict[str, float]:
    """Train the probe on the TRAIN rows, choose the epoch on VALID, score TEST.
    ``flipped_train``: the TRAIN rows' codes of their mirrored images, in row order; each
    epoch then takes either code per image with probability ½."""
    split = {part: np.flatnonzero(partition == part) for part in (TRAIN, VALID, TEST)}
    x = torch.from_numpy(np.asarray(codes, dtype=np.float32))
    y = torch.from_numpy(np.asarray(attributes, dtype=np.float32))
    generator = torch.Generator().manual_seed(int(random_state.randint(2**31)))
    probe = torch.nn.Linear(x.shape[1], y.shape[1])
    bound = 1 / x.shape[1] ** 0.5  # nn.Linear's initialisation, from the seeded generator
    with torch.no_grad():
        probe.weight.uniform_(-bound, bound, generator=generator)
        probe.bias.uniform_(-bound, bound, generator=generator)
    optimizer = torch.optim.Adam(probe.parameters(), lr=learning_rate)
    train = split[TRAIN]
    mirrored = (
        None
        if flipped_train is None
        else torch.from_numpy(np.asarray(flipped_train, dtype=np.float32))
    )
    best = (-1.0, 0, None)  # valid mean AP, epoch, weights
    for epoch in range(1, epochs + 1):
        inputs = x[train]
        if mirrored is not None:  # this epoch's random flips
            flip = torch.from_numpy(random_state.rand(len(train)) < 0.5)
            inputs = torch.where(flip[:, None], mirrored, inputs)
        for start in range(0, len(train), batch_size):
            rows = train[start : start + batch_size]
            batch = inputs[start : start + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(batch), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        valid = np.mean(average_precisions(probe, x[split[VALID]], y[split[VALID]]))
        if valid > best[0]:
            best = (valid, epoch, {k: v.clone() for k, v in probe.state_dict().items()})
    probe.load_state_dict(best[2])
    test = average_precisions(probe, x[split[TEST]], y[split[TEST]])
    scores = {"mean_ap": float(np.mean(test)), "valid_mean_ap": float(best[0])}
    scores["best_epoch"] = float(best[1])
    scores.update({f"ap.{name}": float(ap) for name, ap in zip(names, test, strict=True)})
    return scores


@torch.no_grad()
def average_precisions(probe: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    logits = probe(x).numpy()
    return [average_precision_score(y[:, a].numpy(), logits[:, a]) for a in range(y.shape[1])]


SPEC = MetricSpec(
    name="attribute_probe",
    function=compute_attribute_probe,
    version="2",  # 2: training codes of randomly flipped images each epoch, as the authors'
    higher_is_better=True,
    keys=("mean_ap", "valid_mean_ap", "best_epoch"),
    headline="mean_ap",
    label="Attr. mAP",
    data="any",
)
