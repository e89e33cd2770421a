"""Fréchet Inception Distance (Heusel et al. 2017), computed as pytorch-fid computes it.

The distance between two Gaussians fitted to Inception pool features (2048-d, float64 mean
and ``np.cov`` covariance) of real and generated images:

    FID = |μ₁ − μ₂|² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁Σ₂)^½)

with ``scipy.linalg.sqrtm`` for the root and pytorch-fid's two fixes: where the product is
singular (the root is not finite) both covariances get ``eps`` on the diagonal, and an
imaginary part left by numerical error is dropped (one larger than 1e-3 is an error). The
features come from ``bench.metrics.helpers.fid_inception`` (the published TensorFlow-ported weights)
or, in tests, from any network with the same contract.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from bench.datasets.files import cache_dir
from bench.errors import BenchError
from bench.fileio import atomic_path, file_digest
from bench.metrics.spec import MetricSpec

FeatureNetwork = Callable[[torch.Tensor], torch.Tensor]
# (dataset indices, noise seed, sampler steps) -> generated images (n, H, W, C) in [0, 1]
GenerateFunction = Callable[[np.ndarray, int, int], np.ndarray]


def compute_fid(
    ground_truth_data,
    generate_function: GenerateFunction,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_images: int = 50000,
    sample_steps: int = 100,
    batch_size: int = 100,
    weights: str | None = None,
) -> dict[str, float]:
    """FID between ``num_images`` images of ``ground_truth_data`` (anything with ``images``
    and ``__len__``) and the images ``generate_function`` makes for them: 50,000 and DDIM's
    100 steps by default, as DyGA+SD's ``sampling-for-fid.sh``. ``weights``: the Inception
    file (default: where ``bench data download fid-inception`` puts it)."""
    del artifact_dir
    count = min(num_images, len(ground_truth_data))
    indices = random_state.choice(len(ground_truth_data), size=count, replace=False)
    seed = int(random_state.randint(2**31 - 1))
    # The run's device when the generator says which (bench's evaluation does); else CUDA
    # when there is one.
    default = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(getattr(generate_function, "device", default))
    network, network_id = feature_network(weights, device)

    def real_images(rows: np.ndarray) -> np.ndarray:
        return ground_truth_data.images(indices[rows])

    # Keyed by the real images themselves (dataset, crop, split and draw all show in them)
    # and the network: a changed file or option never reuses stale statistics.
    key = images_digest(real_images, count, batch_size)
    real = cached_statistics(
        cache_dir() / "fid" / f"real-{count}-{key}-{network_id}.npz",
        lambda: feature_statistics(image_features(real_images, count, network, batch_size, device)),
    )
    generated = feature_statistics(
        image_features(
            lambda rows: generate_function(indices[rows], seed + int(rows[0]), sample_steps),
            count,
            network,
            batch_size,
            device,
        )
    )
    return {"fid": frechet_distance(*generated, *real)}


def images_digest(images: Callable[[np.ndarray], np.ndarray], count: int, batch_size: int) -> str:
    """A short sha256 of ``images(indices)`` for indices 0..count-1, read in batches."""
    digest = hashlib.sha256()
    for start in range(0, count, batch_size):
        batch = images(np.arange(start, min(start + batch_size, count)))
        digest.update(np.ascontiguousarray(batch))
    return digest.hexdigest()[:16]


def weights_file(hyperparams: dict) -> Path:
    """The Inception file the settings name, or where `bench data download` puts it."""
    from bench.metrics.helpers.fid_inception import default_weights

    return Path(hyperparams["weights"]) if hyperparams.get("weights") else default_weights()


def check_weights(hyperparams: dict) -> None:
    """Before a run trains: the Inception file FID needs is where the settings say, so a
    missing download fails in a second, not after training."""
    from bench.metrics.helpers.fid_inception import missing_weights_message

    path = weights_file(hyperparams)
    if not path.is_file():
        raise BenchError(missing_weights_message(path))


def weights_record(hyperparams: dict) -> dict[str, str]:
    """What metrics.json keeps beside a score: the Inception file it was computed with."""
    path = weights_file(hyperparams)
    return {"inception_weights": path.name, "inception_sha256": file_digest(path)["sha256"]}


def feature_network(weights: str | None, device: torch.device) -> tuple[FeatureNetwork, str]:
    """The Inception network FID is defined with, on ``device``, and what identifies its
    weights in cache keys: the sha256 prefix every accepted file has. (Tests replace this
    with a small network.)"""
    from bench.metrics.helpers.fid_inception import FID_INCEPTION_SHA256_PREFIX, load_fid_inception

    network = load_fid_inception(Path(weights) if weights else None).to(device)
    return network, f"inception-{FID_INCEPTION_SHA256_PREFIX}"


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise BenchError(f"fid: statistics of different sizes ({mu1.shape} and {mu2.shape} means)")
    diff = mu1 - mu2
    # Fewer images than features make the product singular, and scipy warns of it; the
    # result is checked here instead (pytorch-fid's eps retry, then the imaginary part).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise BenchError(
                f"fid: the covariance root has an imaginary part of "
                f"{np.max(np.abs(covmean.imag)):.3g}; the statistics are not covariances"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``, ddof 1) of features (N, F), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2:
        raise BenchError(f"fid: needs at least 2 images for a covariance, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


@torch.no_grad()
def image_features(
    images: Callable[[np.ndarray], np.ndarray],
    count: int,
    network: FeatureNetwork,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Features (count, F) of ``images(indices)`` (uint8 (n, H, W, 3) or float in [0, 1])
    for indices 0..count-1, in batches on ``device``."""
    batches = []
    for start in range(0, count, batch_size):
        batch = np.asarray(images(np.arange(start, min(start + batch_size, count))))
        pixels = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2)
        pixels = pixels.float() / 255 if batch.dtype == np.uint8 else pixels.float()
        batches.append(network(pixels).double().cpu().numpy())
    return np.concatenate(batches)


def cached_statistics(
    path: Path, compute: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics stored at ``path`` (an .npz), computed and written atomically if absent:
    real-image statistics are computed once per dataset, split, count and weights."""
    if path.is_file():
        with np.load(path) as stored:
            return stored["mu"], stored["sigma"]
    mu, sigma = compute()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, mu=mu, sigma=sigma)
    return mu, sigma


def describe_protocol(hyperparams: dict) -> str:
    """What makes two FID numbers comparable, in a few words."""
    return f"{hyperparams['num_images']} images, {hyperparams['sample_steps']} sampler steps"


SPEC = MetricSpec(
    name="fid",
    function=compute_fid,
    version="1",
    higher_is_better=False,
    keys=("fid",),
    headline="fid",
    label="FID",
    protocol=describe_protocol,
    scores="generated",
    data="any",
    preflight=check_weights,
    provenance=weights_record,
)
