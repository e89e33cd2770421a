"""Diffusion-Based Representation Learning (Mittal et al., ICML 2023), as its official code
(korabs-x/representation_score_based @7c32ac5, score_sde_pytorch) trains it
(methods-more.md §3).

A VE score model s_θ(x_t, σ(t), z) learns denoising score matching (σ²-weighted, summed over
pixels: ``diffusion/ve_sde.py``) conditioned on a code z = E_φ(x_0, t) of the clean image at
the same time t. The encoder learns only what helps denoising at the noise levels trained,
so the range of t decides how much detail the code keeps.

- Score network: NCSN++ "small" (``diffusion/ncsnpp.py``) with a fifth level for 64×64; the
  code joins the time embedding and the bottleneck as the authors' ``include_encoder`` does.
- Encoder: WideResNet-28-2 whose every block adds a per-channel bias from its own Fourier
  embedding of σ(t) (``TimeConditionedWideResNet``), batch norm, global average pooling;
  ``deterministic``: the pooled features are z (λ_z·‖z‖₁); ``probabilistic``: a linear layer
  gives (μ, log σ²), z = μ + σ·ε (λ_z·KL(N(μ, σ²) ‖ N(0, I))). As in the authors' loss, the
  regulariser is added only when λ_z > 0; it is logged either way.
- Representation: the code's mean at a fixed t* (``eval_t``, 0.5 as the authors' downstream
  code), the live encoder in eval mode (the authors save the live encoder, not its EMA).
- The code is the 128 pooled features of WideResNet-28-2 (``latent_dim=null``: 64 × widen
  factor), as the authors';
  the README's representation run is probabilistic with λ_z = 1e-5 (the defaults here).
  ``method.latent_dim=20`` is offered for comparability with the 20-unit methods: the
  deterministic encoder then gets a linear head, and the run records it as a deviation.
- Inputs: z-scored per channel (``input_scale=zscore``), as the authors' LaplaceNet loader
  feeds the training path, with the dataset's channel statistics (``configure_for``, over
  a fixed draw of training images); samples are mapped back to [0, 1] for pictures and FID.
  The noise levels (σ_min, σ_max, t*) act on that scale. ``unit`` feeds [0, 1] images.

The authors' auxiliary reconstruction decoder and mixup are off in their command and not
built. Two parts of their training path are not adopted, and every run records them:
the augmentation (flips, reflect-crops, RandAugment(1): they change a ground-truth
dataset's factors) and the training set (the 4,000-image labelled subset of their
semi-supervised loader: here every image).

Pictures and FID sample with the code of E(x_0, t*) held fixed at every step, by score_sde's
predictor-corrector sampler or the probability-flow ODE (``sampler``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.errors import BenchError
from bench.methods.base import Method, MethodConfig
from bench.methods.diffusion.ncsnpp import NCSNpp, NCSNppConfig, TimeEmbedding, init_layer
from bench.methods.diffusion.ve_sde import VESDE, Sampler, denoising_score_matching
from bench.methods.pictures import (
    interchange_grid,
    percentile_sweep,
    picture_images,
    traversal_grid,
    write_png,
)
from bench.methods.trainer import Batch

NOT_ADOPTED = [
    "not adopted: the authors' training augmentation (flips, reflect-crops, RandAugment(1)), "
    "which changes a ground-truth dataset's factors",
    "not adopted: the authors' training set, the 4,000-image labelled subset of their "
    "semi-supervised loader (here every image)",
]
STATISTICS_IMAGES = 5000  # training images the channel statistics are taken over


class InputScale(str, enum.Enum):
    zscore = "zscore"  # (x − mean_c) / std_c: the authors' LaplaceNet loader
    unit = "unit"  # x in [0, 1], as score_sde's own CIFAR-10 pipeline


class Encoder(str, enum.Enum):
    deterministic = "deterministic"  # z = E(x, t); λ_z·‖z‖₁
    probabilistic = "probabilistic"  # z ~ N(μ, σ²) from E(x, t); λ_z·KL


@dataclass
class WideResNetConfig:
    depth: int = 28  # 6n + 4: n blocks per group
    widen_factor: int = 2
    time_features: int = 16  # Fourier features of log σ(t) (scale 16), embedded to 4× this


@dataclass
class DBRLConfig(MethodConfig):
    name: str = "dbrl"
    encoder: Encoder = Encoder.probabilistic  # their README's representation run
    lambda_z: float = 1e-5  # (their code's defaults: deterministic, 0)
    latent_dim: int | None = None  # None: the pooled features, 64 × widen factor (authors')
    input_scale: InputScale = InputScale.zscore
    # Per-channel statistics of the inputs, from the dataset unless given (configure_for).
    channel_mean: list[float] = field(default_factory=list)
    channel_std: list[float] = field(default_factory=list)
    eval_t: float = 0.5  # t* of the scored code E(x, t*)
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-5
    score_net: NCSNppConfig = field(default_factory=NCSNppConfig)
    wide_resnet: WideResNetConfig = field(default_factory=WideResNetConfig)
    # Sampling (pictures, FID): score_sde's VE sampler settings.
    sampler: Sampler = Sampler.reverse_diffusion
    sample_steps: int = 1000
    corrector_steps: int = 1
    snr: float = 0.16
    picture_pairs: int = 4
    traversal_values: int = 8


class WideBasic(nn.Module):
    """A pre-activation wide ResNet block whose first convolution gets a bias from t."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, temb: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(in_ch), nn.BatchNorm2d(out_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=stride, padding=1)
        self.time_bias = init_layer(nn.Linear(temb, out_ch))
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride=stride)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x))) + self.time_bias(F.silu(temb))[:, :, None, None]
        return self.conv2(F.relu(self.bn2(h))) + self.shortcut(x)


