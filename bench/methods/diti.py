"""DiTi (Yue et al., ICLR 2024) as its official code trains it (yue-zhongqi/diti @ca4ed6c,
config/celeba64/diti64.yml; methods.md §3 with the corrections of methods-pdae.md §1–§3).

Two stages: a pixel-space DDPM (``ddpm_pixel.py``), shared and cached → DiTi on the frozen
DDPM:

- ``CELEBA64Encoder`` (1,487,104 parameters): conv 3×3 s2 (3 → 64), GN, SiLU, conv s2 (→ 128),
  self-attention (4 heads, zero-initialised output), GN, SiLU, conv s2, GN, SiLU, conv s2, GN,
  SiLU, flatten 2048, Linear → 512.
- Time-step-specific subsets: t → block ⌊t/(1000/64)⌋ of k = 64; the blocks fall into five
  stages by their first timestep (t < 50, 100, 300, 500, 1000), each stage's dims (10, 25, 327,
  100, 50) shared out evenly over its blocks, the last block of a stage taking the remainder
  (``block_ends``). Block i owns dims [end(i−1), end(i)); at time t the decoder sees the
  cumulative mask z ⊙ [0, end(idx(t))) (``mode=base``); ``stop_grad`` feeds sg(z) on the
  older dims and z on the block's own, so that only the newest subset learns at t; ``dual``
  adds both losses.
- PDAE's gradient-field decoder (``diffusion/gradient_field.py``) with condition
  label_emb(z ⊙ mask), label_emb = Linear(512 → 4·base) (its bias makes masked dims enter as
  zeros, not vanish), the frozen model's time embedding.
- Loss: w_t·(ε − (ε_θ + k_t·g))², w_t = SNR_t^0.1/(1 + SNR_t), k_t PDAE's training coefficient.

Training (configs/methods/diti.yaml): Adam (no weight decay) at the effective 2e-4 (1e-4 ×
local batch 64 / 32 on the README's two GPUs), global batch 128, EMA 0.9999 without warm-up
over the encoder, the decoder and label_emb; 38M images (296,875 steps). DiTi's SSL branch
runs with weight 0 in the authors' code and is left out: it changes no number.

Representation (DiTi has no units; ``representation``): ``blocks`` (each of the 64 blocks'
dims by PCA(1): 64 scalars, the default), ``stages`` (each stage's dims by PCA(1): 5) or
``raw`` (the 512 numbers; score it with ``eval.reduce=none``). The EMA encoder is scored, as
the authors' probe (``--ema``) does.

Pictures: the counterfactual grid — image A with one stage's dims taken from image B, per
stage — by masked DDIM (the decoder sees the blocks up to idx(t) at each t) with PDAE's
sampling coefficient ε_θ − √(1 − ᾱ_t)·g, x0 clipped to [−1, 1] and ε recomputed from it,
after a DDIM inversion of A with A's own code, up to ᾱ = 0 as the authors'.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from bench.methods.base import MethodConfig
from bench.methods.ddpm_pixel import DDPMStageConfig, PixelDDPM
from bench.methods.diffusion.gradient_field import (
    GradientFieldDecoder,
    OnFrozenModel,
    frozen_pass,
)
from bench.methods.pictures import Grid, picture_images, write_png
from bench.methods.trainer import Batch

# DDIM targets past the schedule's ends, DiTi's tags: x_0 (ᾱ = 1) and x_T+1 (ᾱ = 0).
ALPHA_ONE, ALPHA_ZERO = -1, -2


class Mode(str, enum.Enum):
    base = "base"  # z ⊙ mask[idx(t)]
    stop_grad = "stop_grad"  # sg(z) on the older blocks, z on the newest
    dual = "dual"  # the sum of both losses


class Representation(str, enum.Enum):
    blocks = "blocks"  # PCA(1) per time-step block: k scalars
    stages = "stages"  # PCA(1) per stage: one scalar per stage
    raw = "raw"  # the encoder's output as it is


@dataclass
class DiTiConfig(MethodConfig):
    name: str = "diti"
    ddpm: DDPMStageConfig = field(default_factory=DDPMStageConfig)
    latent_dim: int = 512
    blocks: int = 64  # k
    stages: list[int] = field(default_factory=lambda: [50, 100, 300, 500, 1000])  # stage ends (t)
    dims_per_stage: list[int] = field(default_factory=lambda: [10, 25, 327, 100, 50])
    mode: Mode = Mode.base
    snr_gamma: float = 0.1  # w_t = SNR_t^γ / (1 + SNR_t)
    representation: Representation = Representation.blocks
    # Pictures written with each run.
    sample_steps: int = 100  # DDIM steps of inversion and of generation
    picture_pairs: int = 4  # columns of the counterfactual grid


def block_index(timesteps: int, blocks: int) -> np.ndarray:
    """t → its block: ⌊t / (timesteps / blocks)⌋ (DiTi's ``t_to_idx`` without k_per_stage)."""
    return np.array([int(t / (timesteps / blocks)) for t in range(timesteps)])


def block_ends(
    timesteps: int, blocks: int, stages: list[int], dims_per_stage: list[int]
) -> list[int]:
    """end(i): the code dims [0, end(i)) that block i and the blocks before it own, as DiTi's
    ``get_mask_end_dim`` computes them: a block belongs to the stage of its first timestep,
    each stage's dims are shared out evenly over its blocks, its last block takes the rest."""
    index = block_index(timesteps, blocks)
    first_t = [int(np.flatnonzero(index == i)[0]) for i in range(blocks)]
    stage_of = [int(np.argmax(np.array(stages) > t)) for t in first_t]
    ends = []
    for i, stage in enumerate(stage_of):
        members = [j for j, s in enumerate(stage_of) if s == stage]
        before = sum(dims_per_stage[:stage])
        if i == members[-1]:
            ends.append(before + dims_per_stage[stage])
        else:
            share = int(dims_per_stage[stage] / len(members))
            ends.append(before + share * (members.index(i) + 1))
    return ends


class CelebA64Encoder(nn.Sequential):
    def __init__(self, in_channels: int, latent_dim: int) -> None:
        attention = Attention(
            128, heads=4, dim_head=32, norm_num_groups=32, residual_connection=True, bias=True
        )
        nn.init.zeros_(attention.to_out[0].weight)  # PDAE's zero-initialised proj_out
        nn.init.zeros_(attention.to_out[0].bias)
        super().__init__(
            nn.Conv2d(in_channels, 64, 3, 2, 1),
            nn.GroupNorm(32, 64),
            nn.SiLU(),
            nn.Conv2d(64, 128, 3, 2, 1),
            attention,
            nn.GroupNorm(32, 128),
            nn.SiLU(),
            nn.Conv2d(128, 128, 3, 2, 1),
            nn.GroupNorm(32, 128),
            nn.SiLU(),
            nn.Conv2d(128, 128, 3, 2, 1),
            nn.GroupNorm(32, 128),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, latent_dim),
        )


