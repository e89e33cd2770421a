"""The conditional latent U-Net of the token-conditioned diffusion methods, and Skip Dropout.

diffusers' ``UNet2DConditionModel`` set up as LDM's openaimodel U-Net of DyGA+SD and EncDiff
(methods.md §1.0, §7): channels (64, 128, 256, 256), two ResNet layers per block, a spatial
transformer (self-attention, cross-attention to the tokens, feed-forward) at the first three
resolutions (16, 8, 4 for a 16×16 latent) and in the middle block, 8 heads, scale-shift time
conditioning. One difference from LDM: diffusers resamples with a strided convolution where
LDM's ``resblock_updown`` uses a ResNet block.

Skip Dropout (methods.md §1.3) drops whole channels (p, rescaled by 1/(1−p)) of the encoder's
skip features of the listed spatial sizes just before the decoder concatenates them, in
training only. It is a forward pre-hook on each up block, so the U-Net stays diffusers' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel


@dataclass
class UNetConfig:
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    layers_per_block: int = 2
    attention_levels: int = 3  # cross-attention at the first this many resolutions
    heads: int = 8
    dropout: float = 0.1
    norm_groups: int = 32


@dataclass
class SkipDropoutConfig:
    p: float = 0.2  # 0 turns Skip Dropout off
    sizes: list[int] = field(default_factory=lambda: [16, 8])  # spatial sizes of dropped skips


def build_unet(
    config: UNetConfig, latent_channels: int, latent_size: int, context_dim: int
) -> UNet2DConditionModel:
    levels = len(config.channels)
    attention = [i < config.attention_levels for i in range(levels)]
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple(
            "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)
        ),
        block_out_channels=tuple(config.channels),
        layers_per_block=config.layers_per_block,
        cross_attention_dim=context_dim,
        attention_head_dim=config.heads,  # diffusers reads this as the number of heads
        dropout=config.dropout,
        norm_num_groups=config.norm_groups,
        resnet_time_scale_shift="scale_shift",
    )


class SkipDropout:
    """Channel dropout on the U-Net's skip connections of the given spatial sizes.

    ``generator`` (set by the method before each training forward pass) draws the masks, so
    training stays reproducible; ``dropped`` counts the skip tensors dropped so far.
    """

    def __init__(self, unet: UNet2DConditionModel, config: SkipDropoutConfig) -> None:
        self.unet, self.p, self.sizes = unet, config.p, set(config.sizes)
        self.generator: torch.Generator | None = None
        self.dropped = 0
        if self.p > 0:
            for block in unet.up_blocks:
                block.register_forward_pre_hook(self._drop_skips, with_kwargs=True)

    def _drop_skips(self, block, args, kwargs):
        if not self.unet.training:
            return None
        skips = []
        for skip in kwargs["res_hidden_states_tuple"]:
            if skip.shape[-1] in self.sizes:
                keep = torch.rand(
                    skip.shape[:2], generator=self.generator, device=self.generator.device
                )
                mask = (keep.to(skip.device) >= self.p).to(skip.dtype)[..., None, None]
                skip = skip * mask / (1 - self.p)
                self.dropped += 1
            skips.append(skip)
        return args, {**kwargs, "res_hidden_states_tuple": tuple(skips)}
