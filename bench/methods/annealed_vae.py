"""AnnealedVAE (Burgess et al. 2018, "Understanding disentangling in β-VAE", Eq. 8) exactly
as disentanglement_lib trains it: reconstruction + γ·|KL − C|, the capacity C growing
linearly from 0 to ``c_max`` over ``iteration_threshold`` steps, then staying."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.base import TrainingProgress
from bench.methods.vae import VAE, VAEConfig


@dataclass
class AnnealedVAEConfig(VAEConfig):
    name: str = "annealed_vae"
    gamma: float = 1000.0
    c_max: float = 25.0
    iteration_threshold: int = 100000


def capacity(c_max: float, step: int | torch.Tensor, iteration_threshold: int) -> torch.Tensor:
    """min(c_max, c_max · step / threshold) (dlib ``anneal``), at the number of steps done."""
    step = torch.as_tensor(step, dtype=torch.float32)
    return torch.clamp(c_max * step / iteration_threshold, max=c_max)


class AnnealedVAE(VAE):
    config_class = AnnealedVAEConfig

    def __init__(self, config: AnnealedVAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        # dlib reads TensorFlow's global step: the steps done, checkpointed with the weights.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def regularizer(
        self, kl: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        target = capacity(c.c_max, self.steps_done, c.iteration_threshold).to(kl)
        return c.gamma * (kl - target).abs(), {"capacity": target}

    def after_step(self, progress: TrainingProgress) -> None:
        self.steps_done.fill_(progress.step)
