"""LPIPS (Zhang et al. 2018, v0.1, VGG16 backbone): the perceptual term of the authors' VQ
first-stage loss (taming's ``VQLPIPSWithDiscriminator``). Its weights are files like FID's
Inception weights: ``bench data download lpips`` fetches torchvision's VGG16 and LPIPS' linear
heads, sha256-checked, to where this module reads them by default; other copies can be named
(``vgg16_weights``, ``lpips_weights``). A missing file is a one-line error that says how to
get it, raised when the first stage is built: before anything trains.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.datasets.download import (
    LPIPS_HEADS_FILE,
    VGG16_FILE,
    VGG16_SHA256_PREFIX,
    folder_of,
    sha256_of,
)
from bench.errors import BenchError

# VGG16 "features" up to relu5_3: (out channels per conv, max-pool after the block).
_VGG_BLOCKS = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """Perceptual distance between images in [−1, 1]: (B,) per pair. Frozen."""

    def __init__(self, vgg16_weights: str | None, lpips_weights: str | None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, self.taps = 3, []
        for i, block in enumerate(_VGG_BLOCKS):
            if i:
                layers.append(nn.MaxPool2d(2, 2))
            for width in block:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            self.taps.append(len(layers))  # relu{i+1}_2/3 ends here
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(b[-1], 1, 1, bias=False) for b in _VGG_BLOCKS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self._load(vgg16_weights, lpips_weights)
        self.requires_grad_(False).eval()

    def _load(self, vgg16_weights: str | None, lpips_weights: str | None) -> None:
        paths = weights_files(vgg16_weights, lpips_weights)
        if self.shift.is_meta:  # built to be inspected (a stage walk): files checked, not read
            return
        vgg16 = paths["vgg16_weights"]
        if not vgg16_weights and not sha256_of(vgg16).startswith(VGG16_SHA256_PREFIX):
            raise BenchError(f"{vgg16} is not {VGG16_FILE}; run `bench data download lpips`")
        vgg = torch.load(vgg16, map_location="cpu", weights_only=True)
        self.features.load_state_dict(
            {k[len("features.") :]: v for k, v in vgg.items() if k.startswith("features.")}
        )
        heads = torch.load(paths["lpips_weights"], map_location="cpu", weights_only=True)
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(heads[f"lin{i}.model.1.weight"])

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # always frozen, always in eval mode

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        distance = 0.0
        fa, fb, start = (a - self.shift) / self.scale, (b - self.shift) / self.scale, 0
        for tap, lin in zip(self.taps, self.lins, strict=True):
            fa, fb = self.features[start:tap](fa), self.features[start:tap](fb)
            start = tap
            diff = (_unit_channels(fa) - _unit_channels(fb)).square()
            distance = distance + lin(diff).mean(dim=(1, 2, 3))
        return distance


def _unit_channels(x: torch.Tensor) -> torch.Tensor:
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)


def weights_files(vgg16_weights: str | None, lpips_weights: str | None) -> dict[str, Path]:
    """The two weight files (given, else where ``bench data download lpips`` puts them), or
    a one-line error naming the first one missing and how to get it."""
    paths = {
        "vgg16_weights": Path(vgg16_weights or folder_of("lpips") / VGG16_FILE),
        "lpips_weights": Path(lpips_weights or folder_of("lpips") / LPIPS_HEADS_FILE),
    }
    for key, path in paths.items():
        if not path.is_file():
            raise BenchError(
                f"the first stage's perceptual loss (LPIPS) needs {path}, which is missing: run "
                f"`bench data download lpips`, or set {key} of the first stage's autoencoder "
                "settings to a copy, or its perceptual_weight to 0 (they sit under "
                "method.first_stage.autoencoder; DisDiff's under method.ldm.model.first_stage)"
            )
    return paths
