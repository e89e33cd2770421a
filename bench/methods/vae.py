"""The VAE family exactly as disentanglement_lib 1.5 trains it
(``methods/unsupervised/vae.py``, ``methods/shared/architectures.py``): one architecture and
one loss, reconstruction + a regulariser that each model defines. β-VAE, AnnealedVAE,
FactorVAE, DIP-VAE-I/II and β-TCVAE are subclasses, each in its own file.

Architecture (dlib ``conv_encoder`` / ``deconv_decoder``), for 64×64×C images in [0, 1]:
  encoder: conv 32 k4 s2 → conv 32 k4 s2 → conv 64 k2 s2 → conv 64 k2 s2 (ReLU, "same"
           padding; note the 2×2 kernels of the last two) → dense 256 → mean, log-variance
  decoder: dense 256 → dense 1024 → 4×4×64 → deconv 64, 32, 32, C (k4 s2, "same"), logits
Loss: Bernoulli negative log-likelihood on logits (summed over pixels, also for colour
images), averaged over the batch, plus ``regularizer(kl, mean, log_var, z)`` where kl is
KL(q(z|x) ‖ N(0, I)) averaged over the batch. Weights start as TensorFlow's do:
Glorot-uniform kernels, zero biases. The representation is the encoder mean.

Pictures, as dlib's ``visualize_model``: reconstructions of fixed images beside the images,
samples of the prior, and per image a traversal of every latent over [−1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.base import Method, MethodConfig
from bench.methods.pictures import Grid, picture_images, write_png
from bench.methods.trainer import Batch


@dataclass
class VAEConfig(MethodConfig):
    num_latent: int = 10
    picture_images: int = 8  # images reconstructed, and prior samples, in the pictures
    traversal_images: int = 2  # images whose latents are traversed (dlib: one per latent)
    traversal_values: int = 11  # dlib's default grid: 11 values in [−1, 1]


def glorot_init(module: nn.Module) -> None:
    """TensorFlow's layer defaults: Glorot-uniform kernels, zero biases."""
    if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) ‖ N(0, I)) summed over latents, averaged over the batch
    (dlib ``compute_gaussian_kl``)."""
    return (0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum(dim=1)).mean()


class VAE(Method):
    """A Gaussian-encoder VAE on dlib's architecture; subclasses give ``regularizer``."""

    config_class = VAEConfig

    def __init__(self, config: VAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        height, width, channels = image_shape
        if (height, width) != (64, 64):
            raise ValueError(f"{config.name} needs 64×64 images, got {height}×{width}")
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
        self.apply(glorot_init)

    @property
    def representation_dim(self) -> int:
        return self.config.num_latent

    def regularizer(
        self, kl: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's regulariser (dlib's ``regularizer(kl_loss, z_mean, z_logvar,
        z_sampled)``) and what to log about it."""
        raise NotImplementedError

    def forward_pass(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """(mean, log-variance, sampled z, reconstruction loss, kl) of a batch."""
        hidden = self.encoder(images)
        mean, log_var = self.to_mean(hidden), self.to_log_var(hidden)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * noise
        logits = self.decoder(z)
        reconstruction = F.binary_cross_entropy_with_logits(
            logits.float(), images.float(), reduction="none"
        ).sum(dim=(1, 2, 3))
        return mean, log_var, z, reconstruction.mean(), gaussian_kl(mean, log_var)

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mean, log_var, z, reconstruction, kl = self.forward_pass(batch.images, generator)
        regularizer, logs = self.regularizer(kl, mean, log_var, z)
        loss = reconstruction + regularizer
        elbo = -(reconstruction + kl)
        return loss, {"reconstruction": reconstruction, "kl": kl, "elbo": elbo, **logs}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_mean(self.encoder(images))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The Bernoulli means (sigmoid of the logits) for latents ``z``."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """As many samples of the prior as ``images`` (whose content is not used): z ~ N(0, I)
        through the decoder, the Bernoulli means."""
        del steps
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(len(images), self.config.num_latent, generator=generator)
        return self.decode(z.to(images.device, images.dtype))

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        """dlib's ``visualize_model`` grids: ``reconstructions.png`` (rows: images, their
        reconstructions from a posterior sample), ``samples.png`` (prior samples) and
        ``traversals.png`` (per traversed image, a block of rows, one per latent, over 11
        values in [−1, 1], the other latents at the image's mean). Draws: seed 0."""
        self.eval()
        c = self.config
        images = picture_images(dataset, max(c.picture_images // 2, 1), device)
        images = images[: c.picture_images]  # picture_images draws pairs
        hidden = self.encoder(images)
        means, log_var = self.to_mean(hidden), self.to_log_var(hidden)
        noise = torch.randn(means.shape, generator=torch.Generator().manual_seed(0))
        z = means + torch.exp(0.5 * log_var) * noise.to(means)  # a posterior sample
        side = math.ceil(math.sqrt(len(images)))
        samples = self.generate(images, seed=0)
        values = torch.linspace(-1.0, 1.0, c.traversal_values, device=device)
        rows, row_labels = [], []
        for i, mean in enumerate(means[: c.traversal_images]):
            for dim in range(c.num_latent):
                codes = mean.repeat(len(values), 1)
                codes[:, dim] = values
                rows.append(self.decode(codes))
                row_labels.append(f"image {i}, z{dim}")
        each_image = [f"image {i}" for i in range(len(images))]
        return [
            write_png(
                folder / "reconstructions.png",
                Grid(
                    torch.stack([images, self.decode(z)]),
                    "Images and their reconstructions from a posterior sample",
                    ["input", "reconstruction"],
                    each_image,
                ),
            ),
            write_png(
                folder / "samples.png",
                Grid(grid(samples, side), f"{len(samples)} samples of the prior N(0, I)"),
            ),
            write_png(
                folder / "traversals.png",
                Grid(
                    torch.stack(rows),
                    "Traversals: per image, a latent per row set to each value, the others "
                    "at the image's posterior mean",
                    row_labels,
                    [f"{round(v, 1) + 0.0:.1f}" for v in values.tolist()],  # never "-0.0"
                ),
            ),
        ]


def grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(rows, columns, C, H, W) of ``images`` filled row by row, white where none is left."""
    rows = math.ceil(len(images) / columns)
    blank = torch.ones((rows * columns - len(images), *images.shape[1:]), device=images.device)
    return torch.cat([images, blank]).reshape(rows, columns, *images.shape[1:])


def shuffle_codes(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each latent permuted across the batch on its own (dlib ``shuffle_codes``): samples of
    the product of the marginals."""
    columns = [
        z[torch.randperm(len(z), generator=generator, device=z.device), i]
        for i in range(z.shape[1])
    ]
    return torch.stack(columns, 1)


def covariance(mean: torch.Tensor) -> torch.Tensor:
    """Cov(mean) = E[μμᵀ] − E[μ]E[μ]ᵀ over the batch (dlib ``compute_covariance_z_mean``;
    the biased estimate)."""
    centred = mean.mean(0)
    return (mean[:, :, None] * mean[:, None, :]).mean(0) - centred[:, None] * centred[None, :]


def dip_regularizer(matrix: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """λ_od·Σ off-diagonal² + λ_d·Σ (diagonal − 1)² (dlib ``regularize_diag_off_diag_dip``)."""
    diagonal = torch.diagonal(matrix)
    off = matrix - torch.diag(diagonal)
    return lambda_od * off.square().sum() + lambda_d * (diagonal - 1).square().sum()


def gaussian_log_density(
    samples: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """log N(samples; mean, exp(log_var)) per element."""
    squared = (samples - mean).square() * torch.exp(-log_var)
    return -0.5 * (squared + log_var + math.log(2 * math.pi))


def total_correlation(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """dlib's minibatch estimate of TC(q(z)): the batch mean of log q(z_j) − Σ_l log q(z_jl),
    each q a mixture over the batch's posteriors, without the constant log(batch · dataset
    size) terms."""
    log_q = gaussian_log_density(z[:, None, :], mean[None], log_var[None])  # [j, i, l]
    log_q_product = torch.logsumexp(log_q, dim=1).sum(dim=1)
    log_q_joint = torch.logsumexp(log_q.sum(dim=2), dim=1)
    return (log_q_joint - log_q_product).mean()