class TimeConditionedWideResNet(nn.Module):
    """WideResNet-depth-k with a time bias in every block: image and t -> (μ, log σ² or None)."""

    def __init__(
        self, channels: int, config: WideResNetConfig, latent_dim: int, probabilistic: bool
    ) -> None:
        super().__init__()
        k, n = config.widen_factor, (config.depth - 4) // 6
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.time = TimeEmbedding(config.time_features)
        temb = 4 * config.time_features
        self.conv_in = nn.Conv2d(channels, widths[0], 3, padding=1)
        blocks, in_ch = [], widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(WideBasic(in_ch, width, stride if i == 0 else 1, temb))
                in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.BatchNorm2d(in_ch, momentum=0.9)  # the authors' momentum
        self.probabilistic = probabilistic
        if probabilistic:
            self.head: nn.Module = nn.Linear(in_ch, 2 * latent_dim)
        elif latent_dim != in_ch:
            self.head = nn.Linear(in_ch, latent_dim)
        else:
            self.head = nn.Identity()

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        temb = self.time(sigma)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb)
        pooled = F.relu(self.norm(h)).mean(dim=(2, 3))
        out = self.head(pooled)
        if self.probabilistic:
            mean, logvar = out.chunk(2, dim=1)
            return mean, logvar
        return out, None


