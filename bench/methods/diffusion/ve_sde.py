"""The variance-exploding SDE of score-based models (Song et al. 2021), continuous time, and its
samplers: the scheduler of the score models here, separate from any network.

Forward process: x_t = x_0 + σ(t)·ε with σ(t) = σ_min·(σ_max/σ_min)^t, t ∈ [ε_t, 1]. A score
network s(x_t, σ) is trained by denoising score matching with the weighting λ(t) = σ(t)² of
score_sde's ``likelihood_weighting=False``, summed over pixels (``reduce_mean=False``):

    ℓ = ½ Σ_pixels (σ·s(x_t, σ) + ε)²

Sampling starts from x_1 ~ N(0, σ_max² I) and runs one of:

- ``reverse_diffusion``: score_sde's predictor-corrector sampler as its VE configs set it
  (reverse-diffusion predictor, ``corrector_steps`` Langevin corrector steps at signal-to-noise
  ratio ``snr``, the last step's noise left out), with diffusers' ``ScoreSdeVeScheduler``: an
  Euler–Maruyama discretisation of the reverse SDE;
- ``probability_flow``: Euler steps of the probability-flow ODE dx = −½ g(t)² s(x, σ(t)) dt with
  g(t)² = dσ²/dt = 2σ(t)² log(σ_max/σ_min): deterministic given the starting noise.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable

import torch
from diffusers import ScoreSdeVeScheduler

# (x_t, σ per image) -> the score ∇ log p_σ(x_t)
ScoreFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Sampler(str, enum.Enum):
    reverse_diffusion = "reverse_diffusion"  # score_sde's PC sampler (Euler–Maruyama + Langevin)
    probability_flow = "probability_flow"  # Euler on the probability-flow ODE


class VESDE:
    """σ(t) and the marginals of the VE SDE; no parameters, so not a module."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5):
        self.sigma_min, self.sigma_max, self.t_min = sigma_min, sigma_max, t_min

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sample_times(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """t ~ U(t_min, 1), as score_sde draws training times."""
        uniform = torch.rand(count, generator=generator, device=generator.device)
        return uniform * (1.0 - self.t_min) + self.t_min

    @torch.no_grad()
    def sample(
        self,
        score: ScoreFunction,
        noise: torch.Tensor,
        steps: int,
        sampler: Sampler = Sampler.reverse_diffusion,
        generator: torch.Generator | None = None,
        corrector_steps: int = 1,
        snr: float = 0.16,
    ) -> torch.Tensor:
        """Images from ``noise`` (standard normal, the shape of the images) in ``steps`` steps."""
        x = noise * self.sigma_max
        if Sampler(sampler) == Sampler.probability_flow:
            times = torch.linspace(1.0, self.t_min, steps + 1, device=x.device)
            log_ratio = math.log(self.sigma_max / self.sigma_min)
            for t, t_next in itertools.pairwise(times):
                sigma = self.sigma(t).expand(len(x))
                drift = -(sigma**2 * log_ratio)[:, None, None, None] * score(x, sigma)
                x = x + drift * (t_next - t)
            return x
        scheduler = ScoreSdeVeScheduler(
            num_train_timesteps=steps,
            snr=snr,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            sampling_eps=self.t_min,
        )
        scheduler.set_timesteps(steps, device=x.device)
        scheduler.set_sigmas(steps)
        for i, t in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[i].to(x.device).expand(len(x))
            for _ in range(corrector_steps):
                x = scheduler.step_correct(score(x, sigma), x, generator=generator).prev_sample
            x, mean = scheduler.step_pred(score(x, sigma), t, x, generator=generator).to_tuple()
        return mean


def denoising_score_matching(
    score: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Per image: ½ Σ_pixels (σ·score + ε)², the σ²-weighted loss of x_t = x_0 + σ·ε."""
    residual = score * sigma[:, None, None, None] + noise
    return 0.5 * residual.pow(2).flatten(1).sum(dim=1)
