"""A method and a metric from outside bench, as a third party adds them (README, "Adding a
method, a metric or a dataset"): registered through entry points, with no file of bench
edited. ``tests/test_plugin.py`` installs this as a distribution and runs it end to end.

The method is a linear autoencoder (code = W x, reconstruction = Wᵀ z, mean squared error);
the metric is the mean variance of the code's dimensions over random observations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.methods.base import Method, MethodConfig
from bench.methods.trainer import Batch
from bench.metrics.spec import MetricSpec
from bench.metrics.utils import obtain_representation


@dataclass
class LinearAutoencoderConfig(MethodConfig):
    name: str = "linear_autoencoder"
    num_latent: int = 4


class LinearAutoencoder(Method):
    config_class = LinearAutoencoderConfig

    def __init__(self, config: LinearAutoencoderConfig, image_shape: tuple[int, int, int]):
        super().__init__(config, image_shape)
        height, width, channels = image_shape
        self.weight = nn.Parameter(torch.zeros(config.num_latent, height * width * channels))
        # The initial weights come from torch's generator, seeded by the loop per run.
        nn.init.normal_(self.weight, std=0.01)

    @property
    def representation_dim(self) -> int:
        return self.config.num_latent

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch.images.flatten(1)
        reconstruction = (x @ self.weight.t()) @ self.weight
        return (reconstruction - x).pow(2).mean(), {}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight.t()


def compute_code_variance(
    ground_truth_data,
    representation_function,
    random_state: np.random.RandomState,
    artifact_dir: str | None = None,
    num_points: int = 256,
    batch_size: int = 64,
) -> dict[str, float]:
    """The mean over code dimensions of their variance on ``num_points`` observations."""
    del artifact_dir
    observations = ground_truth_data.sample_observations(num_points, random_state)
    codes = obtain_representation(observations, representation_function, batch_size)
    return {"mean_variance": float(np.var(codes, axis=1).mean())}


SPEC = MetricSpec(
    name="code_variance",
    function=compute_code_variance,
    version="1",
    higher_is_better=True,
    keys=("mean_variance",),
    headline="mean_variance",
    label="Code var.",
)
