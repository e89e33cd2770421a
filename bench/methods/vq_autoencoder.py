"""The VQ autoencoder first stage of the latent-diffusion methods (DyGA+SD, EncDiff, DisDiff).

diffusers' ``VQModel`` with the authors' sizes (methods.md §1.0): 64×64×3 → 16×16×3 latents,
2048 codes, channels (32, 64, 128), two ResNet layers per block. It trains as the authors' do
(DisDiff's configs/autoencoder/shapes3d_vq_4_16.yaml, dis-dis's configs/autoencoder/*.yaml):
taming's ``VQLPIPSWithDiscriminator`` — L1 + LPIPS reconstruction (perceptual weight 1.0),
codebook loss (1.0), and a hinge patch-GAN (disc_weight 0.75, from step 0) whose weight adapts
to the ratio of gradient norms at the decoder's last layer. The LPIPS weights are files
(``bench data download lpips``, ``lpips.py``); the ``smoke`` and ``ci`` presets train without
LPIPS and the GAN (``perceptual_weight=0``, ``gan_weight=0``).

It is a registered method (``vq_autoencoder``) so it trains with the one training loop, but it
is meant to be a shared stage: a diffusion method declares it as its first stage and the
runner trains it once per (dataset, settings) and caches it (``bench.stages``).

Generator and discriminator share one Adam: Adam's update is per parameter, so this equals
the authors' two optimizers with the same settings; the discriminator's loss sees detached
reconstructions and the generator's adversarial term a detached copy of the discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import VQModel
from torch import nn
from torch.func import functional_call

from bench.methods.base import Method, MethodConfig
from bench.methods.diffusion.lpips import LPIPS
from bench.methods.trainer import Batch


@dataclass
class VQAutoencoderConfig(MethodConfig):
    name: str = "vq_autoencoder"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 2
    norm_groups: int = 32
    latent_channels: int = 3
    num_codes: int = 2048
    codebook_weight: float = 1.0
    perceptual_weight: float = 1.0  # LPIPS; 0 turns it off (no weight files needed)
    # None: where `bench data download lpips` puts them; else a path to a copy.
    vgg16_weights: str | None = None  # torchvision's vgg16-397923af.pth
    lpips_weights: str | None = None  # LPIPS v0.1 vgg.pth (linear heads)
    gan_weight: float = 0.75  # the authors' disc_weight; 0 turns the patch-GAN off
    gan_start: int = 0  # step at which the adversarial terms begin (disc_start)


def build_vq_model(config: VQAutoencoderConfig, image_shape: tuple[int, int, int]) -> VQModel:
    height, _, channels = image_shape
    levels = len(config.channels)
    return VQModel(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        num_vq_embeddings=config.num_codes,
        vq_embed_dim=config.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=height,
    )


class PatchDiscriminator(nn.Module):
    """pix2pix's 3-layer PatchGAN (64 filters, batch norm, LeakyReLU 0.2), as taming uses it."""

    def __init__(self, channels: int, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        current = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [
                nn.Conv2d(current, out, 4, stride, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            current = out
        blocks.append(nn.Conv2d(current, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)
        for module in self.modules():  # taming's init
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class VQAutoencoder(Method):
    config_class = VQAutoencoderConfig

    def __init__(self, config: VQAutoencoderConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.vq = build_vq_model(config, image_shape)
        self.perceptual = (
            LPIPS(config.vgg16_weights, config.lpips_weights)
            if config.perceptual_weight > 0
            else None
        )
        self.discriminator = PatchDiscriminator(image_shape[2]) if config.gan_weight > 0 else None
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_shape[0] // 2 ** (len(self.config.channels) - 1)
        return self.config.latent_channels, side, side

    @property
    def representation_dim(self) -> int:
        channels, height, width = self.latent_shape
        return channels * height * width

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch.images * 2 - 1
        decoded = self.vq.decode(self.vq.encode(x).latents)
        reconstruction = decoded.sample
        nll = (x - reconstruction).abs().mean()
        logs = {"l1": nll.detach()}
        if self.perceptual is not None:
            perceptual = self.perceptual(x, reconstruction).mean()
            nll = nll + self.config.perceptual_weight * perceptual
            logs["perceptual"] = perceptual.detach()
        codebook = decoded.commit_loss.mean()
        loss = nll + self.config.codebook_weight * codebook
        logs["codebook"] = codebook.detach()
        if self.discriminator is not None and int(self.steps_done) >= self.config.gan_start:
            adversarial, discriminator_loss, weight = self._gan_terms(x, reconstruction, nll)
            loss = loss + weight * adversarial + discriminator_loss
            logs.update(g_loss=adversarial.detach(), d_loss=discriminator_loss.detach())
        self.steps_done += 1
        return loss, logs

    def _gan_terms(self, x, reconstruction, nll):
        frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        frozen.update(dict(self.discriminator.named_buffers()))
        adversarial = -functional_call(self.discriminator, frozen, (reconstruction,)).mean()
        last = self.vq.decoder.conv_out.weight
        nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
        adversarial_grad = torch.autograd.grad(adversarial, last, retain_graph=True)[0]
        weight = nll_grad.norm() / (adversarial_grad.norm() + 1e-4)
        weight = weight.clamp(0.0, 1e4).detach() * self.config.gan_weight
        real = self.discriminator(x.detach())
        fake = self.discriminator(reconstruction.detach())
        hinge = 0.5 * (torch.relu(1.0 - real).mean() + torch.relu(1.0 + fake).mean())
        return adversarial, hinge, weight

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(images * 2 - 1).latents.flatten(1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """The reconstructions of ``images`` (quantised): an autoencoder generates nothing
        else, and their FID is the reconstruction FID (rFID) first-stage papers report."""
        del seed, steps
        return ((self.vq.decode(self.vq.encode(images * 2 - 1).latents).sample + 1) / 2).clamp(0, 1)