class DiTi(OnFrozenModel):
    config_class = DiTiConfig
    frozen = "ddpm"
    config: DiTiConfig

    def __init__(self, config: DiTiConfig, image_shape: tuple[int, int, int]) -> None:
        if image_shape[:2] != (64, 64):
            raise ValueError(f"diti needs 64×64 images, got {image_shape[:2]}")
        if sum(config.dims_per_stage) != config.latent_dim:
            raise ValueError(
                f"method.dims_per_stage sums to {sum(config.dims_per_stage)}, not "
                f"method.latent_dim={config.latent_dim}"
            )
        super().__init__(config, image_shape)
        self.ddpm = PixelDDPM(config.ddpm.model, image_shape).requires_grad_(False)
        timesteps = config.ddpm.model.timesteps
        self.encoder = CelebA64Encoder(image_shape[2], config.latent_dim)
        embedding_dim = self.ddpm.unet.time_embedding.linear_2.out_features
        self.label_emb = nn.Linear(config.latent_dim, embedding_dim)
        self.decoder = GradientFieldDecoder(self.ddpm.unet, embedding_dim)

        ends = block_ends(timesteps, config.blocks, config.stages, config.dims_per_stage)
        dims = torch.arange(config.latent_dim)
        end, start = torch.tensor(ends)[:, None], torch.tensor([0, *ends[:-1]])[:, None]
        self.register_buffer(
            "block_of_step", torch.from_numpy(block_index(timesteps, config.blocks)), False
        )
        self.register_buffer("masks", (dims < end).float(), False)  # [0, end(i))
        self.register_buffer("new_masks", ((dims >= start) & (dims < end)).float(), False)
        self.register_buffer("old_masks", (dims < start).float(), False)  # [0, end(i − 1))
        self.block_sizes = [e - s for s, e in zip([0, *ends[:-1]], ends, strict=True)]
        self.code_units = self._units()

        alphas_cumprod = self.register_field_coefficients()
        snr = alphas_cumprod / (1 - alphas_cumprod)
        self.register_buffer("weight", snr**config.snr_gamma / (1 + snr), False)
        self.register_buffer("alphas_cumprod", alphas_cumprod, False)

    def _units(self) -> list[int] | None:
        """How the 512 numbers split into the units ``eval.reduce=pca1`` reduces."""
        representation = Representation(self.config.representation)
        if representation == Representation.blocks:
            return self.block_sizes
        if representation == Representation.stages:
            return list(self.config.dims_per_stage)
        return None

    @property
    def representation_dim(self) -> int:
        return self.config.latent_dim

    # -- the model ----------------------------------------------------------------------
    def field(
        self, noisy: torch.Tensor, steps: torch.Tensor, condition: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε_θ, g) for masked codes ``condition``."""
        features = frozen_pass(self.ddpm.unet, noisy, steps)
        return features.prediction, self.decoder(
            features, features.embedding, self.label_emb(condition)
        )

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch.images
        z = self.encoder(images * 2 - 1)
        steps, noise, noisy = self.ddpm.noisy_images(images, generator)
        block = self.block_of_step[steps]
        conditions = []
        if self.config.mode in (Mode.base, Mode.dual):
            conditions.append(z * self.masks[block])
        if self.config.mode in (Mode.stop_grad, Mode.dual):
            conditions.append(z.detach() * self.old_masks[block] + z * self.new_masks[block])
        weight = self.weight[steps][:, None, None, None]
        shift = self.mean_shift[steps][:, None, None, None]
        loss = 0.0
        for condition in conditions:
            prediction, field = self.field(noisy, steps, condition)
            error = noise.float() - (prediction + shift * field).float()
            loss = loss + (weight * error.pow(2)).flatten(1).mean(1)
        return loss.mean(), {}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images * 2 - 1)

    # -- pictures -----------------------------------------------------------------------
    def ddim_schedule(self, steps: int | None = None) -> list[int]:
        """DiTi's DDIM timesteps: every 1000/S steps from 0 (S: ``sample_steps``)."""
        timesteps = self.config.ddpm.model.timesteps
        return list(range(0, timesteps, timesteps // (steps or self.config.sample_steps)))

    def ddim_step(self, x: torch.Tensor, t: int, to: int, z: torch.Tensor) -> torch.Tensor:
        """One DDIM step (eta 0) from t to ``to`` (``ALPHA_ONE``: ᾱ = 1, the last step of
        sampling; ``ALPHA_ZERO``: ᾱ = 0, the last of inversion), either way: ε = ε_θ −
        √(1 − ᾱ_t)·g(x, t, z ⊙ mask[idx(t)]), x0 from it clipped to [−1, 1] and ε recomputed
        from that x0 (PDAE's and DiTi's DDIM)."""
        steps = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        prediction, field = self.field(x, steps, z * self.masks[self.block_of_step[steps]])
        epsilon = prediction + self.guidance[t] * field
        alpha = self.alphas_cumprod[t]
        start = ((x - (1 - alpha).sqrt() * epsilon) / alpha.sqrt()).clamp(-1, 1)
        epsilon = (x - alpha.sqrt() * start) / (1 - alpha).sqrt()
        target = self.alphas_cumprod[to] if to >= 0 else alpha.new_tensor(float(to == ALPHA_ONE))
        return target.sqrt() * start + (1 - target).sqrt() * epsilon

    @torch.no_grad()
    def invert(self, images: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM inversion of images in [0, 1] to x_T, guided by their code: up
        the schedule, then a last step to ᾱ = 0 (DiTi's ``masked_guided_ddim``, whose x_T is
        the noise the sampler starts from)."""
        x, schedule = images * 2 - 1, self.ddim_schedule()
        for t, to in itertools.pairwise([*schedule, ALPHA_ZERO]):
            x = self.ddim_step(x, t, to, z)
        return x

    @torch.no_grad()
    def sample(
        self, noise: torch.Tensor, z: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        """Masked DDIM (eta 0) from x_T ``noise``: images in [0, 1]."""
        x, schedule = noise, self.ddim_schedule(steps)
        for i in reversed(range(len(schedule))):
            t, to = schedule[i], schedule[i - 1] if i > 0 else ALPHA_ONE
            x = self.ddim_step(x, t, to, z)
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Masked DDIM from fresh pixel noise, guided by the images' code."""
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        return self.sample(noise, self.encode(images), steps)

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        """Columns: pairs (A, B). Rows: A, B, A inverted and regenerated, then A with stage s's
        dims taken from B, for every stage s."""
        self.eval()
        images = picture_images(dataset, self.config.picture_pairs, device)
        a, b = images[0::2], images[1::2]
        z_a, z_b = self.encode(a), self.encode(b)
        noise = self.invert(a, z_a)
        rows = [a, b, self.sample(noise, z_a)]
        labels = ["A", "B", "A inverted, regenerated"]
        start = 0
        for stage, size in enumerate(self.config.dims_per_stage):
            swapped = z_a.clone()
            swapped[:, start : start + size] = z_b[:, start : start + size]
            rows.append(self.sample(noise, swapped))
            labels.append(f"A, stage {stage} of B")
            start += size
        picture = Grid(
            torch.stack(rows),
            "Counterfactuals: image A regenerated from its own noise with one stage's code "
            "dims taken from image B (a row per stage)",
            labels,
            [f"pair {k}" for k in range(len(a))],
        )
        return [write_png(folder / "counterfactual.png", picture)]
