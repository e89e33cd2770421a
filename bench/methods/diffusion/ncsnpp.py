"""NCSN++ (Song et al. 2021) as score_sde's ``ncsnpp.py`` builds it for its continuous VE models,
with the code input of Diffusion-Based Representation Learning (methods-more.md §3.2), from
diffusers' blocks.

The score network s(x, σ, z): Gaussian Fourier features of log σ (scale 16) through two linear
layers give the time embedding; BigGAN residual blocks (GroupNorm with min(C/4, 32) groups,
swish, dropout, a 1×1 shortcut where the width changes or the block resamples, average-pool
down and nearest up, sums scaled by 1/√2) with single-head self-attention at the listed
resolutions; the input pyramid of ``progressive_input=residual`` (the image, downsampled by
strided convolutions, added to each level's output, scaled by 1/√2); no output pyramid; the
output divided by σ (``scale_by_sigma``).

The code z enters twice, as DBRL's ``NCSNpp`` does with ``include_encoder``:

- a linear map of z (4·nf wide) is concatenated to the time embedding, so every residual
  block's embedding projection reads both;
- three swish-activated linear layers map that joint embedding to a feature map of the
  bottleneck's size and width, concatenated to the bottleneck's features: the middle blocks
  and the first block of each upsampling level are twice as wide.

diffusers provides the residual block (``ResnetBlock2D`` with ``up``/``down``), the attention
block, the strided-convolution downsampler and the Fourier features; what is written here is
the assembly and score_sde's initialisation (``default_init``: variance scaling, fan_avg,
uniform; the blocks' last convolutions and the output at scale 0), which diffusers' layers do
not have. The linear layers of the code path keep PyTorch's initialisation, as the authors'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import GaussianFourierProjection
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn

SKIP_RESCALE = math.sqrt(2.0)


@dataclass
class NCSNppConfig:
    """score_sde's ``cifar10_ncsnpp_small_continuous`` with a fifth level for 64×64 images."""

    nf: int = 16
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2, 2])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.1
    fourier_scale: float = 16.0


