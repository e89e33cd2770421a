"""DisUnknown's networks (Xiang et al., ICCV 2021), as stormraiser/disunknown @194cc01 builds
them (``models/models.py``, ``modules/``): every layer weight-normalised without a learned
gain unless it is an output layer ("affine"), every activation a PReLU whose output is
renormalised to zero mean and unit variance for a unit-Gaussian input.

A conv trunk has one level per halving of the resolution: level 0 is a 6×6 stride-2
convolution, later levels are MiniResBlocks (a 4×4 stride-2 convolution beside an
average-pooled shortcut, mixed by a normalised learned sum). The generator mirrors it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def _norm(weight: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return weight.pow(2).sum(dims, keepdim=True).clamp(min=EPS).sqrt()


class WeightNormalised:
    """A layer whose weight per output unit is used at unit norm (times ``gain``); with
    ``affine``, times a learned per-unit scale too, and a bias (output layers)."""

    norm_dims: tuple[int, ...]  # the weight's dimensions that one output unit spans
    scale_shape: tuple[int, ...]  # how the per-unit scale broadcasts over the weight
    gain = 1.0
    weight: nn.Parameter

    def _normalise(self, units: int, affine: bool) -> None:
        self.weight.data.div_(_norm(self.weight.data, self.norm_dims) / self.gain)
        self.scale = nn.Parameter(torch.ones(units)) if affine else None

    def unit_weight(self) -> torch.Tensor:
        weight = self.weight / (_norm(self.weight, self.norm_dims) / self.gain)
        return weight if self.scale is None else weight * self.scale.view(self.scale_shape)


class WNConv2d(WeightNormalised, nn.Conv2d):
    norm_dims, scale_shape = (1, 2, 3), (-1, 1, 1, 1)

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
        affine: bool = False,
    ) -> None:  # fmt: skip
        nn.Conv2d.__init__(self, cin, cout, kernel, stride, padding, bias=affine)
        self._normalise(cout, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.unit_weight(), self.bias, self.stride, self.padding)


class WNConvTranspose2d(WeightNormalised, nn.ConvTranspose2d):
    """Each output channel's kernel has norm √(stride²), so that each output pixel sees a
    unit-norm kernel on average."""

    norm_dims, scale_shape = (0, 2, 3), (1, -1, 1, 1)

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
        affine: bool = False,
    ) -> None:  # fmt: skip
        nn.ConvTranspose2d.__init__(self, cin, cout, kernel, stride, padding, bias=affine)
        self.gain = float(stride)  # √(stride_h · stride_w)
        self._normalise(cout, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.unit_weight(), self.bias, self.stride, self.padding)


class WNLinear(WeightNormalised, nn.Linear):
    norm_dims, scale_shape = (1,), (-1, 1)

    def __init__(self, fin: int, fout: int, affine: bool = False) -> None:
        nn.Linear.__init__(self, fin, fout, bias=affine)
        self._normalise(fout, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.unit_weight(), self.bias)


class WNAdd(nn.Module):
    """a·x + b·y per channel with (a, b) normalised to unit length: a residual sum that keeps
    unit variance for independent unit-variance inputs."""

    def __init__(self, channels: int, first: float, second: float) -> None:
        super().__init__()
        length = math.hypot(first, second)
        self.scale1 = nn.Parameter(torch.full((channels,), first / length))
        self.scale2 = nn.Parameter(torch.full((channels,), second / length))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        length = (self.scale1.pow(2) + self.scale2.pow(2)).clamp(min=EPS).sqrt()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * (self.scale1 / length).view(shape) + y * (self.scale2 / length).view(shape)


class WNPReLU(nn.Module):
    """PReLU(x + b) minus its mean, over its std, both in closed form for x ~ N(0, 1)."""

    def __init__(self, channels: int, slope: float = 0.25) -> None:
        super().__init__()
        self.pre_bias = nn.Parameter(torch.zeros(channels))
        self.weight = nn.Parameter(torch.full((channels,), slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, a = self.pre_bias, self.weight
        pdf = torch.exp(-0.5 * b.pow(2)) / math.sqrt(2 * math.pi)  # φ(−b) = φ(b)
        cdf = 0.5 * (1 + torch.erf(-b / math.sqrt(2)))  # Φ(−b)
        mean = b + (a - 1) * (cdf * b - pdf)
        second = 1 + b.pow(2) + (a.pow(2) - 1) * (cdf * (1 + b.pow(2)) - pdf * b)
        std = (second - mean.pow(2)).sqrt()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (F.prelu(x + b.view(shape), a) - mean.view(shape)) / std.view(shape)


class UpSample2x(nn.Module):
    def __init__(self, crop: int) -> None:
        super().__init__()
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        c = self.crop
        return x[:, :, c:-c, c:-c] if c > 0 else x


class MiniResBlock(nn.Module):
    """stride 2: down; −2: up (transposed); 1: same size. ``residue_ratio`` is the residual
    branch's initial share of the variance."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        extra_padding: int = 0,
        residue_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if stride == 2:
            conv: nn.Module = WNConv2d(cin, cout, 4, 2, 1 + extra_padding)
        elif stride == -2:
            conv = WNConvTranspose2d(cin, cout, 4, 2, 1 + extra_padding)
        else:
            conv = WNConv2d(cin, cout, 3, 1, 1 + extra_padding)
        self.residue = nn.Sequential(conv, WNPReLU(cout))
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, padding=extra_padding) if stride == 2 else nn.Identity(),
            WNConv2d(cin, cout, 1) if cin != cout else nn.Identity(),
            UpSample2x(extra_padding) if stride == -2 else nn.Identity(),
        )
        self.add = WNAdd(cout, math.sqrt(1 - residue_ratio), math.sqrt(residue_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.shortcut(x), self.residue(x))


class MiniFCResBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.residue = nn.Sequential(WNLinear(features, features), WNPReLU(features))
        self.add = WNAdd(features, 1.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.residue(x))


@dataclass(frozen=True)
class Layout:
    """What every network of a run is built for: the image size and channels, the conv
    channels per level (one level per halving) and the FC width."""

    size: int
    channels: int
    conv_channels: tuple[int, ...]
    fc_features: int


def level_paddings(size: int, levels: int) -> tuple[int, list[int]]:
    """The top feature map's size and each level's extra padding: a level pads by one where
    halving would leave an odd size (the last level never pads)."""
    paddings = []
    for _ in range(levels - 1):
        paddings.append(1 if size % 4 == 2 else 0)
        size = size // 2 + paddings[-1]
    if levels > 0:
        paddings.append(0)
        size //= 2
    return size, paddings


class ConvTrunk(nn.Module):
    """Conv levels, then FC: a linear layer and PReLU, then ``fc_layers`` FC residual blocks
    (the authors' EncoderBase, shared by encoders, classifiers and discriminators)."""

    def __init__(self, layout: Layout, fc_layers: int) -> None:
        super().__init__()
        widths = layout.conv_channels
        top, paddings = level_paddings(layout.size, len(widths))
        conv: list[nn.Module] = []
        for i, width in enumerate(widths):
            if i == 0:
                conv += [WNConv2d(layout.channels, width, 6, 2, 2 + paddings[0]), WNPReLU(width)]
            else:
                conv.append(MiniResBlock(widths[i - 1], width, 2, paddings[i], 1 / (i + 1)))
        self.conv = nn.Sequential(*conv)
        self.fc = nn.Sequential(
            WNLinear(widths[-1] * top * top, layout.fc_features),
            WNPReLU(layout.fc_features),
            *[MiniFCResBlock(layout.fc_features) for _ in range(fc_layers)],
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class GaussianEncoder(nn.Module):
    """Image → a diagonal Gaussian (mean, std = softplus) per code block: the unknown encoder
    E (one block) and the labelled encoder S (a block per labelled factor). ``zero_init``
    starts every block at N(0, 1) (S; E starts random, the authors' ``zero_init: false``)."""

    def __init__(
        self, layout: Layout, fc_layers: int, code_sizes: list[int], zero_init: bool = False
    ) -> None:
        super().__init__()
        self.trunk = ConvTrunk(layout, fc_layers)
        width = layout.fc_features
        self.means = nn.ModuleList(WNLinear(width, m, affine=True) for m in code_sizes)
        self.stds = nn.ModuleList(WNLinear(width, m, affine=True) for m in code_sizes)
        if zero_init:
            with torch.no_grad():
                for layer in self.means:
                    layer.scale.zero_()
                    layer.bias.zero_()
                for layer in self.stds:
                    layer.scale.zero_()
                    layer.bias.fill_(math.log(math.e - 1))  # softplus⁻¹(1)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        h = self.trunk(x)
        return [(m(h), F.softplus(s(h))) for m, s in zip(self.means, self.stds, strict=True)]


def random_shift(images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """The authors' ``random_offset``: each sample shifted by a random (dy, dx), each the sum
    of two uniform draws below size/4, inside a zero border; paired images by the same."""
    size = images[0].shape[2]
    border = size // 4
    n = images[0].shape[0]
    device = images[0].device
    dy, dx = sum(torch.randint(border, (2, 2, n), generator=generator, device=device).unbind(0))
    # Gathered on the device (no shift is read back to the host): sample k's window starts
    # at (dy[k], dx[k]) of its padded image.
    rows = (dy[:, None] + torch.arange(size, device=device))[:, :, None]  # (n, H, 1)
    out = []
    for x in images:
        cols = (dx[:, None] + torch.arange(x.shape[3], device=device))[:, None, :]  # (n, 1, W)
        padded = F.pad(x, (border,) * 4).permute(0, 2, 3, 1)  # (n, H', W', C)
        batch = torch.arange(n, device=device)[:, None, None]
        out.append(padded[batch, rows, cols].permute(0, 3, 1, 2))
    return out


class Critic(nn.Module):
    """What the discriminator D and the classifiers build on: a trunk with linear heads, and
    the paired call of stage 2 — a real image, a generated one and, with ``reflect``, the
    generated one's features mirrored through the real one's (2·f(real) − f(fake)), all
    shifted alike when ``generator`` is given."""

    def __init__(self, layout: Layout, fc_layers: int, heads: list[int]) -> None:
        super().__init__()
        self.trunk = ConvTrunk(layout, fc_layers)
        self.heads = nn.ModuleList(WNLinear(layout.fc_features, m, affine=True) for m in heads)

    def _heads(self, h: torch.Tensor) -> list[torch.Tensor]:
        return [head(h) for head in self.heads]

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        if generator is not None:
            (x,) = random_shift([x], generator)
        return self._heads(self.trunk(x))

    def paired(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        generator: torch.Generator | None,
        reflect: bool,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]:
        if generator is not None:
            real, fake = random_shift([real, fake], generator)
        f_real, f_fake = self.trunk.features(real), self.trunk.features(fake)
        mirrored = self._heads(self.trunk.fc(f_real * 2 - f_fake)) if reflect else None
        return self._heads(self.trunk.fc(f_real)), self._heads(self.trunk.fc(f_fake)), mirrored


class CodeClassifier(nn.Module):
    """Stage 1's classifier on the unknown code: an MLP on (code, 1 − keep mask)."""

    def __init__(self, code_size: int, features: int, layers: int, classes: list[int]) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            WNLinear(code_size * 2, features),
            WNPReLU(features),
            *[MiniFCResBlock(features) for _ in range(layers)],
        )
        self.heads = nn.ModuleList(WNLinear(features, m, affine=True) for m in classes)

    def forward(self, code: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
        h = self.fc(torch.cat((code, 1 - keep), 1))
        return [head(h) for head in self.heads]


class CompoundClassifier(nn.Module):
    """Stage 1's adversary C (``cla1_mode: compound``): logits of an image classifier on the
    cross image plus those of the code classifier, log-softmaxed per labelled factor."""

    def __init__(self, image: Critic, code: CodeClassifier) -> None:
        super().__init__()
        self.image, self.code = image, code

    def forward(
        self, cross: torch.Tensor, code: torch.Tensor, keep: torch.Tensor
    ) -> list[torch.Tensor]:
        return [
            F.log_softmax(a + b, 1)
            for a, b in zip(self.image(cross), self.code(code, keep), strict=True)
        ]


class Generator(nn.Module):
    """Codes and their nested-dropout keep masks → an image in [−1, 1] and one learned
    per-image std σ (softplus) of its Gaussian likelihood."""

    def __init__(self, layout: Layout, fc_layers: int, code_sizes: list[int]) -> None:
        super().__init__()
        widths, fc_features = layout.conv_channels, layout.fc_features
        levels = len(widths)
        top, paddings = level_paddings(layout.size, levels)
        self.top_shape = (-1, widths[-1], top, top)
        self.fc1 = nn.Sequential(
            WNLinear(sum(code_sizes) * 2, fc_features),
            *[MiniFCResBlock(fc_features) for _ in range(fc_layers)],
        )
        self.std_head = WNLinear(fc_features, 1, affine=True)
        width = widths[-1] * top * top
        self.fc2 = nn.Sequential(WNLinear(fc_features, width), WNPReLU(width))
        conv: list[nn.Module] = []
        for i in range(levels - 1, -1, -1):
            if i == 0:
                last = WNConvTranspose2d(widths[0], layout.channels, 6, 2, 2 + paddings[0], True)
                conv += [last, nn.Tanh()]
            else:
                ratio = 1 / (levels - i + 1)
                conv.append(MiniResBlock(widths[i], widths[i - 1], -2, paddings[i], ratio))
        self.conv = nn.Sequential(*conv)

    def forward(
        self, codes: list[torch.Tensor], keeps: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``keeps[i]`` None: every dimension of code i kept."""
        dropped = [
            torch.zeros_like(c) if k is None else 1 - k for c, k in zip(codes, keeps, strict=True)
        ]
        h = self.fc1(torch.cat(codes + dropped, 1))
        image = self.conv(self.fc2(h).reshape(self.top_shape))
        return image, F.softplus(self.std_head(h).squeeze(1))


class LabelEmbedder(nn.Module):
    """B for one labelled factor: a learned Gaussian (mean, log-std) per class, normalised by
    the class-frequency-weighted mixture's mean and std so that the code's marginal has zero
    mean and unit variance. ``init``: ``linear`` (ordered classes on a line in dimension 0)
    or ``circle`` (cyclic classes on the unit circle in dimensions 0–1)."""

    def __init__(self, frequencies: torch.Tensor, size: int, init: str | None = None) -> None:
        super().__init__()
        classes = len(frequencies)
        self.mean = nn.Parameter(torch.zeros(classes, size))
        self.log_std = nn.Parameter(torch.zeros(classes, size))
        with torch.no_grad():
            if init == "linear":
                self.mean[:, 0] = torch.linspace(-1 + 1 / classes, 1 - 1 / classes, classes)
                self.log_std[:, 0] = math.log(1 / classes)
            elif init == "circle":
                angles = torch.linspace(0, 2 * math.pi, classes + 1)[:classes]
                self.mean[:, 0], self.mean[:, 1] = angles.cos(), angles.sin()
                self.log_std[:, :2] = math.log(math.sin(math.pi / classes))
        self.register_buffer("frequencies", frequencies.float().clone())  # one per embedder

    def normalised(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every class's (mean, std) after normalisation, (classes, size) each."""
        p = self.frequencies
        mean = p @ self.mean
        spread = p @ self.mean.pow(2) - mean.pow(2)
        within = p @ self.log_std.exp().pow(2)
        std = (spread + within).clamp(min=EPS).sqrt()
        return (self.mean - mean) / std, self.log_std.exp() / std

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.normalised()
        return mean[labels], std[labels]

    def code_loss(self) -> torch.Tensor:
        """Per dimension: the frequency-weighted KL(B(class) ‖ N(0, 1)) over the classes."""
        mean, std = self.normalised()
        return self.frequencies @ ((mean.pow(2) + std.pow(2)) * 0.5 - std.log() - 0.5)
