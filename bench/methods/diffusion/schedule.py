"""The noise schedule every diffusion method trains on, and its noising, drawn reproducibly."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler


def ddpm_scheduler(
    timesteps: int, schedule: str, beta_start: float, beta_end: float
) -> DDPMScheduler:
    """diffusers' ``DDPMScheduler`` for ε-prediction without clipping: ``schedule`` "linear"
    (PDAE, DiTi) or "scaled_linear" (LDM's "linear": linspace of the square roots, squared)."""
    return DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_schedule=schedule,
        beta_start=beta_start,
        beta_end=beta_end,
        prediction_type="epsilon",
        clip_sample=False,
    )


def noise_for_training(
    scheduler: DDPMScheduler, x: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(timesteps t ~ U{0..T−1}, noise ε, x_t) for a training batch ``x``: the draws come
    from ``generator`` (on its own device), and the noising runs in float32 even under
    autocast."""
    batch, device = len(x), generator.device
    timesteps = scheduler.config.num_train_timesteps
    steps = torch.randint(0, timesteps, (batch,), generator=generator, device=device)
    noise = torch.randn(x.shape, generator=generator, device=device)
    steps, noise = steps.to(x.device), noise.to(x.device)
    with torch.autocast(x.device.type, enabled=False):
        noisy = scheduler.add_noise(x.float(), noise, steps)
    return steps, noise, noisy
