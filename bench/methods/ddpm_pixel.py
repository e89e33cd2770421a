"""A pixel-space DDPM: the frozen diffusion model DiTi (and PDAE) build on, as a shared stage
(methods-pdae.md §1).

PDAE's U-Net template as diffusers' ``UNet2DModel`` (``unet.build_plain_unet``): ResBlock
resampling, scale-shift time conditioning, zero-initialised outputs, GroupNorm(32); linear
β 1e-4 → 0.02 over 1000 steps, ε-prediction, unweighted MSE with t uniform (PDAE's regular
trainer). The authors' 64-px configuration is not public (its ``config.yml`` sits in a
Google-Drive folder): the default is the most likely one, Diff-AE's 64-px network — base 64,
multipliers 1, 2, 4, 8, two ResBlocks per level, self-attention at the 16×16 resolution
(downsample factor 4) with one head, dropout 0.1 — every part of it a setting
(``method.unet.*``). The weights DiTi freezes are the EMA's (PDAE exports ``ema_denoise_fn``).

It is a registered method (``ddpm_pixel``) so it trains with the one training loop; a method
declares it as a stage (``DDPMStageConfig``) and the runner trains it once per dataset and
settings and caches it. It has no representation of its own: ``encode`` gives the flat image
in [−1, 1]. Its pictures are DDIM samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from bench.methods.base import Method, MethodConfig, Stage
from bench.methods.diffusion.schedule import ddpm_scheduler, noise_for_training
from bench.methods.diffusion.unet import PlainUNetConfig, build_plain_unet
from bench.methods.pictures import unconditional_samples
from bench.methods.trainer import Batch


def pixel_unet_config() -> PlainUNetConfig:
    return PlainUNetConfig(
        channels=[64, 128, 256, 512], attention_resolutions=[4], heads=1, dropout=0.1
    )


@dataclass
class PixelDDPMConfig(MethodConfig):
    name: str = "ddpm_pixel"
    unet: PlainUNetConfig = field(default_factory=pixel_unet_config)
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sample_steps: int = 100  # DDIM steps of the samples picture
    picture_samples: int = 16


@dataclass
class DDPMStageConfig:
    """The pixel DDPM as a stage, and how it is trained: Diff-AE's 64-px recipe (the authors'
    is not published): Adam at 1e-4, batch 128, gradient clipping at 1, EMA 0.9999 without
    warm-up (PDAE's), 72M images for CelebA64 = 562,500 steps."""

    model: PixelDDPMConfig = field(default_factory=PixelDDPMConfig)
    steps: int = 562_500
    batch_size: int = 128
    lr: float = 1e-4
    grad_clip: float | None = 1.0
    ema_decay: float = 0.9999
    seed: int = 0

    def stage(self, name: str) -> Stage:
        train = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "optimizer": "adam",
            "lr": self.lr,
            "grad_clip": self.grad_clip,
            "ema_decay": self.ema_decay,
            "ema_modules": ["unet"],
            "ema_warmup": False,
            "precision": "fp32",
        }
        return Stage(name, "ddpm_pixel", asdict(self.model), train, self.seed)


class PixelDDPM(Method):
    config_class = PixelDDPMConfig
    config: PixelDDPMConfig

    def __init__(self, config: PixelDDPMConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.unet = build_plain_unet(config.unet, image_shape[2], image_shape[0])
        self.scheduler = ddpm_scheduler(
            config.timesteps, "linear", config.beta_start, config.beta_end
        )

    @property
    def representation_dim(self) -> int:
        height, width, channels = self.image_shape
        return height * width * channels

    def noisy_images(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(timesteps, noise, noised images in [−1, 1]) for a training step."""
        return noise_for_training(self.scheduler, images * 2 - 1, generator)

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        steps, noise, noisy = self.noisy_images(batch.images, generator)
        predicted = self.unet(noisy, steps).sample
        return (predicted.float() - noise.float()).pow(2).mean(), {}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (images * 2 - 1).flatten(1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Unconditional DDIM samples (eta 0, x0 clipped as PDAE samples), as many as
        ``images`` (whose content is not used), from noise seeded by ``seed``."""
        height, _, channels = self.image_shape
        shape = (len(images), channels, height, height)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(images.device)
        ddim = DDIMScheduler.from_config(self.scheduler.config, clip_sample=True)
        ddim.set_timesteps(steps or self.config.sample_steps, device=images.device)
        for step in ddim.timesteps:
            predicted = self.unet(x, step.expand(len(x))).sample
            x = ddim.step(predicted, step, x, eta=0.0, use_clipped_model_output=True).prev_sample
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        self.eval()
        return unconditional_samples(self.generate, self.config.picture_samples, folder, device)
