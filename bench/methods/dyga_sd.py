"""DyGA+SD (Jun et al., WACV 2025): EncDiff-style token-conditioned latent diffusion with
Dynamic Gaussian Anchoring and Skip Dropout, as the authors' code trains it (methods.md §1).

One implementation, four registered names (configs/methods/*.yaml): ``dyga_sd`` (both),
``dyga`` (anchoring only), ``sd`` (Skip Dropout only), ``dyga_sd_base`` (neither: the
ablation's base row). ``method.dyga.enabled`` and ``method.skip_dropout.p`` are ordinary
overrides.

Encoder (``FeatureExtractor``): conv 7×7 s1 (64) → four conv 4×4 s2 (128, 256, 256, 256),
each with batch norm and ReLU → FC 4096 → 4096 → 256 → N=20 scalars; each scalar through its
own MLP 1 → 256 → 512 → 32 with ReLUs (the last one too) gives a 32-d token.

DyGA (``diffusion/anchoring.py``, methods.md §1.2) anchors the tokens before the U-Net sees
them and refits its per-unit Gaussian mixtures at each epoch end. What the released formula
does here (``mixing=released``, the default): the tokens end in a ReLU, so about half their
entries are exactly 0, each adds ~1e5 to the mean relative error, and λ underflows to
exactly 0.0: anchoring changes nothing, and ``dyga_sd`` trains exactly as ``sd``. The run logs
λ (``dyga_lambda``, ``dyga_lambda_zero_fraction``) and says how many steps anchored anything.
``mixing=annealed`` (registered as ``dyga_sd_annealed``) is the anchoring of the authors'
earlier compiled code, a labelled deviation.

Representation: the anchored tokens, reduced per unit by PCA(1) (``eval.reduce=pca1``); or
the raw encoder scalars (``representation=scalars``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.methods.base import TrainingProgress
from bench.methods.diffusion.anchoring import DyGAConfig, GaussianAnchoring
from bench.methods.diffusion.token_ldm import TokenDiffusion, TokenDiffusionConfig, UnitMLPs
from bench.methods.diffusion.unet import SkipDropoutConfig


class Representation(str, enum.Enum):
    tokens = "tokens"  # the anchored tokens; eval.reduce=pca1 makes them one scalar per unit
    scalars = "scalars"  # the encoder's raw scalars


@dataclass
class FeatureExtractorConfig:
    channels: int = 64  # d: conv widths d, 2d, 4d, 4d, 4d
    hidden: int = 4096  # the first fully connected layer
    token_widths: list[int] = field(default_factory=lambda: [256, 512])


@dataclass
class DyGASDConfig(TokenDiffusionConfig):
    name: str = "dyga_sd"
    encoder: FeatureExtractorConfig = field(default_factory=FeatureExtractorConfig)
    dyga: DyGAConfig = field(default_factory=DyGAConfig)
    skip_dropout: SkipDropoutConfig = field(default_factory=SkipDropoutConfig)
    representation: Representation = Representation.tokens


class FeatureExtractor(nn.Sequential):
    def __init__(self, in_channels: int, config: FeatureExtractorConfig, units: int) -> None:
        d = config.channels
        widths = [d, 2 * d, 4 * d, 4 * d, 4 * d]
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            kernel, stride, padding = (7, 1, 3) if i == 0 else (4, 2, 1)
            layers += [
                nn.Conv2d(in_channels, width, kernel, stride, padding),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            in_channels = width
        layers += [
            nn.Flatten(),
            nn.Linear(widths[-1] * 4 * 4, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 256),
            nn.ReLU(),
            nn.Linear(256, units),
        ]
        super().__init__(*layers)


class DyGASD(TokenDiffusion):
    config_class = DyGASDConfig
    config: DyGASDConfig

    def __init__(self, config: DyGASDConfig, image_shape: tuple[int, int, int]) -> None:
        if image_shape[:2] != (64, 64):
            raise ValueError(f"{config.name} needs 64×64 images, got {image_shape[:2]}")
        super().__init__(config, image_shape)
        units, dim = config.num_units, config.token_dim
        self.encoder = FeatureExtractor(image_shape[2], config.encoder, units)
        self.token_mlps = UnitMLPs(units, [*config.encoder.token_widths, dim], nn.ReLU, True)
        self.code_units = units if config.representation == Representation.tokens else None
        self.anchoring = GaussianAnchoring(config.dyga, units, dim)

    @property
    def representation_dim(self) -> int:
        if self.config.representation == Representation.scalars:
            return self.config.num_units
        return self.config.num_units * self.config.token_dim

    def condition(
        self, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.anchoring(tokens, generator)

    def after_step(self, progress: TrainingProgress) -> None:
        self.anchoring.after_step(progress, lambda x: self.tokens(self.scalars(x)), self)

    def log_values(self) -> dict[str, float]:
        return self.anchoring.log_values()

    def training_summary(self) -> dict[str, object]:
        return self.anchoring.training_summary()

    def deviations(self) -> list[str]:
        return self.anchoring.deviations()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Records saved before the anchoring became a component hold its buffers at the top.
        for name, _ in self.anchoring.named_buffers():
            if prefix + name in state_dict:
                state_dict[f"{prefix}anchoring.{name}"] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        scalars = self.scalars(images)
        if self.config.representation == Representation.scalars:
            return scalars
        return self.condition(self.tokens(scalars)).flatten(1)
