"""The method contract: what the training loop, the evaluator and the run store rely on."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass
class MethodConfig:
    """Base of every method's config dataclass; ``name`` is the registered method name."""

    name: str = "?"


class Method(nn.Module, metaclass=ABCMeta):
    """A trainable representation learner.

    Subclasses set ``config_class`` and implement ``training_loss`` and ``encode``.
    Images are float tensors (B, C, H, W) in [0, 1]. Every random draw in
    ``training_loss`` must come from the ``generator`` it is given, so that a run is
    reproducible and resumes bit-identically.
    """

    config_class: ClassVar[type[MethodConfig]]

    def __init__(self, config: MethodConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = config
        self.image_shape = image_shape  # H, W, C of the dataset's images

    @property
    @abstractmethod
    def representation_dim(self) -> int:
        """Length of the vector ``encode`` returns per image."""

    @abstractmethod
    def training_loss(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss to minimise and named values to log."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The representation the metrics score: (B, representation_dim), without gradients."""