class DBRL(Method):
    config_class = DBRLConfig
    config: DBRLConfig

    @classmethod
    def configure_for(
        cls, config: DBRLConfig, dataset, rows: np.ndarray | None = None
    ) -> DBRLConfig:
        """The z-scoring statistics: each channel's mean and standard deviation over
        ``STATISTICS_IMAGES`` training images drawn with a fixed seed."""
        if InputScale(config.input_scale) != InputScale.zscore or config.channel_mean:
            return config
        if isinstance(dataset, type):  # built on meta from the class: no images to read
            channels = dataset.image_shape[2]
            return replace(config, channel_mean=[0.0] * channels, channel_std=[1.0] * channels)
        rows = np.arange(len(dataset)) if rows is None else rows
        drawn = np.random.default_rng(0).choice(rows, min(STATISTICS_IMAGES, len(rows)), False)
        pixels = dataset.images(np.sort(drawn)).reshape(-1, dataset.image_shape[2]) / 255.0
        return replace(
            config, channel_mean=pixels.mean(0).tolist(), channel_std=pixels.std(0).tolist()
        )

    def __init__(self, config: DBRLConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        height, _, channels = image_shape
        zscore = InputScale(config.input_scale) == InputScale.zscore
        if zscore and len(config.channel_mean) != channels:
            raise BenchError(
                "dbrl: input_scale=zscore needs the dataset's channel statistics (build it "
                "with bench.build.build_method, or set method.channel_mean/channel_std)"
            )
        mean = config.channel_mean if zscore else [0.0] * channels
        std = config.channel_std if zscore else [1.0] * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.sde = VESDE(config.sigma_min, config.sigma_max, config.t_min)
        probabilistic = Encoder(config.encoder) == Encoder.probabilistic
        pooled = 64 * config.wide_resnet.widen_factor
        self.latent_dim = config.latent_dim or pooled
        self.encoder = TimeConditionedWideResNet(
            channels, config.wide_resnet, self.latent_dim, probabilistic
        )
        self.score_net = NCSNpp(config.score_net, height, channels, self.latent_dim)

    @property
    def representation_dim(self) -> int:
        return self.latent_dim

    def deviations(self) -> list[str]:
        found = list(NOT_ADOPTED)
        if InputScale(self.config.input_scale) != InputScale.zscore:
            found.append("inputs in [0, 1]; the authors z-score them (method.input_scale=zscore)")
        pooled = 64 * self.config.wide_resnet.widen_factor
        if self.latent_dim != pooled:
            head = "" if self.encoder.probabilistic else ", a linear head on the pooled features"
            found.append(
                f"the code has {self.latent_dim} dimensions{head}; the authors' is the "
                f"{pooled} pooled features (method.latent_dim=null)"
            )
        return found

    def scaled(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] on the scale the networks see (z-scored, or as they are)."""
        return (images - self.mean) / self.std

    # -- training -----------------------------------------------------------------------
    def code(
        self, images: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(z, μ, log σ²) of E(images, t), images on the networks' scale (``scaled``): z = μ
        without a generator or a probabilistic encoder, else μ + σ·ε with ε from
        ``generator``."""
        mean, logvar = self.encoder(images, self.sde.sigma(t))
        if logvar is None or generator is None:
            return mean, mean, logvar
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + eps * (0.5 * logvar).exp(), mean, logvar

    def training_loss(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = self.scaled(batch.images)
        t = self.sde.sample_times(len(images), generator)
        noise = torch.randn(images.shape, generator=generator, device=images.device)
        sigma = self.sde.sigma(t)
        z, mean, logvar = self.code(images, t, generator)
        score = self.score_net(images + sigma[:, None, None, None] * noise, sigma, z)
        loss = denoising_score_matching(score.float(), noise.float(), sigma)
        if logvar is not None:
            name, regulariser = "kl", -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=1)
        else:
            name, regulariser = "l1", z.abs().sum(dim=1)
        logs = {"dsm": loss.mean().detach(), name: regulariser.mean().detach()}
        if self.config.lambda_z > 0:  # as the authors' loss: the term exists only then
            loss = loss + self.config.lambda_z * regulariser
        return loss.mean(), logs

    # -- representation -----------------------------------------------------------------
    def eval_times(self, count: int, device: torch.device) -> torch.Tensor:
        return torch.full((count,), self.config.eval_t, device=device)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.code(self.scaled(images), self.eval_times(len(images), images.device))[1]

    # -- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, codes: torch.Tensor, noise: torch.Tensor, seed: int, steps: int | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] from ``noise`` with every step conditioned on ``codes``. The
        corrector's and predictor's noise comes from a CPU generator, as the other samplers'
        does: diffusers' ScoreSdeVeScheduler draws on the CPU and refuses a CUDA generator,
        and the numbers stay the same on every device."""
        generator = torch.Generator().manual_seed(seed)
        images = self.sde.sample(
            lambda x, sigma: self.score_net(x, sigma, codes),
            noise,
            steps or self.config.sample_steps,
            self.config.sampler,
            generator,
            self.config.corrector_steps,
            self.config.snr,
        )
        return (images * self.std + self.mean).clamp(0, 1)

    def noise(self, count: int, device: torch.device, seed: int) -> torch.Tensor:
        height, width, channels = self.image_shape
        generator = torch.Generator().manual_seed(seed)
        return torch.randn((count, channels, height, width), generator=generator).to(device)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Conditioned on the images' codes E(x, t*), from seeded noise."""
        noise = self.noise(len(images), images.device, seed)
        return self.sample(self.encode(images), noise, seed, steps)

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        self.eval()
        images = picture_images(dataset, self.config.picture_pairs, device)
        codes = self.encode(images)
        noise = self.noise(1, device, seed=0)

        def generate(codes: torch.Tensor) -> torch.Tensor:
            return self.sample(codes, noise.expand(len(codes), *noise.shape[1:]), seed=0)

        # The traversal sweeps each dimension from its 5th to 95th percentile over these images.
        values = percentile_sweep(codes, self.config.traversal_values)
        return [
            write_png(folder / "interchange.png", interchange_grid(images, codes, generate, "dim")),
            write_png(folder / "traversal.png", traversal_grid(codes[:1], values, generate, "dim")),
        ]