def groups(channels: int) -> int:
    """score_sde's GroupNorm size: min(C/4, 32)."""
    return min(channels // 4, 32)


def variance_scaling_(weight: torch.Tensor, scale: float) -> None:
    """score_sde's ``default_init(scale)``: uniform with variance scale / mean(fan_in, fan_out);
    a scale of 0 is 1e-10, as there."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    bound = math.sqrt(3 * max(scale, 1e-10) / fan_avg)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def init_layer(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    variance_scaling_(layer.weight, scale)
    nn.init.zeros_(layer.bias)
    return layer


class TimeEmbedding(nn.Sequential):
    """score_sde's embedding of the noise level: Gaussian Fourier features of log σ, two
    linear layers with swish between (DBRL's encoder has one of its own)."""

    def __init__(self, features: int, scale: float = 16.0) -> None:
        super().__init__(
            GaussianFourierProjection(features, scale=scale, log=True),
            init_layer(nn.Linear(2 * features, 4 * features)),
            nn.SiLU(),
            init_layer(nn.Linear(4 * features, 4 * features)),
        )


class NCSNpp(nn.Module):
    def __init__(self, config: NCSNppConfig, image_size: int, channels: int, code_dim: int) -> None:
        super().__init__()
        nf, levels = config.nf, len(config.ch_mult)
        temb = 8 * nf  # the time embedding (4·nf) and the code's (4·nf), concatenated
        self.time = TimeEmbedding(nf, config.fourier_scale)
        self.code_to_temb = nn.Linear(code_dim, 4 * nf)

        def resnet(in_ch: int, out_ch: int | None = None, **resample: bool) -> ResnetBlock2D:
            out_ch = out_ch or in_ch
            block = ResnetBlock2D(
                in_channels=in_ch,
                out_channels=out_ch,
                temb_channels=temb,
                groups=groups(in_ch),
                groups_out=groups(out_ch),
                eps=1e-6,
                dropout=config.dropout,
                output_scale_factor=SKIP_RESCALE,
                use_in_shortcut=in_ch != out_ch or any(resample.values()),
                **resample,
            )
            for layer, scale in ((block.conv1, 1), (block.time_emb_proj, 1), (block.conv2, 0)):
                init_layer(layer, scale)
            if block.conv_shortcut is not None:
                init_layer(block.conv_shortcut)
            return block

        def attention(ch: int) -> Attention:
            block = Attention(
                ch,
                heads=1,
                dim_head=ch,
                norm_num_groups=groups(ch),
                eps=1e-6,
                bias=True,
                residual_connection=True,
                rescale_output_factor=SKIP_RESCALE,
                _from_deprecated_attn_block=True,
            )
            for projection in (block.to_q, block.to_k, block.to_v):
                init_layer(projection, 0.1)
            init_layer(block.to_out[0], 0)
            return block

        self.conv_in = init_layer(nn.Conv2d(channels, nf, 3, padding=1))
        skips, size, ch, pyramid_ch = [nf], image_size, nf, channels
        self.down = nn.ModuleList()
        for level, mult in enumerate(config.ch_mult):
            stage = nn.Module()
            stage.resnets, stage.attentions = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stage.resnets.append(resnet(ch, nf * mult))
                ch = nf * mult
                if size in config.attn_resolutions:
                    stage.attentions.append(attention(ch))
                skips.append(ch)
            if level < levels - 1:
                stage.downsample = resnet(ch, down=True)
                stage.pyramid = Downsample2D(
                    pyramid_ch, use_conv=True, out_channels=ch, padding=0, name="pyramid"
                )  # a name other than "conv": diffusers would keep the layer under two keys
                init_layer(stage.pyramid.conv)
                pyramid_ch, size = ch, size // 2
                skips.append(ch)
            self.down.append(stage)

        # The code as a feature map of the bottleneck's size and width.
        self.bottleneck_size, self.bottleneck_ch = size, ch
        side = ch * size
        self.code_map = nn.Sequential(
            nn.Linear(temb, side), nn.SiLU(), nn.Linear(side, side), nn.SiLU(),
            nn.Linear(side, side * size), nn.SiLU(),
        )  # fmt: skip
        ch *= 2
        self.middle = nn.ModuleList([resnet(ch), attention(ch), resnet(ch)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.ch_mult))):
            stage = nn.Module()
            stage.resnets, stage.attentions = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                stage.resnets.append(resnet(ch + skips.pop(), nf * mult))
                ch = nf * mult
            if size in config.attn_resolutions:
                stage.attentions.append(attention(ch))
            if level > 0:
                stage.upsample = resnet(ch, up=True)
                size *= 2
            self.up.append(stage)
        self.norm_out = nn.GroupNorm(groups(ch), ch, eps=1e-6)
        self.conv_out = init_layer(nn.Conv2d(ch, channels, 3, padding=1), 0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The score at ``x`` (B, C, H, W) for noise levels ``sigma`` (B,) and codes (B, D)."""
        act = nn.functional.silu
        temb = torch.cat([self.time(sigma), self.code_to_temb(code)], dim=1)

        h = self.conv_in(x)
        skips, pyramid = [h], x
        for stage in self.down:
            for i, block in enumerate(stage.resnets):
                h = block(h, temb)
                if len(stage.attentions):
                    h = stage.attentions[i](h)
                skips.append(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(skips[-1], temb)
                pyramid = (stage.pyramid(pyramid) + h) / SKIP_RESCALE
                h = pyramid
                skips.append(h)

        size, ch = self.bottleneck_size, self.bottleneck_ch
        code_map = self.code_map(temb).view(len(x), ch, size, size)
        h = torch.cat([skips[-1], code_map], dim=1)
        h = self.middle[0](h, temb)
        h = self.middle[1](h)
        h = self.middle[2](h, temb)

        for stage in self.up:
            for block in stage.resnets:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            for block in stage.attentions:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h, temb)
        h = self.conv_out(act(self.norm_out(h)))
        return h / sigma[:, None, None, None]
