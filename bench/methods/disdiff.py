"""DisDiff (Yang et al., NeurIPS 2023) as its official code trains it (ThomasMrY/DisDiff @c3ba0c7;
methods.md §2 with the corrections of methods-pdae.md §4).

Three stages: the VQ first stage → an unconditional LDM (``ldm.py``), both shared
and cached → DisDiff on top of the frozen LDM:

- ``Encoder4`` (d = 128) maps the image to 192 numbers: 6 units × 32.
- Per unit c, PDAE's gradient-field decoder (``diffusion/gradient_field.py``, fresh weights,
  zero outputs) gives g_c from the frozen U-Net's features, with the FiLM condition
  Linear(32 → 256)(z_c) and the time embedding emb + part_c, where part_c = Linear(128 → 256)
  of row c of the orthogonal P = expm(Wᵀ − W) (the authors' Padé routine returns exp(−(W −
  Wᵀ)); W 128×128 ~ N(0, 1), trained). The six passes run as one batch.
- L_diff = |ε − (ε_θ + k_t·Σ_c g_c)|, L1, with PDAE's training coefficient k_t.
- The disentangling loss (``dis_loss``, type "Z"), exactly as the code computes it: per image
  a unit c ~ U{0..5}; x̂0 from ε_θ alone and x̂0^c from ε_θ − √(1 − ᾱ_t)·g_c, both decoded by
  the VQ decoder without quantisation (the second with gradients) and encoded by a frozen
  copy of the current encoder in eval mode; per unit k, logits d(ẑ_k, z_k) − d(ẑ^c_k, z_k) and
  d(ẑ_k, ẑ^c_k) (z detached), two cross-entropies against c; a per-image weight w = mean((z0 −
  z0^c)²) that carries no gradient; L_dis = dis_weight·w·(CE + CE′). Its gradient reaches
  the decoder, the unit embeddings and, through z_c, the live encoder (the brief's "encoder
  only through L_diff" is wrong, methods-pdae.md §0.5), never the frozen U-Net or VQ model.
- dis_weight: the code always takes the command line's ``-dw`` (default 1.0) over the yaml;
  the README trains with ``-dw 0.05``, our default (the MPI3D yaml's 0.01 is overridden too).

Training (configs/methods/disdiff.yaml): AdamW, weight decay 0.01, 2.56e-4 after a 10k-step
warm-up, batch 128; EMA 0.9999 with LitEma's warm-up over the decoder and the unit embeddings
only; the live encoder (batch-norm running statistics) is scored: per-unit PCA(1) → 6 scalars
(``eval.reduce=pca1``), or on CelebA the 192 raw numbers, as the authors' TAD reads them.

Pictures: the swap grid (unit u of image B into image A, per unit) and a per-unit traversal
along the unit's first principal direction, by DDIM with the sampling coefficient
ε_θ − √(1 − ᾱ_t)·Σ_c g_c from fixed noise.

Compositions (the question of DyGA's authors' Table 3; off by default, each a labelled
deviation from DisDiff's code): ``dyga.enabled`` anchors the six 32-d units with DyGA
(``diffusion/anchoring.py``) before the decoder, the disentangling loss and the metrics see
them, as DyGA+SD anchors its tokens; ``skip_dropout.p`` drops channels of the frozen skips
that the trainable decoder reads (the frozen prediction keeps its own).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.base import MethodConfig, TrainingProgress
from bench.methods.diffusion.anchoring import DyGAConfig, GaussianAnchoring
from bench.methods.diffusion.encoder4 import Encoder4
from bench.methods.diffusion.gradient_field import (
    GradientFieldDecoder,
    OnFrozenModel,
    UNetFeatures,
    frozen_pass,
)
from bench.methods.diffusion.unet import SkipDropout, SkipDropoutConfig
from bench.methods.ldm import LatentDiffusion, LDMStageConfig
from bench.methods.pictures import (
    interchange_grid,
    percentile_sweep,
    picture_images,
    traversal_grid,
    write_png,
)
from bench.methods.trainer import Batch


@dataclass
class DisDiffConfig(MethodConfig):
    name: str = "disdiff"
    ldm: LDMStageConfig = field(default_factory=LDMStageConfig)
    encoder_channels: int = 128
    num_units: int = 6
    unit_dim: int = 32
    part_dim: int = 128  # W is part_dim × part_dim; row c of expm(Wᵀ − W) is unit c's part
    dis_weight: float = 0.05  # the README's -dw 0.05; 0 turns the disentangling loss off
    skip_dropout: SkipDropoutConfig = field(default_factory=lambda: SkipDropoutConfig(p=0.0))
    dyga: DyGAConfig = field(default_factory=lambda: DyGAConfig(enabled=False))
    # Pictures written with each run.
    sample_steps: int = 100  # DDIM steps
    picture_pairs: int = 6  # columns of the swap grid
    traversal_values: int = 8  # columns of the traversal grid


class UnitEmbeddings(nn.Module):
    """How the units enter the decoder: unit c's code through ``code`` (``repre_embed``) is
    the FiLM condition; ``part`` (``part_emb``) of row c of P = expm(Wᵀ − W) is added to the
    time embedding."""

    def __init__(self, unit_dim: int, part_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.code = nn.Linear(unit_dim, embedding_dim)
        self.part_latents = nn.Parameter(torch.randn(part_dim, part_dim))
        self.part = nn.Linear(part_dim, embedding_dim)

    def orthogonal(self) -> torch.Tensor:
        """P = expm(Wᵀ − W), orthogonal because Wᵀ − W is skew-symmetric."""
        return torch.linalg.matrix_exp(self.part_latents.T - self.part_latents)

    def forward(
        self, units: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(time embeddings, conditions), one row per (unit, image), the image fastest."""
        count = units.shape[1]
        parts = self.part(self.orthogonal()[:count])  # (N, E)
        times = (embedding[None] + parts[:, None]).flatten(0, 1)
        conditions = self.code(units.transpose(0, 1)).flatten(0, 1)
        return times, conditions


