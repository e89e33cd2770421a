"""β-VAE (Higgins et al. 2017) exactly as disentanglement_lib trains it.

Architecture (dlib ``conv_encoder`` / ``deconv_decoder``), for 64×64×C images in [0, 1]:
  encoder: conv 32 k4 s2 → conv 32 k4 s2 → conv 64 k2 s2 → conv 64 k2 s2 (ReLU, "same"
           padding; note the 2×2 kernels of the last two) → dense 256 → mean, log-variance
  decoder: dense 256 → dense 1024 → 4×4×64 → deconv 64, 32, 32, C (k4 s2, "same"), logits
Loss: Bernoulli negative log-likelihood on logits (summed over pixels, also for colour
images) + β·KL(q(z|x) ‖ N(0, I)), averaged over the batch. Weights start as TensorFlow's
do: Glorot-uniform kernels, zero biases. The representation is the encoder mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.base import Method, MethodConfig


@dataclass
class BetaVAEConfig(MethodConfig):
    name: str = "beta_vae"
    beta: float = 1.0
    num_latent: int = 10


def _glorot_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class BetaVAE(Method):
    config_class = BetaVAEConfig

    def __init__(self, config: BetaVAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        height, width, channels = image_shape
        if (height, width) != (64, 64):
            raise ValueError(f"beta_vae needs 64×64 images, got {height}×{width}")
        # For 64 → 32 → 16 a k4 s2 convolution with TF "same" padding pads 1 on each side;
        # k2 s2 needs none.
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 2, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 2, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 4 * 64, 256),
            nn.ReLU(),
        )
        self.to_mean = nn.Linear(256, config.num_latent)
        self.to_log_var = nn.Linear(256, config.num_latent)
        self.decoder = nn.Sequential(
            nn.Linear(config.num_latent, 256),
            nn.ReLU(),
            nn.Linear(256, 1024),
            nn.ReLU(),
            nn.Unflatten(1, (64, 4, 4)),
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )
        self.apply(_glorot_init)

    @property
    def representation_dim(self) -> int:
        return self.config.num_latent

    def training_loss(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = self.encoder(images)
        mean, log_var = self.to_mean(hidden), self.to_log_var(hidden)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * noise
        logits = self.decoder(z)
        reconstruction = F.binary_cross_entropy_with_logits(
            logits.float(), images.float(), reduction="none"
        ).sum(dim=(1, 2, 3))
        kl = 0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum(dim=1)
        reconstruction, kl = reconstruction.mean(), kl.mean()
        loss = reconstruction + self.config.beta * kl
        return loss, {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_mean(self.encoder(images))

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """As many samples of the prior as ``images`` (whose content is not used): z ~ N(0, I)
        through the decoder, the Bernoulli means."""
        del steps
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(len(images), self.config.num_latent, generator=generator)
        return torch.sigmoid(self.decoder(z.to(images.device, images.dtype)))
