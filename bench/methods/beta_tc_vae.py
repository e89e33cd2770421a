"""β-TCVAE (Chen et al. 2018, Eq. 4 with α = γ = 1) exactly as disentanglement_lib trains
it: reconstruction + KL + (β − 1)·TC, the total correlation of q(z) by dlib's minibatch
estimate (``bench/methods/vae.py:total_correlation``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.vae import VAE, VAEConfig, total_correlation


@dataclass
class BetaTCVAEConfig(VAEConfig):
    name: str = "beta_tc_vae"
    beta: float = 6.0


class BetaTCVAE(VAE):
    config_class = BetaTCVAEConfig

    def regularizer(
        self, kl: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tc = total_correlation(z, mean, log_var)
        return (self.config.beta - 1.0) * tc + kl, {"tc": tc}
