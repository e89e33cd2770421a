"""What the token-conditioned latent diffusion methods (DyGA+SD, EncDiff) share.

An image encoder gives N scalar latent units; each unit's scalar becomes a token; the tokens
condition a latent-diffusion U-Net through cross-attention, and the encoder learns only
through the denoising loss. Pieces, each swappable by a subclass:

- first stage: a frozen VQ autoencoder, trained once per dataset as a shared ``Stage``;
  diffusion runs on its pre-quantisation latents scaled by 1/std of the first training
  batch's latents (LDM's ``scale_by_std``);
- noise schedule: diffusers' ``DDPMScheduler``, 1000 steps, "scaled_linear" betas
  0.0015 → 0.0155 (LDM's "linear" schedule), ε-prediction, L1 loss on ε;
- ``scalars(x)`` and ``tokens(s)``: the subclass's encoder and per-unit token MLPs;
- ``condition(tokens)``: what the U-Net sees (DyGA's anchoring; identity by default).

Pictures: DDIM sampling (eta 0) from fixed noise conditioned on tokens, for a latent-
interchange grid (unit u of image B swapped into image A, per unit) and a traversal grid
(one unit's scalar swept over its range while the others stay).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from PIL import Image
from torch import nn

from bench.fileio import atomic_path
from bench.methods.base import Method, MethodConfig, Stage
from bench.methods.diffusion.unet import SkipDropout, SkipDropoutConfig, UNetConfig, build_unet
from bench.methods.diffusion.vq import VQAutoencoderConfig, build_vq_model


@dataclass
class FirstStageConfig:
    """The shared VQ first stage and how it is trained. The authors' training length is not
    in their code; lr and Adam betas are LDM's for VQ models (4.5e-6 × batch 128 ×
    accumulation 2, betas 0.5, 0.9), batch 256 = their 128 × 2 accumulated."""

    autoencoder: VQAutoencoderConfig = field(default_factory=VQAutoencoderConfig)
    steps: int = 50_000
    batch_size: int = 256
    lr: float = 1.152e-3
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    seed: int = 0


@dataclass
class TokenDiffusionConfig(MethodConfig):
    first_stage: FirstStageConfig = field(default_factory=FirstStageConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    skip_dropout: SkipDropoutConfig = field(default_factory=lambda: SkipDropoutConfig(p=0.0))
    num_units: int = 20
    token_dim: int = 32
    timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0155
    # Pictures written with each run.
    sample_steps: int = 100  # DDIM steps (the authors' sampling scripts use 100)
    picture_pairs: int = 6  # columns of the interchange grid
    traversal_values: int = 8  # columns of the traversal grid


class TokenDiffusion(Method):
    """Base of the token-conditioned LDMs; subclasses build ``encoder`` and ``token_mlps``."""

    config: TokenDiffusionConfig

    def __init__(self, config: TokenDiffusionConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        autoencoder = config.first_stage.autoencoder
        self.first_stage = build_vq_model(autoencoder, image_shape).requires_grad_(False)
        latent_size = image_shape[0] // 2 ** (len(autoencoder.channels) - 1)
        self.unet = build_unet(
            config.unet, autoencoder.latent_channels, latent_size, config.token_dim
        )
        self.skip_dropout = SkipDropout(self.unet, config.skip_dropout)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.timesteps,
            beta_schedule="scaled_linear",
            beta_start=config.beta_start,
            beta_end=config.beta_end,
            prediction_type="epsilon",
            clip_sample=False,
        )
        self.register_buffer("latent_scale", torch.zeros(()))  # 0: not measured yet

    # -- stages -------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        first = self.config.first_stage
        train = {
            "steps": first.steps,
            "batch_size": first.batch_size,
            "optimizer": "adam",
            "lr": first.lr,
            "adam_beta1": first.adam_beta1,
            "adam_beta2": first.adam_beta2,
        }
        return [
            Stage("first_stage", "vq_autoencoder", asdict(first.autoencoder), train, first.seed)
        ]

    def attach_stage(self, name: str, stage: Method) -> None:
        if name != "first_stage":
            super().attach_stage(name, stage)
        self.first_stage.load_state_dict(stage.vq.state_dict())

    def train(self, mode: bool = True) -> TokenDiffusion:
        super().train(mode)
        self.first_stage.eval()  # frozen, always in inference mode
        return self

    # -- the model ----------------------------------------------------------------------
    def scalars(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N) latent units of images in [0, 1]."""
        return self.encoder(images * 2 - 1)

    def tokens(self, scalars: torch.Tensor) -> torch.Tensor:
        """(B, N, token_dim): each unit's scalar through its own MLP."""
        return self.token_mlps(scalars)

    def condition(
        self, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The tokens the U-Net attends to; ``generator`` (training only) for random draws."""
        return tokens

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The scaled first-stage latents, in float32 even under autocast: they are the
        diffusion targets, so bf16 rounding here would be noise the model must learn."""
        with torch.autocast(images.device.type, enabled=False):
            latents = self.first_stage.encode(images.float() * 2 - 1).latents
            if self.latent_scale == 0:  # LDM's scale_by_std, from the first training batch
                self.latent_scale.fill_(1.0 / latents.std())
            return latents * self.latent_scale

    def training_loss(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        latents = self.latents(images)
        batch = len(latents)
        device = generator.device
        steps = torch.randint(
            0, self.config.timesteps, (batch,), generator=generator, device=device
        )
        noise = torch.randn(latents.shape, generator=generator, device=device)
        steps, noise = steps.to(latents.device), noise.to(latents.device)
        with torch.autocast(latents.device.type, enabled=False):  # the schedule in float32
            noisy = self.scheduler.add_noise(latents, noise, steps)
        context = self.condition(self.tokens(self.scalars(images)), generator)
        self.skip_dropout.generator = generator
        predicted = self.unet(noisy, steps, encoder_hidden_states=context).sample
        loss = (predicted.float() - noise.float()).abs().mean()
        return loss, {}

    # -- pictures -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDIM (eta 0) from ``noise`` conditioned on ``context``: images in [0, 1]."""
        ddim = DDIMScheduler.from_config(
            self.scheduler.config, steps_offset=1, set_alpha_to_one=False
        )
        ddim.set_timesteps(self.config.sample_steps, device=noise.device)
        latents = noise
        for step in ddim.timesteps:
            predicted = self.unet(latents, step, encoder_hidden_states=context).sample
            latents = ddim.step(predicted, step, latents, eta=0.0).prev_sample
        decoded = self.first_stage.decode(latents / self.latent_scale).sample
        return ((decoded + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        self.eval()
        rng = np.random.default_rng(0)
        pairs = self.config.picture_pairs
        rows = rng.choice(len(dataset), 2 * pairs, replace=False)
        images = to_tensor(dataset.images(rows), device)
        scalars = self.scalars(images)
        latent_shape = self.latents(images[:1]).shape[1:]
        noise = torch.randn((1, *latent_shape), generator=torch.Generator().manual_seed(0)).to(
            device
        )
        return [
            write_png(folder / "interchange.png", self._interchange(images, scalars, noise)),
            write_png(folder / "traversal.png", self._traversal(scalars, noise)),
        ]

    def _generate(self, scalars: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        context = self.condition(self.tokens(scalars))
        return self.sample(context, noise.expand(len(scalars), *noise.shape[1:]))

    def _interchange(self, images, scalars, noise) -> torch.Tensor:
        """Columns: pairs (A, B). Rows: A, B, A regenerated, then A with unit u taken from B."""
        a, b = scalars[0::2], scalars[1::2]
        rows = [images[0::2], images[1::2], self._generate(a, noise)]
        for unit in range(a.shape[1]):
            swapped = a.clone()
            swapped[:, unit] = b[:, unit]
            rows.append(self._generate(swapped, noise))
        return torch.stack(rows)

    def _traversal(self, scalars, noise) -> torch.Tensor:
        """Rows: units. Columns: the unit's scalar from its 5th to 95th percentile over the
        picture images, the other units those of the first image."""
        steps = self.config.traversal_values
        quantiles = torch.linspace(0.05, 0.95, steps, device=scalars.device)
        values = torch.quantile(scalars.float(), quantiles, dim=0)  # (steps, N)
        rows = []
        for unit in range(scalars.shape[1]):
            swept = scalars[:1].repeat(steps, 1)
            swept[:, unit] = values[:, unit].to(swept.dtype)
            rows.append(self._generate(swept, noise))
        return torch.stack(rows)


class UnitMLPs(nn.Module):
    """N independent MLPs, one per unit, each 1 → widths[0] → … → out: (B, N) → (B, N, out).
    Stored as stacked weights so that the N small MLPs run as one batched product."""

    def __init__(self, units: int, widths: list[int], activation: type[nn.Module], final: bool):
        super().__init__()
        sizes = [1, *widths]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1 / fan_in**0.5  # nn.Linear's default initialisation, per unit
            self.weights.append(
                nn.Parameter(torch.empty(units, fan_in, fan_out).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(units, fan_out).uniform_(-bound, bound)))
        self.activation, self.final = activation(), final

    def forward(self, scalars: torch.Tensor) -> torch.Tensor:
        h = scalars[..., None]  # (B, N, 1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.einsum("bni,nio->bno", h, weight) + bias
            if i < last or self.final:
                h = self.activation(h)
        return h


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def write_png(path: Path, grid: torch.Tensor) -> Path:
    """(rows, cols, C, H, W) images in [0, 1] as one PNG with 2-pixel gutters."""
    rows, cols, channels, height, width = grid.shape
    pad = 2
    canvas = np.full(
        (rows * (height + pad) + pad, cols * (width + pad) + pad, channels), 255, dtype=np.uint8
    )
    pixels = (grid.float().cpu().numpy() * 255).round().astype(np.uint8).transpose(0, 1, 3, 4, 2)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            canvas[top : top + height, left : left + width] = pixels[r, c]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas.squeeze(-1) if channels == 1 else canvas).save(tmp, format="PNG")
    return path
