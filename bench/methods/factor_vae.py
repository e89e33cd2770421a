"""FactorVAE (Kim & Mnih 2018, Eq. 2) exactly as disentanglement_lib trains it:
reconstruction + KL + γ·TC, the total correlation estimated by a discriminator D as
E[logit_real − logit_shuffled] on the sampled codes z; D learns to tell z from z with each
latent permuted across the batch (samples of the product of marginals).

D is dlib's ``fc_discriminator``: 6 dense layers of 1000 with leaky ReLU (slope 0.2) and 2
logits; its probabilities are clipped to [1e-6, 1 − 1e-6]. D has its own Adam (lr 1e-4, betas
0.5 / 0.9, eps 1e-8), minimising −(½ E log p_real(z) + ½ E log p_shuffled(z̃)), stepped in the
same step as the VAE's Adam. Each optimizer gets only its own loss's gradient: the VAE never
the discriminator's loss, D never the VAE's (its ``trainer``).

dlib's step counts: both optimizers increment TensorFlow's global step, so its
``training_steps = 300000`` stop FactorVAE after 150,000 iterations. The paper preset trains
those 150,000 (``configs/methods/factor_vae.yaml``); ``train.steps=300000`` trains the
300,000 the study's config names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bench.methods.trainer import Batch, LossTrainer, OwnOptimizer
from bench.methods.vae import VAE, VAEConfig, glorot_init, shuffle_codes


@dataclass
class FactorVAEConfig(VAEConfig):
    name: str = "factor_vae"
    gamma: float = 10.0
    discriminator_lr: float = 1e-4
    discriminator_betas: tuple[float, float] = (0.5, 0.9)


class Discriminator(nn.Sequential):
    """dlib ``fc_discriminator``: z → 6 × (dense 1000, leaky ReLU 0.2) → 2 logits."""

    def __init__(self, num_latent: int, width: int = 1000, layers: int = 6) -> None:
        blocks: list[nn.Module] = []
        for k in range(layers):
            blocks += [nn.Linear(num_latent if k == 0 else width, width), nn.LeakyReLU(0.2)]
        super().__init__(*blocks, nn.Linear(width, 2))
        self.apply(glorot_init)


def discriminator_terms(
    logits_real: torch.Tensor, logits_shuffled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TC estimate E[logit_0 − logit_1] on real codes, the discriminator's loss
    −(½ E log p_0(real) + ½ E log p_1(shuffled)) with probabilities clipped as dlib's)."""
    tc = (logits_real[:, 0] - logits_real[:, 1]).mean()
    p_real = F.softmax(logits_real, dim=1).clamp(1e-6, 1 - 1e-6)
    p_shuffled = F.softmax(logits_shuffled, dim=1).clamp(1e-6, 1 - 1e-6)
    loss = -(0.5 * p_real[:, 0].log().mean() + 0.5 * p_shuffled[:, 1].log().mean())
    return tc, loss


class FactorVAE(VAE):
    config_class = FactorVAEConfig

    def __init__(self, config: FactorVAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.discriminator = Discriminator(config.num_latent)

    def trainer(self, train: DictConfig, device: torch.device) -> LossTrainer:
        """The run's optimizer for the VAE, and the discriminator's own Adam."""
        c = self.config
        discriminator = OwnOptimizer(
            list(self.discriminator.parameters()),
            c.discriminator_lr,
            tuple(c.discriminator_betas),
            1e-8,
        )
        return LossTrainer(self, train, device, own={"discriminator": discriminator})

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        _, _, z, reconstruction, kl = self.forward_pass(batch.images, generator)
        shuffled = shuffle_codes(z, generator)
        tc, discriminator_loss = discriminator_terms(
            self.discriminator(z), self.discriminator(shuffled)
        )
        loss = reconstruction + kl + self.config.gamma * tc
        elbo = -(reconstruction + kl)
        logs = {"reconstruction": reconstruction, "kl": kl, "elbo": elbo, "tc": tc}
        return {"run": loss, "discriminator": discriminator_loss}, logs

    def training_summary(self) -> dict[str, object]:
        return {
            "note": "disentanglement_lib's FactorVAE increments its global step twice per "
            "iteration (both optimizers), so its 300,000 training_steps are 150,000 "
            "iterations; train.steps counts iterations here"
        }
