"""DyGA+SD (Jun et al., WACV 2025): EncDiff-style token-conditioned latent diffusion with
Dynamic Gaussian Anchoring and Skip Dropout, as the authors' code trains it (methods.md §1).

One implementation, four registered names (configs/methods/*.yaml): ``dyga_sd`` (both),
``dyga`` (anchoring only), ``sd`` (Skip Dropout only), ``dyga_sd_base`` (neither: the
ablation's base row). ``method.dyga.enabled`` and ``method.skip_dropout.p`` are ordinary
overrides.

Encoder (``FeatureExtractor``): conv 7×7 s1 (64) → four conv 4×4 s2 (128, 256, 256, 256),
each with batch norm and ReLU → FC 4096 → 4096 → 256 → N=20 scalars; each scalar through its
own MLP 1 → 256 → 512 → 32 with ReLUs (the last one too) gives a 32-d token.

DyGA (methods.md §1.2): at each epoch end the dataset (a random 10% above 100k images) is
encoded with the current encoder in eval mode and, per unit, a full-covariance Gaussian
mixture is fitted from scratch on its tokens (``diffusion.gmm``: 8 components, split, prune,
EM), after normalising them with one max and min over the unit. In every forward pass each
token is normalised the same way with the batch's max and min, hard-assigned to a component,
and mixed with that component's mean: C' = λ·A + (1 − λ)·C with one λ = 0.1·exp(−mean |(C −
A) / (C + 1e−6)|) per batch. The first epoch trains without anchors. The authors normalise
as (x − max)/(max − min), which puts tokens in [−1, 0] while C stays non-negative; their
numbers come from that, so it is the default (``normalization=reference``), with the evident
intent (x − min)/(max − min) as ``minmax``. The fitted mixtures are buffers, so they are in
every checkpoint and in the saved model.

Representation: the anchored tokens, reduced per unit by PCA(1) (``eval.reduce=pca1``); or
the raw encoder scalars (``representation=scalars``).
"""

from __future__ import annotations

import enum
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bench.methods.base import TrainingProgress
from bench.methods.diffusion.gmm import (
    Mixtures,
    SplitPruneSchedule,
    fit_split_prune,
    joint_log_probs,
)
from bench.methods.diffusion.token_ldm import TokenDiffusion, TokenDiffusionConfig, UnitMLPs
from bench.methods.diffusion.unet import SkipDropoutConfig


class Normalization(str, enum.Enum):
    reference = "reference"  # (x − max)/(max − min): the authors' code
    minmax = "minmax"  # (x − min)/(max − min)


class Representation(str, enum.Enum):
    tokens = "tokens"  # the anchored tokens; eval.reduce=pca1 makes them one scalar per unit
    scalars = "scalars"  # the encoder's raw scalars


