"""Dynamic Gaussian Anchoring (DyGA; Jun et al., WACV 2025, methods.md §1.2), as a component
any method with per-unit tokens can use: DyGA+SD on its 20 tokens, DisDiff (as a composition)
on its 6 units.

At each epoch end (or every ``refit_every`` steps) the dataset (a random 10% above 100k
images) is encoded with the current encoder in eval mode and, per unit, a full-covariance
Gaussian mixture is fitted from scratch on its tokens (``gmm``: 8 components, split, prune,
EM), after normalising them with one max and min over the unit. In every forward pass each
token is normalised the same way with the batch's max and min, hard-assigned to a component,
and mixed with that component's mean: C' = λ·A + (1 − λ)·C with one λ = 0.1·exp(−mean |(C −
A) / (C + 1e−6)|) per batch. The first epoch trains without anchors. The authors normalise
as (x − max)/(max − min), which puts tokens in [−1, 0] while C stays non-negative; their
numbers come from that, so it is the default (``normalization=reference``), with the evident
intent (x − min)/(max − min) as ``minmax``. The fitted mixtures are buffers, so they are in
every checkpoint and in the saved model.

``mixing=released`` (the default) is that formula; on DyGA+SD's ReLU tokens λ underflows to
exactly 0.0 (see ``dyga_sd``), and the component logs λ (``dyga_lambda``,
``dyga_lambda_zero_fraction``) so that a run shows it. ``mixing=annealed`` is the anchoring
of the authors' earlier compiled code, a deviation from the released one: the model sees
λ·x̂ + (1 − λ)·(Gumbel-softmax assignment, τ = 1e-4, @ component means) in the normalised
space, with λ = 1 − step/steps.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

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
    used_slots,
)


class Normalization(str, enum.Enum):
    reference = "reference"  # (x − max)/(max − min): the authors' code
    minmax = "minmax"  # (x − min)/(max − min)


class Mixing(str, enum.Enum):
    released = "released"  # the released code: λ·A + (1 − λ)·C, λ = 0.1·exp(−…): 0.0 in practice
    annealed = "annealed"  # earlier compiled code: λ·x̂ + (1 − λ)·assignment @ means, λ = 1 − t/T


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


# (B, C, H, W) images in [0, 1] -> (B, units, dim) tokens, without anchoring.
TokenEncoder = Callable[[torch.Tensor], torch.Tensor]


class GaussianAnchoring(nn.Module):
    """Per-unit Gaussian mixtures over (B, units, dim) tokens, and the anchoring of tokens."""

    def __init__(self, config: DyGAConfig, units: int, dim: int) -> None:
        super().__init__()
        self.config = config
        capacity = config.max_components
        self.register_buffer("anchor_means", torch.zeros(units, capacity, dim))
        self.register_buffer("anchor_covariances", torch.eye(dim).repeat(units, capacity, 1, 1))
        self.register_buffer("anchor_log_weights", torch.full((units, capacity), -math.inf))
        self.register_buffer("anchor_refits", torch.zeros((), dtype=torch.long))
        self.register_buffer("progress_fraction", torch.zeros(()))  # step / steps (annealed λ)
        # λ since the last log line and over the run: [sum of λ, steps, steps with λ == 0].
        self.register_buffer("lambda_window", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("lambda_totals", torch.zeros(3, dtype=torch.float64))
        self.told_inert = False
        # Host copies of what every forward pass branches on, so that a training step reads
        # nothing back from the device: set at each refit and whenever weights are loaded.
        self.refits, self.slots = 0, []

    def read_anchor_state(self, state: dict[str, torch.Tensor] | None = None) -> None:
        """Refresh the host copies of the refit count and the used component slots, from
        the buffers or from the ``state`` they are being loaded from."""
        refits = self.anchor_refits if state is None else state["anchor_refits"]
        log_weights = self.anchor_log_weights if state is None else state["anchor_log_weights"]
        self.refits = int(refits)
        self.slots = used_slots(Mixtures(self.anchor_means, self.anchor_covariances, log_weights))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        names = ("anchor_refits", "anchor_log_weights")
        if all(f"{prefix}{name}" in state_dict for name in names):
            self.read_anchor_state({name: state_dict[f"{prefix}{name}"] for name in names})

    @property
    def anchors(self) -> Mixtures:
        return Mixtures(self.anchor_means, self.anchor_covariances, self.anchor_log_weights)

    def normalise(self, tokens: torch.Tensor, over: tuple[int, ...]) -> torch.Tensor:
        """Each unit's tokens scaled by one max and min over the ``over`` axes."""
        high, low = tokens.amax(dim=over, keepdim=True), tokens.amin(dim=over, keepdim=True)
        origin = high if self.config.normalization == Normalization.reference else low
        return (tokens - origin) / (high - low + 1e-6)

    def forward(
        self, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The anchored tokens; ``generator`` (training only) for random draws."""
        dyga = self.config
        if not dyga.enabled:
            return tokens
        if dyga.mixing == Mixing.annealed:
            return self.annealed_condition(tokens, generator)
        if self.refits == 0:
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
        if self.refits == 0:
            return normalised
        mixing = (1 - self.progress_fraction).clamp(0, 1)
        self.record_mixing(mixing)
        with torch.no_grad(), torch.autocast(tokens.device.type, enabled=False):
            x = normalised.detach().float().transpose(0, 1)
            log_probs = joint_log_probs(x, self.anchors, self.slots)
            if self.training and generator is not None:
                uniform = torch.rand(log_probs.shape, generator=generator, device=generator.device)
                log_probs = log_probs - torch.log(
                    -torch.log(uniform.to(log_probs).clamp_min(1e-20))
                )
            soft = torch.softmax(log_probs / self.config.gumbel_tau, dim=-1).nan_to_num(0.0)
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
        if not self.config.enabled:
            return {}
        _, steps, zero = self.lambda_totals.tolist()
        return {
            "dyga": {
                "mixing": Mixing(self.config.mixing).value,
                "refits": int(self.anchor_refits),
                "steps_with_anchors": int(steps),
                "steps_with_lambda_zero": int(zero),
                "steps_anchoring_anything": int(steps - zero),
            }
        }

    def deviations(self) -> list[str]:
        dyga = self.config
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
        # In fp32 under autocast too, as the authors' fp32 code: bf16 products flip ~1% of
        # the hard assignments.
        with torch.autocast(tokens.device.type, enabled=False):
            normalised = self.normalise(tokens.float(), over=(0, 2)).transpose(0, 1)  # (N, B, D)
            nearest = joint_log_probs(normalised, self.anchors, self.slots).argmax(dim=-1)
        index = nearest[..., None].expand(-1, -1, tokens.shape[-1])
        return torch.gather(self.anchor_means, 1, index).transpose(0, 1).to(tokens.dtype)

    def mixing_weight(self, tokens: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """λ = max_mixing · exp(−mean |(C − A) / (C + 1e−6)|): one scalar for the batch, in
        (0, max_mixing] (exactly 0 only when the exponent underflows, as it does where many
        tokens are 0 and the reference normalisation puts anchors in [−1, 0])."""
        relative = ((tokens - anchors) / (tokens + 1e-6)).abs().mean()
        return self.config.max_mixing * torch.exp(-relative)

    def after_step(
        self, progress: TrainingProgress, encode_tokens: TokenEncoder, owner: nn.Module
    ) -> None:
        """After a training step: λ's schedule, and the refit when one is due (``owner``, the
        method, is put in eval mode while ``encode_tokens`` encodes the fitting images)."""
        dyga = self.config
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
            self.refit(progress, encode_tokens, owner)

    @torch.no_grad()
    def refit(
        self, progress: TrainingProgress, encode_tokens: TokenEncoder, owner: nn.Module
    ) -> None:
        """Fit every unit's mixture from scratch on tokens of the current encoder."""
        dyga, total = self.config, progress.num_images
        rng = np.random.default_rng([progress.seed, progress.step])
        count = total if total <= dyga.subsample_above else int(total * dyga.subsample_fraction)
        if dyga.max_fit_images is not None:
            count = min(count, dyga.max_fit_images)
        rows = np.sort(rng.choice(total, count, replace=False)) if count < total else None
        rows = np.arange(total) if rows is None else rows
        owner.eval()
        try:
            tokens = torch.cat(
                [
                    encode_tokens(progress.images(rows[i : i + 512])).float()
                    for i in range(0, len(rows), 512)
                ]
            )
        finally:
            owner.train()
        units = self.normalise(tokens.transpose(0, 1), over=(1, 2))  # (N units, images, D)
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        mixtures = fit_split_prune(units, dyga, generator)
        self.anchor_means.copy_(mixtures.means)
        self.anchor_covariances.copy_(mixtures.covariances)
        self.anchor_log_weights.copy_(mixtures.log_weights)
        self.anchor_refits += 1
        self.read_anchor_state()
        sizes = mixtures.num_components.tolist()
        tqdm.write(
            f"DyGA refit {self.refits} at step {progress.step} on {len(rows)} "
            f"images: components per unit {sizes}",
            file=sys.stderr,
        )
