"""The method contract: what the training loop, the evaluator and the run store rely on."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from bench.errors import BenchError
from bench.methods.trainer import Batch, LossTrainer, Trainer


@dataclass
class MethodConfig:
    """Base of every method's config dataclass; ``name`` is the registered method name."""

    name: str = "?"


@dataclass
class ScoreSubset:
    """A second set of scores beside the full battery: some factors on some code dimensions
    (DisUnknown's unknown factors on its unknown code). The excluded factors are drawn at
    random as nuisances, and the dimensions are scored raw (no reduction)."""

    dims: tuple[int, int]  # [start, stop) of the flat code
    excluded_factors: list[str]
    description: str


@dataclass(frozen=True)
class Supervision:
    """How a weakly supervised method is supervised: the loop hands it these factors' labels
    (``Batch.labels``, in this order), the evaluator adds its score subsets, and reports
    mark its rows. An unsupervised method has none (``Method.supervision is None``), and no
    label ever reaches it."""

    labeled_factors: tuple[str, ...]
    # Further score sets by name: metrics.json holds them as ``<metric>/<name>``.
    score_subsets: dict[str, ScoreSubset] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The reports' words for it."""
        return f"weakly supervised (labels: {', '.join(self.labeled_factors)})"


@dataclass
class TrainingProgress:
    """What the training loop tells a method after each optimizer step."""

    step: int  # optimizer steps done
    epoch: int  # full passes over the dataset done
    epoch_ended: bool  # this step completed a pass
    images: Callable[[np.ndarray], torch.Tensor]  # dataset rows -> float (B, C, H, W) in [0, 1]
    num_images: int
    seed: int  # the run's seed
    total_steps: int = 0  # train.steps: the length of the whole run


@dataclass
class Stage:
    """A separately trained part a method builds on, such as the VQ first stage of a latent
    diffusion model. The runner trains it once per dataset and settings, caches it as an
    artifact keyed by their hash, and hands every method that asks for the same one the
    trained module (``Method.attach_stage``)."""

    name: str  # what the method calls it, and the artifact folder: "first_stage"
    method: str  # the registered method that trains it: "vq_autoencoder"
    method_config: dict  # that method's settings
    train: dict  # its train.* settings
    seed: int = 0  # shared by every seed of the methods that use it


class Method(nn.Module, metaclass=ABCMeta):
    """A trainable representation learner.

    Subclasses set ``config_class`` and implement ``encode`` and ``training_loss``, which the
    default trainer (``LossTrainer``) differentiates and steps; a method whose optimizers
    work otherwise returns its own ``Trainer`` from ``trainer``. Images are float tensors
    (B, C, H, W) in [0, 1]. Every random draw in training must come from the ``generator``
    it is given, so that a run is reproducible and resumes bit-identically.
    """

    config_class: ClassVar[type[MethodConfig]]
    # Latent units of the flat code, when each unit is several numbers (a token): how many
    # equal ones, or the widths of unequal ones in order (DiTi's time-step blocks); the
    # ``eval.reduce=pca1`` option reduces each unit to one scalar. None: a unit per number.
    code_units: int | list[int] | None = None
    # Labels it trains with, for a weakly supervised method; None: unsupervised.
    supervision: Supervision | None = None

    @classmethod
    def configure_for(
        cls, config: MethodConfig, dataset, rows: np.ndarray | None = None
    ) -> MethodConfig:
        """``config`` completed from the dataset before the method is built, ``rows`` being
        those it trains on (None: all), such as statistics of the training images; by
        default unchanged."""
        return config

    def __init__(self, config: MethodConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = config
        self.image_shape = image_shape  # H, W, C of the dataset's images

    @property
    @abstractmethod
    def representation_dim(self) -> int:
        """Length of the vector ``encode`` returns per image."""

    def trainer(self, train: DictConfig, device: torch.device) -> Trainer:
        """What steps this method's parameters under the run's ``train.*`` settings, once the
        method is on ``device``: by default the run's optimizer on ``training_loss``. A method
        with a second optimizer (FactorVAE's discriminator) returns
        ``LossTrainer(self, train, device, own={...})``."""
        return LossTrainer(self, train, device)

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor | dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The scalar loss to minimise and named values to log. A method with optimizers of
        its own (``LossTrainer``'s ``own``) returns a loss per optimizer instead:
        ``{"run": ...}`` for the run's optimizer, and one under each of its own's names."""
        raise NotImplementedError(f"{type(self).__name__} has no training_loss")

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The representation the metrics score: (B, representation_dim), without gradients."""

    def stages(self) -> list[Stage]:
        """What this method builds on, trained (or loaded from the cache) before it."""
        return []

    def attach_stage(self, name: str, stage: Method) -> None:
        """Take the trained ``stage`` declared as ``name`` by ``stages()``."""
        raise NotImplementedError(f"{type(self).__name__} declares no stage {name!r}")

    def after_step(self, progress: TrainingProgress) -> None:
        """After every optimizer step, in training mode: periodic work such as refits."""

    def log_values(self) -> dict[str, float]:
        """Values for this logged step's line of log.jsonl, gathered since the last logged
        step (then reset); kept in buffers, so a resumed run logs what an unbroken one does."""
        return {}

    def training_summary(self) -> dict[str, object]:
        """What a finished run's status.json should say about its training (plain values)."""
        return {}

    def deviations(self) -> list[str]:
        """Where these settings depart from the authors' released code, in plain words: the
        run records them and reports mark the row."""
        return []

    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] that the model generates for ``images`` (B, C, H, W)
        in [0, 1], as its authors sample for FID: conditioned on the images' representation,
        or B samples of the prior for a model that generates unconditionally. ``seed`` fixes
        the noise; ``steps``, a sampler's steps where it has them."""
        raise BenchError(
            f"{type(self).__name__} does not generate images, so it cannot be scored by fid"
        )

    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        """After evaluation: write PNGs of what the model does (samples, grids); default none."""
        return []
