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

What that released formula does (``mixing=released``, the default): the tokens end in a
ReLU, so about half their entries are exactly 0, each adds ~1e5 to the mean relative error,
and λ underflows to exactly 0.0: anchoring changes nothing, and ``dyga_sd`` trains exactly as
``sd``. The run logs λ (``dyga_lambda``, ``dyga_lambda_zero_fraction``) and says how many
steps anchored anything. ``mixing=annealed`` (registered as ``dyga_sd_annealed``) is the
anchoring of the authors' earlier compiled code, a deviation from the released one: the U-Net
sees λ·x̂ + (1 − λ)·(Gumbel-softmax assignment, τ = 1e-4, @ component means) in the
normalised space, with λ = 1 − step/steps, so the tokens move onto their anchors as training
ends.

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


class Mixing(str, enum.Enum):
    released = "released"  # the released code: λ·A + (1 − λ)·C, λ = 0.1·exp(−…): 0.0 in practice
    annealed = "annealed"  # earlier compiled code: λ·x̂ + (1 − λ)·assignment @ means, λ = 1 − t/T


class Representation(str, enum.Enum):
    tokens = "tokens"  # the anchored tokens; eval.reduce=pca1 makes them one scalar per unit
    scalars = "scalars"  # the encoder's raw scalars


@dataclass
class DyGAConfig(SplitPruneSchedule):
    enabled: bool = True
    mixing: Mixing = Mixing.released
    normalization: Normalization = Normalization.reference
    max_mixing: float = 0.1  # λ's ceiling (released)
    gumbel_tau: float = 1e-4  # the soft assignment's temperature (annealed)
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
        self.register_buffer("progress_fraction", torch.zeros(()))  # step / steps (annealed λ)
        # λ since the last log line and over the run: [sum of λ, steps, steps with λ == 0].
        self.register_buffer("lambda_window", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("lambda_totals", torch.zeros(3, dtype=torch.float64))
        self.told_inert = False

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

    def condition(
        self, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        dyga = self.config.dyga
        if not dyga.enabled:
            return tokens
        if dyga.mixing == Mixing.annealed:
            return self.annealed_condition(tokens, generator)
        if int(self.anchor_refits) == 0:
            return tokens  # before the first refit, the authors train without anchors
        anchors = self.nearest_anchors(tokens)
        mixing = self.mixing_weight(tokens, anchors)
        self.record_mixing(mixing)
        return mixing * anchors + (1 - mixing) * tokens

    def annealed_condition(
        self, tokens: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """λ·x̂ + (1 − λ)·(soft assignment @ means) in the normalised space, λ = 1 − step/steps.
        The assignment is a Gumbel-softmax sample at τ = gumbel_tau in training (noise from the
        run's generator) and its noiseless limit, the most likely component, in evaluation; at
        such a τ it carries no gradient, so it is computed without one."""
        normalised = self.normalise(tokens, over=(0, 2))
        if int(self.anchor_refits) == 0:
            return normalised
        mixing = (1 - self.progress_fraction).clamp(0, 1)
        self.record_mixing(mixing)
        with torch.no_grad():
            log_probs = joint_log_probs(normalised.detach().float().transpose(0, 1), self.anchors)
            if self.training and generator is not None:
                uniform = torch.rand(log_probs.shape, generator=generator, device=generator.device)
                log_probs = log_probs - torch.log(
                    -torch.log(uniform.to(log_probs).clamp_min(1e-20))
                )
            soft = torch.softmax(log_probs / self.config.dyga.gumbel_tau, dim=-1).nan_to_num(0.0)
            targets = torch.einsum("nbk,nkd->bnd", soft, self.anchor_means).to(tokens.dtype)
        return mixing * normalised + (1 - mixing) * targets

    def record_mixing(self, mixing: torch.Tensor) -> None:
        """Count λ of a training step: its sum, the steps, and the steps where it is 0."""
        if self.training:
            value = mixing.detach().double()
            step = torch.stack([value, torch.ones_like(value), (value == 0).double()])
            self.lambda_window += step
            self.lambda_totals += step

    def log_values(self) -> dict[str, float]:
        total, steps, zero = self.lambda_window.tolist()
        if not steps:
            return {}
        self.lambda_window.zero_()
        if zero == steps and not self.told_inert:
            self.told_inert = True
            tqdm.write(
                "DyGA: the anchoring weight λ is exactly 0 on every step, as in the authors' "
                "released code: anchoring changes nothing (method.dyga.mixing=annealed is the "
                "variant that acts)",
                file=sys.stderr,
            )
        return {"dyga_lambda": total / steps, "dyga_lambda_zero_fraction": zero / steps}

    def training_summary(self) -> dict[str, object]:
        if not self.config.dyga.enabled:
            return {}
        _, steps, zero = self.lambda_totals.tolist()
        return {
            "dyga": {
                "mixing": Mixing(self.config.dyga.mixing).value,
                "refits": int(self.anchor_refits),
                "steps_with_anchors": int(steps),
                "steps_with_lambda_zero": int(zero),
                "steps_anchoring_anything": int(steps - zero),
            }
        }

    def deviations(self) -> list[str]:
        dyga = self.config.dyga
        if dyga.enabled and dyga.mixing == Mixing.annealed:
            return [
                "method.dyga.mixing=annealed: the anchoring of the authors' earlier compiled "
                "code (λ·x̂ + (1 − λ)·assignment @ means, λ = 1 − step/steps), not their "
                "released formula"
            ]
        return []

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
        if progress.total_steps:
            self.progress_fraction.fill_(progress.step / progress.total_steps)
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
