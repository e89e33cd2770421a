"""β-VAE (Higgins et al. 2017) exactly as disentanglement_lib trains it: reconstruction +
β·KL(q(z|x) ‖ N(0, I)) on dlib's architecture (``bench/methods/vae.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.vae import VAE, VAEConfig


@dataclass
class BetaVAEConfig(VAEConfig):
    name: str = "beta_vae"
    beta: float = 1.0


class BetaVAE(VAE):
    config_class = BetaVAEConfig

    def regularizer(
        self, kl: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.config.beta * kl, {}
