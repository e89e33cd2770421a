"""PDAE's gradient-field ("shift") decoder on a frozen diffusion U-Net, shared by DisDiff and
DiTi (methods-pdae.md §2; DisDiff openaimodel_shift.py).

The frozen U-Net (diffusers' ``UNet2DModel``) runs once, without gradients, and gives its ε
prediction, its time embedding, its bottleneck (the middle block's input) and its encoder's
skip features (``frozen_pass``). The decoder is a second middle block and output path of the
same architecture, with fresh weights, that starts from that bottleneck, reads the same skips,
and in every ResBlock applies a second FiLM from a condition vector after the time
scale-shift: h ← (GN(h)·(1 + s_t) + b_t)·(1 + γ_c) + β_c (``FiLMResnetBlock``). Every
ResBlock's last convolution, every attention output projection and the final convolution
start at zero, so the field g is exactly 0 at initialisation and the combined prediction is
the frozen model's. What diffusers lacks is only that: the second branch on the frozen
encoder's features and the second FiLM; its blocks are used as they are.

The field enters the noise prediction with one of two coefficients (methods-pdae.md §2.4):
training uses the posterior-mean shift ε̂ = ε_θ + k_t·g with k_t = −√α_t(1 − ᾱ_{t−1})/√(1 − ᾱ_t)
(``mean_shift_coefficients``, 0 at t = 0); DDIM sampling and the disentangling loss use
ε̂ = ε_θ − √(1 − ᾱ_t)·g (``guidance_coefficients``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from bench.methods.base import Method, Stage
from bench.methods.diffusion.unet import zero_output_layers


def mean_shift_coefficients(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """k_t = −√α_t·(1 − ᾱ_{t−1}) / √(1 − ᾱ_t) for every t, with ᾱ_{−1} = 1 (PDAE's and DisDiff's
    ``shift_coef``): the DDPM posterior-mean shift by the field, written in ε units."""
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    alphas = alphas_cumprod / previous
    return -alphas.sqrt() * (1 - previous) / (1 - alphas_cumprod).sqrt()


def guidance_coefficients(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """−√(1 − ᾱ_t): the field's coefficient in DDIM sampling and inversion (``ddim_coef``)."""
    return -(1 - alphas_cumprod).sqrt()


@dataclass
class UNetFeatures:
    """What one frozen U-Net pass gives the decoder."""

    prediction: torch.Tensor  # ε_θ(x_t, t)
    embedding: torch.Tensor  # the time embedding every ResBlock reads
    bottleneck: torch.Tensor  # the middle block's input
    skips: tuple[torch.Tensor, ...]  # the encoder's skip features, outermost first


def run_up_path(
    up_blocks: nn.ModuleList,
    hidden: torch.Tensor,
    skips: tuple[torch.Tensor, ...],
    embedding: torch.Tensor,
) -> torch.Tensor:
    """``UNet2DModel``'s output path: each up block takes its share of the skips, innermost
    first (keyword arguments, so that forward pre-hooks such as Skip Dropout see them)."""
    for block in up_blocks:
        count = len(block.resnets)
        taken, skips = skips[-count:], skips[:-count]
        hidden = block(hidden_states=hidden, res_hidden_states_tuple=taken, temb=embedding)
    return hidden


@torch.no_grad()
def frozen_pass(unet: UNet2DModel, sample: torch.Tensor, timesteps: torch.Tensor) -> UNetFeatures:
    """``UNet2DModel.forward`` (positional time embedding, no class labels), keeping the
    features the decoder reads."""
    embedding = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
    hidden = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (hidden,)
    for block in unet.down_blocks:
        hidden, block_skips = block(hidden_states=hidden, temb=embedding)
        skips += block_skips
    bottleneck = hidden
    hidden = run_up_path(unet.up_blocks, unet.mid_block(hidden, embedding), skips, embedding)
    prediction = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
    return UNetFeatures(prediction, embedding, bottleneck, skips)


