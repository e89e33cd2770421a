"""EncDiff (Yang et al., NeurIPS 2024) as its official code trains it (methods-more.md §4).

Not the same as ``dyga_sd_base``: the DisDiff encoder ``Encoder4`` (d=128: four conv 4×4 s2
with batch norm, the third without ReLU, two residual blocks, Linear 2048 → 20), per-unit
token MLPs 1 → 64 → 128 → 16 with ELUs and no final activation, 16-d tokens, no ResBlock
dropout, batch 128, lr 2e-6 × 128 = 2.56e-4 (LDM's ``scale_lr`` on one GPU) with a 10k-step
linear warm-up, and the 20 raw encoder scalars scored (no PCA, no anchoring). The noise
schedule, L1 ε-loss, U-Net sizes and VQ first stage are those of DyGA+SD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bench.methods.diffusion.encoder4 import Encoder4
from bench.methods.diffusion.token_ldm import TokenDiffusion, TokenDiffusionConfig, UnitMLPs
from bench.methods.diffusion.unet import UNetConfig


@dataclass
class EncDiffEncoderConfig:
    channels: int = 128
    token_widths: list[int] = field(default_factory=lambda: [64, 128])


@dataclass
class EncDiffConfig(TokenDiffusionConfig):
    name: str = "encdiff"
    encoder: EncDiffEncoderConfig = field(default_factory=EncDiffEncoderConfig)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(dropout=0.0))
    token_dim: int = 16


class EncDiff(TokenDiffusion):
    config_class = EncDiffConfig
    config: EncDiffConfig

    def __init__(self, config: EncDiffConfig, image_shape: tuple[int, int, int]) -> None:
        if image_shape[:2] != (64, 64):
            raise ValueError(f"encdiff needs 64×64 images, got {image_shape[:2]}")
        super().__init__(config, image_shape)
        units = config.num_units
        self.encoder = Encoder4(image_shape[2], config.encoder.channels, units)
        widths = [*config.encoder.token_widths, config.token_dim]
        self.token_mlps = UnitMLPs(units, widths, nn.ELU, final=False)

    @property
    def representation_dim(self) -> int:
        return self.config.num_units

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.scalars(images)
