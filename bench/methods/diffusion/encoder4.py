"""DisDiff's image encoder ``Encoder4`` (ldm/modules/encoders/modules.py), which EncDiff
reuses: d = 128, four conv 4×4 stride 2 with batch norm (ReLU after all but the third, as
coded), a residual block, batch norm, ReLU, a second residual block, and Linear 2048 → the
code. Input: images in [−1, 1].

The residual block is ReLU → conv 3×3 → BN → ReLU → conv 1×1 plus the identity, with no batch
norm after the last convolution (EncDiff's ``EncResBlock(bn=True)``, openaimodel_enc.py:969-989;
fidelity-dyga-sd.md §1 row 10; DisDiff's ``ResBlock``, methods-pdae.md §4).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder4(nn.Sequential):
    def __init__(self, in_channels: int, d: int, units: int) -> None:
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(in_channels if i == 0 else d, d, 4, 2, 1), nn.BatchNorm2d(d)]
            if i != 2:  # as coded: no ReLU after the third convolution
                layers.append(nn.ReLU())
        layers += [
            ResidualBlock(d),
            nn.BatchNorm2d(d),
            nn.ReLU(),
            ResidualBlock(d),
            nn.Flatten(),
            nn.Linear(d * 4 * 4, units),
        ]
        super().__init__(*layers)