class FiLMResnetBlock(nn.Module):
    """A diffusers ``ResnetBlock2D`` (scale-shift time conditioning) with PDAE's second FiLM
    from a condition vector (``ResBlockShift``): SiLU → Linear(condition → 2·channels) gives
    (γ, β), applied after the time scale-shift. Called as the block it wraps is; the condition
    comes from the decoder that owns it (``condition``, set for each forward pass)."""

    def __init__(self, block: ResnetBlock2D, condition_dim: int, decoder: GradientFieldDecoder):
        super().__init__()
        if block.time_embedding_norm != "scale_shift" or block.time_emb_proj is None:
            raise ValueError("FiLMResnetBlock needs a ResnetBlock2D with scale-shift time norm")
        self.block = block
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(condition_dim, 2 * block.out_channels))
        self._decoder = [decoder]  # a list: not a submodule (the decoder owns this block)

    def forward(self, inputs: torch.Tensor, temb: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        block = self.block
        hidden = block.nonlinearity(block.norm1(inputs))
        if block.upsample is not None:
            inputs, hidden = block.upsample(inputs), block.upsample(hidden)
        elif block.downsample is not None:
            inputs, hidden = block.downsample(inputs), block.downsample(hidden)
        hidden = block.conv1(hidden)
        scale, shift = block.time_emb_proj(block.nonlinearity(temb))[..., None, None].chunk(2, 1)
        hidden = block.norm2(hidden) * (1 + scale) + shift
        condition = self._decoder[0].condition
        gamma, beta = self.film(condition)[..., None, None].chunk(2, 1)
        hidden = hidden * (1 + gamma) + beta
        hidden = block.conv2(block.dropout(block.nonlinearity(hidden)))
        if block.conv_shortcut is not None:
            inputs = block.conv_shortcut(inputs)
        return (inputs + hidden) / block.output_scale_factor


class GradientFieldDecoder(nn.Module):
    """g(x_t, t, condition): a fresh middle block and output path shaped as ``unet``'s, reading
    its frozen features, with ``FiLMResnetBlock`` in every ResBlock and zero-initialised
    outputs (so g ≡ 0 at initialisation). Its dropout is the U-Net's, active in training."""

    def __init__(self, unet: UNet2DModel, condition_dim: int) -> None:
        super().__init__()
        fresh = UNet2DModel.from_config(unet.config)
        for mine, theirs in zip(attention_layers(fresh), attention_layers(unet), strict=True):
            mine.heads, mine.scale = theirs.heads, theirs.scale
        self.mid_block, self.up_blocks = fresh.mid_block, fresh.up_blocks
        self.conv_norm_out, self.conv_act, self.conv_out = (
            fresh.conv_norm_out,
            fresh.conv_act,
            fresh.conv_out,
        )
        self.condition: torch.Tensor | None = None
        for blocks in (self.mid_block, *self.up_blocks):
            for name in ("resnets", "upsamplers"):
                layers = getattr(blocks, name, None) or []
                for i, layer in enumerate(layers):
                    if isinstance(layer, ResnetBlock2D):
                        layers[i] = FiLMResnetBlock(layer, condition_dim, self)
        zero_output_layers(self)

    def forward(self, features: UNetFeatures, embedding: torch.Tensor, condition: torch.Tensor):
        """The field for a batch whose rows may repeat the frozen features' rows: ``features``
        for B images, ``embedding`` and ``condition`` for k·B rows (k passes per image, the
        image index varying fastest)."""
        repeats = len(condition) // len(features.bottleneck)
        skips = tuple(skip.repeat(repeats, 1, 1, 1) for skip in features.skips)
        self.condition = condition
        try:
            hidden = self.mid_block(features.bottleneck.repeat(repeats, 1, 1, 1), embedding)
            hidden = run_up_path(self.up_blocks, hidden, skips, embedding)
        finally:
            self.condition = None
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden)))


def attention_layers(model: nn.Module) -> list[Attention]:
    return [m for m in model.modules() if isinstance(m, Attention)]


class OnFrozenModel(Method):
    """Base of the PDAE family (DisDiff, DiTi): trainable parts on a frozen diffusion model
    that is trained as a shared stage. ``frozen`` names both the config section that declares
    the stage (its ``stage(name)``) and the attribute that holds the frozen model."""

    frozen: ClassVar[str]

    def register_field_coefficients(self) -> torch.Tensor:
        """Buffers ``mean_shift`` (k_t, training) and ``guidance`` (−√(1 − ᾱ_t), sampling) from
        the frozen model's schedule; returns its ᾱ_t in float32."""
        alphas_cumprod = getattr(self, self.frozen).scheduler.alphas_cumprod.float()
        self.register_buffer("mean_shift", mean_shift_coefficients(alphas_cumprod), False)
        self.register_buffer("guidance", guidance_coefficients(alphas_cumprod), False)
        return alphas_cumprod

    def stages(self) -> list[Stage]:
        return [getattr(self.config, self.frozen).stage(self.frozen)]

    def attach_stage(self, name: str, stage: Method) -> None:
        if name != self.frozen:
            super().attach_stage(name, stage)
        getattr(self, self.frozen).load_state_dict(stage.state_dict())

    def train(self, mode: bool = True) -> OnFrozenModel:
        super().train(mode)
        getattr(self, self.frozen).eval()  # frozen, always in inference mode
        return self
