"""DiTi's attribute probe as a metric: on attribute datasets and on a factor dataset's view."""

from __future__ import annotations

import numpy as np
import pytest

from bench.datasets.attribute_data import AttributeData, AttributeImages
from bench.errors import BenchError
from bench.metrics.attribute_probe import compute_attribute_probe, factor_attributes
from bench.runner import run
from tests.test_diti import TINY_DITI


class Factors:
    """A ground-truth dataset whose observations are its factor values themselves."""

    factors_num_values = (4, 6, 1, 5)

    def sample(self, num: int, random_state: np.random.RandomState):
        factors = np.stack(
            [random_state.randint(size, size=num) for size in self.factors_num_values], axis=1
        )
        return factors, factors.astype(np.float32)


SMALL = {"num_train": 2000, "num_valid": 500, "num_test": 500, "epochs": 15}


def test_attributes_of_a_factor_dataset_are_upper_halves_of_the_varying_factors():
    factors = np.array([[0, 5, 0, 1], [3, 2, 0, 2]])
    attributes, names = factor_attributes(factors, [4, 6, 1, 5])
    assert names == ["factor0_upper", "factor1_upper", "factor3_upper"]
    np.testing.assert_array_equal(attributes, [[0, 1, 0], [1, 0, 1]])


def test_linearly_encoded_attributes_score_near_one_and_noise_the_base_rate():
    def linear(factors):  # each attribute is the sign of one coordinate, with a margin
        return (factors - np.array([2, 3, 0, 2]) + 0.5) * 4

    scores = compute_attribute_probe(Factors(), linear, np.random.RandomState(0))  # 10,000
    assert scores["mean_ap"] >= 0.99
    assert {"ap.factor0_upper", "ap.factor1_upper", "ap.factor3_upper"} <= scores.keys()

    def noise(x):
        return np.random.default_rng(len(x) + int(x.sum())).normal(size=(len(x), 8))

    scores = compute_attribute_probe(Factors(), noise, np.random.RandomState(0), **SMALL)
    base_rates = [2 / 4, 3 / 6, 3 / 5]  # the fraction of positives of each attribute
    assert scores["mean_ap"] == pytest.approx(np.mean(base_rates), abs=0.06)


def test_the_same_seed_gives_the_same_numbers():
    def codes(x):
        return x @ np.array([[1.0, 0.2], [0.1, 1.0], [0.0, 0.0], [0.5, -0.5]])

    scores = [
        compute_attribute_probe(Factors(), codes, np.random.RandomState(seed), **SMALL)
        for seed in (1, 1, 2)
    ]
    assert scores[0] == scores[1] and scores[0] != scores[2]


class Attributes(AttributeData):
    """An attribute dataset (CelebA's interface) with a train/valid/test partition."""

    def __init__(self, partition: np.ndarray | None) -> None:
        rng = np.random.default_rng(0)
        self.attributes = rng.integers(0, 2, size=(6000, 3)).astype(np.float32)
        self.attribute_names = ["a", "b", "c"]
        self.partition = partition

    def __len__(self) -> int:
        return len(self.attributes)

    def observations(self, indices: np.ndarray) -> np.ndarray:
        return self.attributes[indices] * 2 - 1

    def flipped_observations(self, indices: np.ndarray) -> np.ndarray:
        return self.observations(indices)  # these "images" look the same mirrored


def test_an_attribute_dataset_is_probed_on_its_own_partition():
    data = Attributes(np.repeat([0, 1, 2], [4000, 1000, 1000]))
    scores = compute_attribute_probe(data, lambda x: 4 * x, np.random.RandomState(0))
    assert scores["mean_ap"] >= 0.99 and set(scores) >= {"ap.a", "ap.b", "ap.c"}
    with pytest.raises(BenchError, match="split=all"):
        compute_attribute_probe(Attributes(None), lambda x: x, np.random.RandomState(0))


