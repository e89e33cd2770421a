"""What the token-conditioned latent diffusion methods (DyGA+SD, EncDiff) share.

An image encoder gives N scalar latent units; each unit's scalar becomes a token; the tokens
condition a latent-diffusion U-Net through cross-attention, and the encoder learns only
through the denoising loss (L1 on ε). The first stage and the noise schedule are those of
every latent-diffusion method (``latent.py``). Pieces, each swappable by a subclass:

- ``scalars(x)`` and ``tokens(s)``: the subclass's encoder and per-unit token MLPs;
- ``condition(tokens)``: what the U-Net sees (DyGA's anchoring; identity by default).

Pictures: DDIM sampling (eta 0) from fixed noise conditioned on tokens, for a latent-
interchange grid (unit u of image B swapped into image A, per unit) and a traversal grid
(one unit's scalar swept over its range while the others stay).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench.methods.diffusion.latent import LatentDiffusionBase, LatentDiffusionBaseConfig
from bench.methods.diffusion.unet import SkipDropout, SkipDropoutConfig, UNetConfig, build_unet
from bench.methods.pictures import (
    interchange_grid,
    percentile_sweep,
    picture_images,
    traversal_grid,
    write_png,
)
from bench.methods.trainer import Batch


@dataclass
class TokenDiffusionConfig(LatentDiffusionBaseConfig):
    unet: UNetConfig = field(default_factory=UNetConfig)
    skip_dropout: SkipDropoutConfig = field(default_factory=lambda: SkipDropoutConfig(p=0.0))
    num_units: int = 20
    token_dim: int = 32
    # Pictures written with each run.
    picture_pairs: int = 6  # columns of the interchange grid
    traversal_values: int = 8  # columns of the traversal grid


class TokenDiffusion(LatentDiffusionBase):
    """Base of the token-conditioned LDMs; subclasses build ``encoder`` and ``token_mlps``."""

    config: TokenDiffusionConfig

    def __init__(self, config: TokenDiffusionConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.unet = build_unet(
            config.unet, self.latent_channels, self.latent_size, config.token_dim
        )
        self.skip_dropout = SkipDropout(self.unet, config.skip_dropout)

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

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch.images
        steps, noise, noisy = self.noisy_latents(self.latents(images), generator)
        context = self.condition(self.tokens(self.scalars(images)), generator)
        with self.skip_dropout.draw(generator, len(noisy)):  # no draw inside the U-Net
            predicted = self.unet(noisy, steps, encoder_hidden_states=context).sample
        loss = (predicted.float() - noise.float()).abs().mean()
        return loss, {}

    # -- sampling -----------------------------------------------------------------------
    def sample(
        self, scalars: torch.Tensor, noise: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        """DDIM (eta 0) from ``noise`` conditioned on the units ``scalars``: images in [0, 1]."""
        context = self.condition(self.tokens(scalars))
        return self.ddim_sample(
            lambda x, t: self.unet(x, t, encoder_hidden_states=context).sample, noise, steps
        )

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Conditioned on the images' units, from fresh noise: the authors' FID sampling
        (``sampling-for-fid.sh``: DDIM, 100 steps, eta 0)."""
        noise = self.latent_noise(len(images), images.device, seed)
        return self.sample(self.scalars(images), noise, steps)

    # -- pictures -----------------------------------------------------------------------
    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        self.eval()
        images = picture_images(dataset, self.config.picture_pairs, device)
        scalars = self.scalars(images)
        noise = self.latent_noise(1, device)

        def generate(scalars: torch.Tensor) -> torch.Tensor:
            return self.sample(scalars, noise.expand(len(scalars), *noise.shape[1:]))

        # The traversal sweeps each unit from its 5th to 95th percentile over these images.
        values = percentile_sweep(scalars, self.config.traversal_values)  # (steps, N)
        return [
            write_png(folder / "interchange.png", interchange_grid(images, scalars, generate)),
            write_png(folder / "traversal.png", traversal_grid(scalars[:1], values, generate)),
        ]


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