class DisDiff(OnFrozenModel):
    config_class = DisDiffConfig
    frozen = "ldm"
    config: DisDiffConfig

    def __init__(self, config: DisDiffConfig, image_shape: tuple[int, int, int]) -> None:
        if image_shape[:2] != (64, 64):
            raise ValueError(f"disdiff needs 64×64 images, got {image_shape[:2]}")
        super().__init__(config, image_shape)
        self.ldm = LatentDiffusion(config.ldm.model, image_shape).requires_grad_(False)
        units = config.num_units
        self.code_units = units
        self.encoder = Encoder4(image_shape[2], config.encoder_channels, units * config.unit_dim)
        time_embedding_dim = self.ldm.unet.time_embedding.linear_2.out_features
        self.decoder = GradientFieldDecoder(self.ldm.unet, time_embedding_dim)
        self.unit_embeddings = UnitEmbeddings(config.unit_dim, config.part_dim, time_embedding_dim)
        self.skip_dropout = SkipDropout(self.decoder, config.skip_dropout)
        self.anchoring = GaussianAnchoring(config.dyga, units, config.unit_dim)
        self.register_field_coefficients()

    @property
    def representation_dim(self) -> int:
        return self.config.num_units * self.config.unit_dim

    # -- the model ----------------------------------------------------------------------
    def units(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, unit_dim): the encoder's code of images in [0, 1], split into units."""
        return self.encoder(images * 2 - 1).unflatten(1, (self.config.num_units, -1))

    def code(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The units the decoder sees: anchored by DyGA when ``dyga.enabled``, else as encoded."""
        return self.anchoring(self.units(images), generator)

    def fields(self, features: UNetFeatures, units: torch.Tensor) -> torch.Tensor:
        """(B, N, C, H, W): g_c for every unit c, as one batch through the decoder."""
        times, conditions = self.unit_embeddings(units, features.embedding)
        field = self.decoder(features, times, conditions)
        return field.unflatten(0, (units.shape[1], len(units))).transpose(0, 1)

    def losses(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_diff, per-image L_dis) of a training batch."""
        steps, noise, noisy = self.ldm.noisy_latents(self.ldm.latents(images), generator)
        sampled = torch.randint(
            0, self.config.num_units, (len(images),), generator=generator, device=generator.device
        ).to(images.device)
        units = self.code(images, generator)
        features = frozen_pass(self.ldm.unet, noisy, steps)
        self.skip_dropout.generator = generator
        fields = self.fields(features, units)
        shift = self.mean_shift[steps][:, None, None, None] * fields.sum(1)
        diffusion = (noise.float() - (features.prediction + shift).float()).abs().mean()
        if self.config.dis_weight == 0:
            return diffusion, diffusion.new_zeros(len(images))
        chosen = fields[torch.arange(len(images), device=fields.device), sampled]
        return diffusion, self.disentangling_loss(noisy, steps, features, chosen, units, sampled)

    def disentangling_loss(
        self,
        noisy: torch.Tensor,
        steps: torch.Tensor,
        features: UNetFeatures,
        field: torch.Tensor,
        units: torch.Tensor,
        sampled: torch.Tensor,
    ) -> torch.Tensor:
        """Per-image L_dis (``dis_loss`` with dis_loss_type "Z") for the sampled units' fields."""
        judge = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        alphas = self.ldm.alphas_cumprod(steps)
        start = (noisy - (1 - alphas).sqrt() * features.prediction) / alphas.sqrt()
        with torch.no_grad():
            original = judge(self.ldm.decode_latents(start, quantize=False))
        shifted_epsilon = features.prediction + self.guidance[steps][:, None, None, None] * field
        shifted_start = (noisy - (1 - alphas).sqrt() * shifted_epsilon) / alphas.sqrt()
        shifted = judge(self.ldm.decode_latents(shifted_start, quantize=False))
        split = (len(units), self.config.num_units, -1)
        original, shifted, target = original.view(split), shifted.view(split), units.detach()
        logits = (original - target).norm(dim=-1) - (shifted - target).norm(dim=-1)
        between = (original - shifted).norm(dim=-1)
        cross_entropy = F.cross_entropy(logits, sampled, reduction="none") + F.cross_entropy(
            between, sampled, reduction="none"
        )
        weight = (start - shifted_start.detach()).pow(2).flatten(1).mean(1)
        return self.config.dis_weight * weight * cross_entropy

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        diffusion, disentangling = self.losses(batch.images, generator)
        disentangling = disentangling.mean()
        logs = {"loss_diffusion": diffusion.detach(), "loss_disentangling": disentangling.detach()}
        return diffusion + disentangling, logs

    def after_step(self, progress: TrainingProgress) -> None:
        self.anchoring.after_step(progress, self.units, self)

    def log_values(self) -> dict[str, float]:
        return self.anchoring.log_values()

    def training_summary(self) -> dict[str, object]:
        return self.anchoring.training_summary()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.code(images).flatten(1)

    def deviations(self) -> list[str]:
        found = []
        if self.config.dyga.enabled:
            found.append(
                "method.dyga.enabled=true: DyGA's anchoring of DisDiff's units, which DisDiff's "
                "code does not have"
            )
        if self.config.skip_dropout.p > 0:
            found.append(
                f"method.skip_dropout.p={self.config.skip_dropout.p}: Skip Dropout (DyGA+SD) on "
                "the skips DisDiff's decoder reads, which DisDiff's code does not have"
            )
        return found + self.anchoring.deviations()

    # -- pictures -----------------------------------------------------------------------
    def predict_epsilon(self, latents: torch.Tensor, steps: torch.Tensor, units: torch.Tensor):
        """The sampling prediction ε_θ − √(1 − ᾱ_t)·Σ_c g_c."""
        features = frozen_pass(self.ldm.unet, latents, steps)
        field = self.fields(features, units).sum(1)
        return features.prediction + self.guidance[steps][:, None, None, None] * field

    def sample(
        self, units: torch.Tensor, noise: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        """DDIM (eta 0) from latent ``noise`` guided by the units' gradient fields: images in
        [0, 1]."""
        return self.ldm.ddim_sample(
            lambda x, t: self.predict_epsilon(x, t, units),
            noise,
            steps or self.config.sample_steps,
        )

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Guided by the images' units, from fresh latent noise, by the pictures' DDIM."""
        noise = self.ldm.latent_noise(len(images), images.device, seed)
        return self.sample(self.code(images), noise, steps)

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        self.eval()
        images = picture_images(dataset, self.config.picture_pairs, device)
        units = self.code(images)
        noise = self.ldm.latent_noise(1, device)

        def generate(units: torch.Tensor) -> torch.Tensor:
            return self.sample(units, noise.expand(len(units), *noise.shape[1:]))

        return [
            write_png(folder / "swap.png", interchange_grid(images, units, generate)),
            write_png(
                folder / "traversal.png", traversal_grid(units[:1], self._sweep(units), generate)
            ),
        ]

    def _sweep(self, units: torch.Tensor) -> torch.Tensor:
        """(steps, N, unit_dim): each unit moved along its first principal direction over the
        picture images, from the 5th to the 95th percentile of its projections."""
        centre = units.mean(0)  # (N, D)
        centred = (units - centre).transpose(0, 1).float()  # (N, B, D)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[:, 0]  # (N, D)
        projections = torch.einsum("nbd,nd->bn", centred, direction)
        values = percentile_sweep(projections, self.config.traversal_values)  # (steps, N)
        return centre + values[..., None] * direction
