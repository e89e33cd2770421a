"""DIP-VAE-I and DIP-VAE-II (Kumar et al. 2018, Eqs. 6 and 7) exactly as disentanglement_lib
trains them: reconstruction + KL + a penalty on a covariance's distance from the identity,
λ_od on its off-diagonal and λ_d = ``lambda_d_factor``·λ_od on its diagonal.
I: the covariance of the encoder means over the batch (dlib's study: λ_d = 10·λ_od).
II: that plus the batch mean of the encoder covariances (dlib's study: λ_d = λ_od)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from bench.methods.vae import VAE, VAEConfig, covariance, dip_regularizer


class DipType(str, enum.Enum):
    i = "i"
    ii = "ii"


@dataclass
class DIPVAEConfig(VAEConfig):
    name: str = "dip_vae_i"
    dip_type: DipType = DipType.i
    lambda_od: float = 1.0
    lambda_d_factor: float = 10.0


def dip_covariance(mean: torch.Tensor, log_var: torch.Tensor, dip_type: DipType) -> torch.Tensor:
    """Cov[μ(x)] for DIP-VAE-I; E[diag σ²(x)] + Cov[μ(x)], the covariance of q(z), for II."""
    cov = covariance(mean)
    if DipType(dip_type) == DipType.ii:
        cov = cov + torch.diag(log_var.exp().mean(0))
    return cov


class DIPVAE(VAE):
    config_class = DIPVAEConfig

    def regularizer(
        self, kl: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        cov = dip_covariance(mean, log_var, c.dip_type)
        dip = dip_regularizer(cov, c.lambda_od, c.lambda_d_factor * c.lambda_od)
        return kl + dip, {"dip": dip}
