"""FID: the Fréchet distance against closed forms, and the Inception network FID is defined
with, built from its architecture (the published weights cannot be downloaded here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bench.config import EvalConfig
from bench.datasets.download import FID_INCEPTION_FILE
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.fileio import file_digest
from bench.methods.base import Method, MethodConfig
from bench.metrics.fid import (
    cached_statistics,
    feature_statistics,
    frechet_distance,
    image_features,
)
from bench.metrics.helpers import fid_inception
from bench.metrics.helpers.fid_inception import FIDInceptionV3, load_fid_inception
from bench.store import RunRecord
from tests.grid_data import FactorGrid


def random_spd(rng: np.random.RandomState, size: int) -> np.ndarray:
    a = rng.normal(size=(size, size))
    return a @ a.T + 0.1 * np.eye(size)


def test_identical_statistics_are_at_distance_zero():
    rng = np.random.RandomState(0)
    features = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    mu, sigma = feature_statistics(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_gaussians_that_share_eigenvectors_have_the_closed_form_distance():
    # Σ1 = Q D1 Qᵀ and Σ2 = Q D2 Qᵀ commute, so tr((Σ1 Σ2)^½) = Σ √(d1 d2).
    rng = np.random.RandomState(1)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    d1, d2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    got = frechet_distance(mu1, q @ np.diag(d1) @ q.T, mu2, q @ np.diag(d2) @ q.T)
    assert got == pytest.approx(expected, abs=1e-6)
    # In one dimension: (μ1 − μ2)² + (σ1 − σ2)².
    assert frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9 + 1, abs=1e-9)


def test_the_distance_ignores_the_order_of_the_samples():
    rng = np.random.RandomState(2)
    real, fake = rng.normal(size=(300, 10)), rng.normal(1.0, 2.0, size=(200, 10))
    first = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    shuffled = frechet_distance(
        *feature_statistics(real[rng.permutation(300)]),
        *feature_statistics(fake[rng.permutation(200)]),
    )
    assert shuffled == pytest.approx(first, rel=1e-9)


def test_a_near_singular_covariance_gives_a_finite_real_distance():
    rng = np.random.RandomState(3)
    # 20 samples in 64 dimensions: both covariances have rank 19.
    a, b = rng.normal(size=(20, 64)), rng.normal(0.5, 1.0, size=(20, 64))
    distance = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert isinstance(distance, float) and np.isfinite(distance) and distance > 0
    with pytest.raises(BenchError, match="at least 2 images"):
        feature_statistics(a[:1])


# The published file's layers: torchvision's Inception3 without the auxiliary classifier,
# with a 1008-way fc (pytorch-fid's fid_inception_v3), written out independently of the code.
STEM = {
    "Conv2d_1a_3x3": (32, 3, 3, 3),
    "Conv2d_2a_3x3": (32, 32, 3, 3),
    "Conv2d_2b_3x3": (64, 32, 3, 3),
    "Conv2d_3b_1x1": (80, 64, 1, 1),
    "Conv2d_4a_3x3": (192, 80, 3, 3),
}
BRANCHES = {
    "A": ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"],
    "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
          "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
          "branch7x7x3_4"],
    "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
          "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}  # fmt: skip
MIXED = {"5b": "A", "5c": "A", "5d": "A", "6a": "B", "6b": "C", "6c": "C", "6d": "C",
         "6e": "C", "7a": "D", "7b": "E", "7c": "E"}  # fmt: skip
BN = ("weight", "bias", "running_mean", "running_var")


def published_keys() -> set[str]:
    convs = list(STEM) + [
        f"Mixed_{block}.{branch}" for block, kind in MIXED.items() for branch in BRANCHES[kind]
    ]
    keys = {f"{conv}.conv.weight" for conv in convs}
    keys |= {f"{conv}.bn.{name}" for conv in convs for name in BN}
    return keys | {"fc.weight", "fc.bias"}


def test_the_network_has_the_published_files_keys_and_shapes():
    state = FIDInceptionV3().state_dict()
    assert {k for k in state if not k.endswith("num_batches_tracked")} == published_keys()
    assert len(published_keys()) == 472
    for name, shape in STEM.items():
        assert tuple(state[f"{name}.conv.weight"].shape) == shape
    assert tuple(state["Mixed_5b.branch_pool.conv.weight"].shape) == (32, 192, 1, 1)
    assert tuple(state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape) == (192, 192, 1, 7)
    assert tuple(state["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(state["fc.weight"].shape) == (1008, 2048)
    # torchvision documents inception_v3 at 27,161,264 parameters; less its auxiliary
    # classifier (3,326,696), plus 8 more classes (8 × 2049):
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 23_850_960


def test_the_network_gives_2048_pool_features_of_any_image_size():
    network = FIDInceptionV3().eval()
    with torch.no_grad():
        features = network(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 2048) and torch.all(features >= 0)  # after a ReLU


def write_weights(path, with_batch_counts: bool) -> None:
    state = {
        k: torch.randn_like(v.float()) if v.is_floating_point() else v
        for k, v in FIDInceptionV3().state_dict().items()
        if with_batch_counts or not k.endswith("num_batches_tracked")
    }
    torch.save(state, path)


@pytest.mark.parametrize("with_batch_counts", [True, False])
def test_weights_load_only_from_the_file_with_the_published_hash(
    tmp_path, monkeypatch, with_batch_counts
):
    path = tmp_path / FID_INCEPTION_FILE
    write_weights(path, with_batch_counts)
    with pytest.raises(BenchError, match="is not pt_inception") as error:
        load_fid_inception(path)  # this file's sha256 does not start with 6726825d
    assert "\n" not in str(error.value)
    # The same file, were its hash the published one, loads strictly (with or without
    # BatchNorm's batch counters, which files saved before PyTorch 0.4.1 lack).
    monkeypatch.setattr(
        fid_inception, "FID_INCEPTION_SHA256_PREFIX", file_digest(path)["sha256"][:8]
    )
    network = load_fid_inception(path)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(network.state_dict()["fc.weight"], loaded["fc.weight"])
    assert not network.training


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(BenchError, match="bench data download fid-inception") as error:
        load_fid_inception(tmp_path / "nowhere.pth")
    assert "\n" not in str(error.value)


def test_features_and_statistics_are_computed_once_and_cached(tmp_path):
    images = np.random.RandomState(4).randint(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)

    def network(pixels):  # mean colour per channel: a transparent feature network
        return pixels.mean(dim=(2, 3))

    features = image_features(lambda i: images[i], 7, network, batch_size=3)
    np.testing.assert_allclose(features, images.mean(axis=(1, 2)) / 255, rtol=1e-6)
    calls = []

    def compute():
        calls.append(1)
        return feature_statistics(features)

    first = cached_statistics(tmp_path / "real.npz", compute)
    second = cached_statistics(tmp_path / "real.npz", compute)
    assert len(calls) == 1
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


class Dimmer(Method):
    """Generates each image at ``factor`` of its brightness: ``factor`` 1 copies it."""

    config_class = MethodConfig

    def __init__(self, factor: float) -> None:
        super().__init__(MethodConfig(name="dimmer"), (1, 1, 3))
        self.factor = factor

    @property
    def representation_dim(self) -> int:
        return 3

    def training_loss(self, batch, generator):
        raise AssertionError("not trained")

    def encode(self, images):
        return images.flatten(1)

    def generate(self, images, seed, steps=None):
        return images * self.factor


def score_fid(method, tmp_path, **hyperparams) -> dict:
    cfg = OmegaConf.merge(
        OmegaConf.structured(EvalConfig()),
        {"metrics": ["fid"], "hyperparams": {"fid": {"num_images": 40, **hyperparams}}},
    )
    record = RunRecord(tmp_path / "record")
    return evaluate(method, FactorGrid((3, 4, 5)), cfg, record, torch.device("cpu"))["fid"]


def test_fid_of_a_model_that_copies_its_images_is_zero(injected_network, tmp_path):
    result = score_fid(Dimmer(1.0), tmp_path)
    assert result["values"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["protocol"] == "40 images, 100 sampler steps"
    assert len(list((tmp_path / "cache" / "fid").glob("real-40-*-small.npz"))) == 1


class Shifted(FactorGrid):
    """The same factors and length as FactorGrid, other pixels: another crop, say."""

    def images(self, indices):
        return super().images(indices) // 2


def test_real_statistics_are_cached_by_the_images_not_by_the_dataset_class(
    injected_network, tmp_path
):
    cfg = OmegaConf.merge(
        OmegaConf.structured(EvalConfig()),
        {"metrics": ["fid"], "hyperparams": {"fid": {"num_images": 40}}},
    )
    datasets = [FactorGrid((3, 4, 5)), FactorGrid((3, 4, 5)), Shifted((3, 4, 5))]
    for number, data in enumerate(datasets):
        record = RunRecord(tmp_path / f"record{number}")
        evaluate(Dimmer(1.0), data, cfg, record, torch.device("cpu"))
    # Two datasets with the same images share one file; other images get their own.
    assert len(list((tmp_path / "cache" / "fid").glob("real-40-*-small.npz"))) == 2


def test_fid_equals_the_distance_of_the_features_it_was_given(injected_network, tmp_path):
    data = FactorGrid((3, 4, 5))
    rows = np.random.RandomState(0).choice(len(data), size=40, replace=False)
    real = data.images(rows).astype(np.float32) / 255
    with torch.no_grad():
        features = [
            injected_network(torch.from_numpy(x).permute(0, 3, 1, 2)).double().numpy()
            for x in (real * 0.5, real)
        ]
    expected = frechet_distance(*feature_statistics(features[0]), *feature_statistics(features[1]))
    assert score_fid(Dimmer(0.5), tmp_path)["values"]["fid"] == pytest.approx(expected, rel=1e-9)


def test_a_method_that_cannot_generate_is_refused_in_one_line(injected_network, tmp_path):
    from tests.test_evaluate import Elementwise, ElementwiseConfig

    with pytest.raises(BenchError, match="does not generate images") as error:
        score_fid(Elementwise(ElementwiseConfig(), (1, 1, 3)), tmp_path)
    assert "\n" not in str(error.value)


def test_beta_vae_generates_samples_of_its_prior_whatever_the_images():
    from bench.methods.beta_vae import BetaVAE, BetaVAEConfig

    model = BetaVAE(BetaVAEConfig(), (64, 64, 3)).eval()
    samples = model.generate(torch.zeros(3, 3, 64, 64), seed=1)
    assert samples.shape == (3, 3, 64, 64) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, model.generate(torch.ones(3, 3, 64, 64), seed=1))
    assert not torch.equal(samples, model.generate(torch.zeros(3, 3, 64, 64), seed=2))


def test_fid_runs_on_the_runs_device_even_where_a_gpu_is_visible(
    injected_network, tmp_path, monkeypatch
):
    from bench.metrics import fid

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, unused by the run
    monkeypatch.setattr(
        fid,
        "feature_network",
        lambda weights, device: asked.append(device) or (injected_network, "small"),
    )
    score_fid(Dimmer(1.0), tmp_path)
    assert asked == [torch.device("cpu")]
