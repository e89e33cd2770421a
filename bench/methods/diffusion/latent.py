"""What every latent-diffusion method shares: the frozen VQ first stage and the noise schedule.

- First stage: a VQ autoencoder trained once per dataset as a shared ``Stage`` and frozen;
  diffusion runs on its pre-quantisation latents scaled by 1/std of the first training
  batch's latents (LDM's ``scale_by_std``).
- Noise schedule: diffusers' ``DDPMScheduler``, 1000 steps, "scaled_linear" betas 0.0015 →
  0.0155 (LDM's "linear" schedule: linspace of the square roots, squared), ε-prediction.
- Sampling: DDIM on LDM's grid (every 1000/S steps, offset 1, the last step to ᾱ at t = 0),
  from a caller's ε-predictor, so a conditional or a shifted model samples the same way.

``LatentDiffusionBase`` holds these; the token-conditioned methods (``token_ldm``), the
unconditional LDM stage (``ldm``) and DisDiff build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from diffusers import DDIMScheduler

from bench.methods.base import Method, MethodConfig, Stage
from bench.methods.diffusion.schedule import ddpm_scheduler, noise_for_training
from bench.methods.vq_autoencoder import VQAutoencoderConfig, build_vq_model


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
class LatentDiffusionBaseConfig(MethodConfig):
    first_stage: FirstStageConfig = field(default_factory=FirstStageConfig)
    timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0155
    sample_steps: int = 100  # DDIM steps of the pictures (the authors' scripts use 100)


EpsilonPredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LatentDiffusionBase(Method):
    """A frozen first stage, the latent scale and the noise schedule."""

    config: LatentDiffusionBaseConfig

    def __init__(
        self, config: LatentDiffusionBaseConfig, image_shape: tuple[int, int, int]
    ) -> None:
        super().__init__(config, image_shape)
        autoencoder = config.first_stage.autoencoder
        self.first_stage = build_vq_model(autoencoder, image_shape).requires_grad_(False)
        self.latent_channels = autoencoder.latent_channels
        self.latent_size = image_shape[0] // 2 ** (len(autoencoder.channels) - 1)
        self.scheduler = ddpm_scheduler(
            config.timesteps, "scaled_linear", config.beta_start, config.beta_end
        )
        self.register_buffer("latent_scale", torch.zeros(()))  # 0: not measured yet
        # Whether it is measured, on the host: each training step asks, without a device read.
        self.scale_measured = False

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

    def train(self, mode: bool = True) -> LatentDiffusionBase:
        super().train(mode)
        self.first_stage.eval()  # frozen, always in inference mode
        return self

    # -- latents and noise --------------------------------------------------------------
    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The scaled first-stage latents, in float32 even under autocast: they are the
        diffusion targets, so bf16 rounding here would be noise the model must learn."""
        with torch.autocast(images.device.type, enabled=False):
            latents = self.first_stage.encode(images.float() * 2 - 1).latents
            if not self.scale_measured:  # LDM's scale_by_std, from the first training batch
                self.latent_scale.copy_(1.0 / latents.std())
                self.scale_measured = True
            return latents * self.latent_scale

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        saved = state_dict.get(f"{prefix}latent_scale")  # read where it was loaded from
        if saved is not None:
            self.scale_measured = bool(saved != 0)

    def set_latent_scale(self, value: float) -> None:
        """Fix the latent scale by hand (tests, imported weights) instead of measuring it."""
        self.latent_scale.fill_(value)
        self.scale_measured = value != 0

    def decode_latents(self, latents: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Scaled latents back to images in [−1, 1] (not clamped). ``quantize=False`` is LDM's
        ``force_not_quantize``: the decoder reads the latents as they are, differentiably."""
        return self.first_stage.decode(
            latents / self.latent_scale, force_not_quantize=not quantize
        ).sample

    def noisy_latents(
        self, latents: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(timesteps, noise, noised latents) for a training step, drawn from ``generator``."""
        return noise_for_training(self.scheduler, latents, generator)

    def alphas_cumprod(self, steps: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for each timestep, shaped (B, 1, 1, 1)."""
        alphas = self.scheduler.alphas_cumprod.to(steps.device)[steps]
        return alphas.float()[:, None, None, None]

    # -- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def ddim_sample(
        self, predict_epsilon: EpsilonPredictor, noise: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        """DDIM (eta 0) from ``noise`` with ``predict_epsilon(latents, t)`` in ``steps`` steps
        (default ``sample_steps``): images in [0, 1]."""
        ddim = DDIMScheduler.from_config(
            self.scheduler.config, steps_offset=1, set_alpha_to_one=False
        )
        ddim.set_timesteps(steps or self.config.sample_steps, device=noise.device)
        latents = noise
        for step in ddim.timesteps:
            predicted = predict_epsilon(latents, step.expand(len(latents)))
            latents = ddim.step(predicted, step, latents, eta=0.0).prev_sample
        return ((self.decode_latents(latents) + 1) / 2).clamp(0, 1)

    def latent_noise(self, count: int, device: torch.device, seed: int = 0) -> torch.Tensor:
        """Fixed starting noise for pictures: the same ``seed`` gives the same images."""
        shape = (count, self.latent_channels, self.latent_size, self.latent_size)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