@dataclass
class DyGAConfig(SplitPruneSchedule):
    enabled: bool = True
    normalization: Normalization = Normalization.reference
    max_mixing: float = 0.1  # λ's ceiling
    refit_every: int | None = None  # steps between refits; null: at each epoch end
    subsample_above: int = 100_000  # datasets larger than this are fitted on a fraction
    subsample_fraction: float = 0.1
    max_fit_images: int | None = None  # a cap on the images encoded per refit (CPU presets)


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
        units, dim, capacity = config.num_units, config.token_dim, config.dyga.max_components
        self.encoder = FeatureExtractor(image_shape[2], config.encoder, units)
        self.token_mlps = UnitMLPs(units, [*config.encoder.token_widths, dim], nn.ReLU, True)
        self.code_units = units if config.representation == Representation.tokens else None
        self.register_buffer("anchor_means", torch.zeros(units, capacity, dim))
        self.register_buffer("anchor_covariances", torch.eye(dim).repeat(units, capacity, 1, 1))
        self.register_buffer("anchor_log_weights", torch.full((units, capacity), -math.inf))
        self.register_buffer("anchor_refits", torch.zeros((), dtype=torch.long))

    @property
    def representation_dim(self) -> int:
        if self.config.representation == Representation.scalars:
            return self.config.num_units
        return self.config.num_units * self.config.token_dim

    @property
    def anchors(self) -> Mixtures:
        return Mixtures(self.anchor_means, self.anchor_covariances, self.anchor_log_weights)

    def normalise(self, tokens: torch.Tensor, over: tuple[int, ...]) -> torch.Tensor:
        """Each unit's tokens scaled by one max and min over the ``over`` axes."""
        high, low = tokens.amax(dim=over, keepdim=True), tokens.amin(dim=over, keepdim=True)
        origin = high if self.config.dyga.normalization == Normalization.reference else low
        return (tokens - origin) / (high - low + 1e-6)

    def condition(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.config.dyga.enabled or int(self.anchor_refits) == 0:
            return tokens  # before the first refit, the authors train without anchors
        anchors = self.nearest_anchors(tokens)
        mixing = self.mixing_weight(tokens, anchors)
        return mixing * anchors + (1 - mixing) * tokens

    @torch.no_grad()
    def nearest_anchors(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) mean of the component each (batch-normalised) token is assigned to."""
        normalised = self.normalise(tokens.float(), over=(0, 2)).transpose(0, 1)  # (N, B, D)
        nearest = joint_log_probs(normalised, self.anchors).argmax(dim=-1)  # (N, B)
        index = nearest[..., None].expand(-1, -1, tokens.shape[-1])
        return torch.gather(self.anchor_means, 1, index).transpose(0, 1).to(tokens.dtype)

    def mixing_weight(self, tokens: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """λ = max_mixing · exp(−mean |(C − A) / (C + 1e−6)|): one scalar for the batch, in
        (0, max_mixing] (exactly 0 only when the exponent underflows, as it does where many
        tokens are 0 and the reference normalisation puts anchors in [−1, 0])."""
        relative = ((tokens - anchors) / (tokens + 1e-6)).abs().mean()
        return self.config.dyga.max_mixing * torch.exp(-relative)

    def after_step(self, progress: TrainingProgress) -> None:
        dyga = self.config.dyga
        if not dyga.enabled:
            return
        due = (
            progress.epoch_ended
            if dyga.refit_every is None
            else progress.step % dyga.refit_every == 0
        )
        if due:
            self.refit(progress)

    @torch.no_grad()
    def refit(self, progress: TrainingProgress) -> None:
        """Fit every unit's mixture from scratch on tokens of the current encoder."""
        dyga, total = self.config.dyga, progress.num_images
        rng = np.random.default_rng([progress.seed, progress.step])
        count = total if total <= dyga.subsample_above else int(total * dyga.subsample_fraction)
        if dyga.max_fit_images is not None:
            count = min(count, dyga.max_fit_images)
        rows = np.sort(rng.choice(total, count, replace=False)) if count < total else None
        rows = np.arange(total) if rows is None else rows
        self.eval()
        try:
            tokens = torch.cat(
                [
                    self.tokens(self.scalars(progress.images(rows[i : i + 512]))).float()
                    for i in range(0, len(rows), 512)
                ]
            )
        finally:
            self.train()
        units = self.normalise(tokens.transpose(0, 1), over=(1, 2))  # (N units, images, D)
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        mixtures = fit_split_prune(units, dyga, generator)
        self.anchor_means.copy_(mixtures.means)
        self.anchor_covariances.copy_(mixtures.covariances)
        self.anchor_log_weights.copy_(mixtures.log_weights)
        self.anchor_refits += 1
        sizes = mixtures.num_components.tolist()
        tqdm.write(
            f"DyGA refit {int(self.anchor_refits)} at step {progress.step} on {len(rows)} "
            f"images: components per unit {sizes}",
            file=sys.stderr,
        )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        scalars = self.scalars(images)
        if self.config.representation == Representation.scalars:
            return scalars
        return self.condition(self.tokens(scalars)).flatten(1)
