"""The unconditional latent diffusion model: the second shared stage, which DisDiff freezes and
builds on (methods.md §2.1 stage 2; methods-pdae.md §4).

VQ first stage → an unconditional U-Net on its scaled latents (``unet.build_plain_unet``:
channels 64, 128, 256, 256, two ResBlocks per level, self-attention with 8 heads at the first
three resolutions and in the middle, scale-shift time conditioning, ResBlock resampling, no
dropout), LDM's schedule (1000 steps, 0.0015 → 0.0155), L1 loss on ε. The authors train it
with AdamW (weight decay 0.01) at 2e-6 × batch 128 = 2.56e-4 after a 10k-step warm-up.

It is a registered method (``ldm``) so it trains with the one training loop, but it is meant
to be a stage: a method declares it (``LDMStageConfig``), and the runner trains it once per
dataset and settings (itself on top of the cached first stage) and caches it. It has no
representation of its own: ``encode`` gives the flat scaled latents, as the first stage does.
Its pictures are unconditional DDIM samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bench.methods.base import Stage
from bench.methods.diffusion.latent import LatentDiffusionBase, LatentDiffusionBaseConfig
from bench.methods.diffusion.unet import PlainUNetConfig, build_plain_unet
from bench.methods.pictures import unconditional_samples
from bench.methods.trainer import Batch


@dataclass
class LDMConfig(LatentDiffusionBaseConfig):
    name: str = "ldm"
    unet: PlainUNetConfig = field(default_factory=PlainUNetConfig)
    picture_samples: int = 16  # the samples grid: 2 rows of picture_samples / 2


@dataclass
class LDMStageConfig:
    """The LDM as a stage of another method, and how it is trained: the authors' AdamW at
    2.56e-4 with weight decay 0.01 after a 10k-step warm-up from 1e-6×, batch 128. Their
    code trains until stopped; ``steps`` is our choice. ``ema_decay`` is off: DisDiff loads
    the raw weights of the LDM checkpoint (its ``load_ema_ckpt: true`` takes the non-EMA
    keys, methods-pdae.md §0.6), so an EMA here would be trained and never used."""

    model: LDMConfig = field(default_factory=LDMConfig)
    steps: int = 200_000
    batch_size: int = 128
    lr: float = 2.56e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10_000
    warmup_start: float = 1.0e-6
    ema_decay: float | None = None
    seed: int = 0

    def stage(self, name: str) -> Stage:
        train = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "optimizer": "adamw",
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
            "ema_decay": self.ema_decay,
            "precision": "fp32",  # the authors train in float32
        }
        return Stage(name, "ldm", asdict(self.model), train, self.seed)


class LatentDiffusion(LatentDiffusionBase):
    config_class = LDMConfig
    config: LDMConfig

    def __init__(self, config: LDMConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.unet = build_plain_unet(config.unet, self.latent_channels, self.latent_size)

    @property
    def representation_dim(self) -> int:
        return self.latent_channels * self.latent_size**2

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        steps, noise, noisy = self.noisy_latents(self.latents(batch.images), generator)
        predicted = self.unet(noisy, steps).sample
        return (predicted.float() - noise.float()).abs().mean(), {}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.latents(images).flatten(1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Unconditional DDIM samples (eta 0), as many as ``images`` (whose content is not
        used), from noise seeded by ``seed``."""
        noise = self.latent_noise(len(images), images.device, seed)
        return self.ddim_sample(lambda x, t: self.unet(x, t).sample, noise, steps)

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        self.eval()
        return unconditional_samples(self.generate, self.config.picture_samples, folder, device)