def test_training_images_are_flipped_at_random_each_epoch():
    # Mirrored images with the same codes change nothing; with other codes, each epoch
    # trains on a random half of them, and the scores move.
    data = Attributes(np.repeat([0, 1, 2], [4000, 1000, 1000]))
    noisy = np.random.default_rng(3).normal(scale=2.0, size=(len(data), 3)).astype(np.float32)
    codes = lambda x: 4 * x  # noqa: E731
    plain = compute_attribute_probe(data, codes, np.random.RandomState(0), flip_train=False)
    same = compute_attribute_probe(data, codes, np.random.RandomState(0))
    assert same == plain
    # Noisy codes, so that the scores are short of perfect and the flips show in them.
    base = np.random.default_rng(4).normal(size=(len(data), 3)).astype(np.float32)
    data.observations = lambda rows: data.attributes[rows] + base[rows]
    plain = compute_attribute_probe(data, lambda x: x, np.random.RandomState(0), flip_train=False)
    seen = []
    data.flipped_observations = lambda rows: seen.append(rows) or noisy[rows]
    flipped = compute_attribute_probe(data, lambda x: x, np.random.RandomState(0))
    (rows,) = seen
    np.testing.assert_array_equal(rows, np.arange(4000))  # the train partition only
    assert 0.5 < plain["mean_ap"] < 0.99 and flipped["mean_ap"] != plain["mean_ap"]
    data.flipped_observations = None
    with pytest.raises(BenchError, match=r"flip_train=True needs the data's flipped_observations"):
        compute_attribute_probe(data, codes, np.random.RandomState(0))


def test_diti_is_probed_on_a_procedural_datasets_attribute_view(tmp_path):
    overrides = [
        *TINY_DITI,
        "eval.metrics=[attribute_probe]",
        "eval.pca_rows=300",
        "eval.hyperparams.attribute_probe={num_train: 300, num_valid: 100, num_test: 100}",
    ]
    record = run("diti", "shapes3d-procedural", "smoke", overrides, out=tmp_path)
    scores = record.metrics()["attribute_probe"]["values"]
    assert 0 < scores["mean_ap"] <= 1 and len([k for k in scores if k.startswith("ap.")]) == 6


def test_with_pca_units_the_probe_reads_each_units_first_principal_component():
    # Two units of two numbers each. The probe with pca_units=2 equals the probe on the units'
    # first principal components, computed here by SVD over the probe's own images.
    data = Attributes(np.repeat([0, 1, 2], [4000, 1000, 1000]))
    noise = np.random.default_rng(1).normal(scale=0.3, size=(len(data), 4))
    tokens = (data.attributes @ np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 2.0, -1.0],
                                           [0.3, 0.0, 0.0, 0.2]]) + noise)  # fmt: skip
    data.observations = lambda rows: np.asarray(rows)[:, None]  # rows stand for images

    def lookup(table):
        return lambda rows: table[rows[:, 0]]

    scores = compute_attribute_probe(data, lookup(tokens), np.random.RandomState(0), pca_units=2)
    components = []
    for unit in (slice(0, 2), slice(2, 4)):
        centred = tokens[:, unit] - tokens[:, unit].mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        axis *= np.sign(axis[np.argmax(np.abs(axis))])  # scikit-learn's sign: largest entry > 0
        components.append(centred @ axis)
    expected = compute_attribute_probe(
        data, lookup(np.stack(components, axis=1)), np.random.RandomState(0)
    )
    assert scores["mean_ap"] == pytest.approx(expected["mean_ap"], abs=2e-3)


def test_the_code_table_encodes_mirrored_images_once_and_apart():
    import torch

    from bench.evaluate import CodeTable, EncodedAttributes

    class Images(AttributeImages):
        attributes = np.zeros((20, 1))
        attribute_names = ("a",)

        def __len__(self):
            return 20

        def images(self, rows):
            return np.random.default_rng(0).integers(0, 256, (20, 4, 6, 3), dtype=np.uint8)[rows]

    class ColumnMeans:  # a code that a left-right flip reverses
        calls = 0

        def encode(self, images):
            ColumnMeans.calls += 1
            return images.mean(dim=(1, 2))

    data = Images()
    table = CodeTable(data, ColumnMeans(), torch.device("cpu"), batch_size=8)
    view = EncodedAttributes(data)
    rows = np.array([3, 5, 3, 11])
    plain = table.lookup(view.observations(rows))
    mirrored = table.lookup(view.flipped_observations(rows))
    np.testing.assert_allclose(mirrored, plain[:, ::-1], rtol=1e-6)
    calls = ColumnMeans.calls
    table.lookup(view.flipped_observations(rows))
    assert ColumnMeans.calls == calls  # each mirrored image encoded once
    assert table.done.sum() == 3  # and apart from the plain codes
