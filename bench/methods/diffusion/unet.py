"""The latent U-Nets: the conditional one of the token-conditioned diffusion methods, the
unconditional one of the LDM stage, and Skip Dropout.

diffusers' ``UNet2DConditionModel`` set up as LDM's openaimodel U-Net of DyGA+SD and EncDiff
(methods.md §1.0, §7): channels (64, 128, 256, 256), two ResNet layers per block, a spatial
transformer (self-attention, cross-attention to the tokens, feed-forward) at the first three
resolutions (16, 8, 4 for a 16×16 latent) and in the middle block, 8 heads, scale-shift time
conditioning. Two things diffusers' U-Net does not do the LDM way are added here:

- ``resblock_updown``: LDM resamples with a ResNet block (GroupNorm, SiLU, average pooling or
  nearest upsampling of both branches, time-conditioned, dropout) where diffusers uses a
  strided or nearest+conv convolution. diffusers' ``ResnetBlock2D(down=True | up=True)`` is
  that block; its blocks call their resamplers without the time embedding, so a forward hook
  on ``time_embedding`` hands it over (``TimeEmbeddingTap``).
- ``zero_init``: LDM's ``zero_module`` on every ResBlock's last convolution, every spatial
  transformer's output projection and the final convolution, so that at initialisation the
  U-Net outputs 0 and ignores its residual branches and the tokens.

With both, the paper configuration has LDM's 37.55M parameters.

The unconditional U-Net (``build_plain_unet``, the LDM stage that DisDiff builds on,
methods.md §2.1 stage 2, methods-pdae.md §4) is diffusers' ``UNet2DModel`` with the same
sizes and self-attention instead of the spatial transformers. diffusers does LDM's ResBlock
resampling there itself (``downsample_type="resnet"``); what it cannot configure is a fixed
number of heads at every width (DisDiff's 8: head widths 8, 16, 32 and 32 in the middle),
which ``set_attention_heads`` sets after construction.

Skip Dropout (methods.md §1.3) drops whole channels (p, rescaled by 1/(1−p)) of the encoder's
skip features of the listed spatial sizes just before the decoder concatenates them, in
training only. It is a forward pre-hook on each up block, so the U-Net stays diffusers' own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn


@dataclass
class UNetConfig:
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    layers_per_block: int = 2
    attention_levels: int = 3  # cross-attention at the first this many resolutions
    heads: int = 8
    dropout: float = 0.1
    norm_groups: int = 32
    resblock_updown: bool = True  # LDM's ResBlock resampling (false: diffusers' convolutions)
    zero_init: bool = True  # LDM's zero-initialised output layers (false: diffusers' init)


@dataclass
class SkipDropoutConfig:
    p: float = 0.2  # 0 turns Skip Dropout off
    sizes: list[int] = field(default_factory=lambda: [16, 8])  # spatial sizes of dropped skips


def build_unet(
    config: UNetConfig, latent_channels: int, latent_size: int, context_dim: int
) -> UNet2DConditionModel:
    levels = len(config.channels)
    attention = [i < config.attention_levels for i in range(levels)]
    unet = UNet2DConditionModel(
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
    if config.resblock_updown:
        use_resblock_resampling(unet, config)
    if config.zero_init:
        zero_output_layers(unet)
    return unet


@dataclass
class PlainUNetConfig:
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    layers_per_block: int = 2
    # Self-attention at these downsample factors (1: the input resolution, 2: half, …) and
    # in the middle block: the `attention_resolutions` of LDM's and PDAE's configs.
    attention_resolutions: list[int] = field(default_factory=lambda: [1, 2, 4])
    heads: int = 8  # at every width, and in the middle block
    dropout: float = 0.0
    norm_groups: int = 32
    # The GroupNorm before the middle block's self-attention, which openaimodel's
    # AttentionBlock has and diffusers leaves out under scale-shift time conditioning unless
    # told its group count (false: diffusers' default, the U-Nets cached before this field).
    mid_attention_norm: bool = True
    zero_init: bool = True  # LDM's zero-initialised output layers (false: diffusers' init)


def build_plain_unet(
    config: PlainUNetConfig, latent_channels: int, latent_size: int
) -> UNet2DModel:
    """An unconditional U-Net in the LDM and PDAE template: ResBlock resampling, scale-shift
    time conditioning, self-attention at ``attention_resolutions`` and in the middle."""
    attention = [2**level in config.attention_resolutions for level in range(len(config.channels))]
    unet = UNet2DModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=tuple(
            "AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention
        ),
        up_block_types=tuple(
            "AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attention)
        ),
        block_out_channels=tuple(config.channels),
        layers_per_block=config.layers_per_block,
        dropout=config.dropout,
        norm_num_groups=config.norm_groups,
        attn_norm_num_groups=config.norm_groups if config.mid_attention_norm else None,
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
    )
    set_attention_heads(unet, config.heads)
    if config.zero_init:
        zero_output_layers(unet)
    return unet


def set_attention_heads(model: nn.Module, heads: int) -> None:
    """``heads`` heads in every self-attention of ``model``, whatever its width."""
    for module in model.modules():
        if isinstance(module, Attention):
            if module.inner_dim % heads:
                raise ValueError(
                    f"{module.inner_dim} attention channels do not split into {heads} heads"
                )
            module.heads = heads
            module.scale = (module.inner_dim // heads) ** -0.5


class TimeEmbeddingTap:
    """The time embedding of the U-Net's current forward pass, kept by a forward hook on
    ``time_embedding`` (with no class or added embeddings, it is the ``emb`` every ResNet
    block receives)."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        if unet.class_embedding is not None or unet.time_embed_act is not None:
            raise ValueError("TimeEmbeddingTap needs a U-Net whose emb is time_embedding's output")
        self.embedding: torch.Tensor | None = None
        unet.time_embedding.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.embedding = output


class ResBlockResample(nn.Module):
    """LDM's resampling ResBlock in the place of a diffusers ``Downsample2D``/``Upsample2D``:
    called as they are (hidden states, optional output size), it reads the time embedding
    from ``tap``."""

    def __init__(
        self, channels: int, direction: str, config: UNetConfig, tap: TimeEmbeddingTap, temb: int
    ) -> None:
        super().__init__()
        self.resnet = ResnetBlock2D(
            in_channels=channels,
            out_channels=channels,
            temb_channels=temb,
            groups=config.norm_groups,
            eps=1e-5,  # openaimodel's GroupNorm32 (diffusers' ResnetBlock2D default is 1e-6)
            dropout=config.dropout,
            time_embedding_norm="scale_shift",
            down=direction == "down",
            up=direction == "up",
        )
        self.tap = tap

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.resnet(hidden_states, self.tap.embedding)


def use_resblock_resampling(unet: UNet2DConditionModel, config: UNetConfig) -> None:
    """Replace every down- and upsampler of ``unet`` with a ``ResBlockResample``."""
    tap = TimeEmbeddingTap(unet)
    temb = unet.time_embedding.linear_2.out_features
    for blocks, attribute, direction in (
        (unet.down_blocks, "downsamplers", "down"),
        (unet.up_blocks, "upsamplers", "up"),
    ):
        for block in blocks:
            samplers = getattr(block, attribute)
            if samplers is not None:
                channels = samplers[0].channels
                resample = ResBlockResample(channels, direction, config, tap, temb)
                setattr(block, attribute, nn.ModuleList([resample]))


def zero_output_layers(model: nn.Module) -> None:
    """LDM's ``zero_module``: weights and biases of every ResBlock's last convolution, every
    spatial transformer's output projection, every self-attention block's output projection
    (not the attention layers inside a transformer) and the final convolution set to 0."""
    inside_transformers = {
        id(attention)
        for transformer in model.modules()
        if isinstance(transformer, Transformer2DModel)
        for attention in transformer.modules()
        if isinstance(attention, Attention)
    }
    layers = [model.conv_out]
    for module in model.modules():
        if isinstance(module, ResnetBlock2D):
            layers.append(module.conv2)
        elif isinstance(module, Transformer2DModel):
            layers.append(module.proj_out)
        elif isinstance(module, Attention) and id(module) not in inside_transformers:
            layers.append(module.to_out[0])
    with torch.no_grad():
        for layer in layers:
            for parameter in layer.parameters():
                parameter.zero_()


class SkipDropout:
    """Channel dropout on the skip connections of the given spatial sizes that the up blocks
    of ``unet`` (a U-Net, or any module with diffusers up blocks) read.

    ``generator`` (set by the method before each training forward pass) draws the masks, so
    training stays reproducible; ``dropped`` counts the skip tensors dropped so far.

    ``with draw(generator, batch):`` around a forward pass draws that pass's masks at once,
    in the order the up blocks would, so that no random draw happens inside the U-Net and a
    compiled U-Net is one graph. The masks' shapes are learned from the first pass, which
    runs eagerly and draws its masks inside; the generator gives the same numbers either way.
    """

    def __init__(self, unet: nn.Module, config: SkipDropoutConfig) -> None:
        self.unet, self.p, self.sizes = unet, config.p, set(config.sizes)
        self.generator: torch.Generator | None = None
        self.dropped = 0
        self.channels: list[int] | None = None  # each dropped skip's, in draw order
        self.seen: list[int] | None = None  # noted on the first pass after draw()
        self.masks: list[torch.Tensor] = []  # drawn for the coming pass
        if self.p > 0:
            for block in unet.up_blocks:
                block.register_forward_pre_hook(self._drop_skips, with_kwargs=True)

    def draw(self, generator: torch.Generator, batch: int) -> AbstractContextManager:
        """The coming training pass's masks, from ``generator``, for ``batch`` images; returns
        the context to run that pass in: eager for the first pass, which draws its own masks
        and notes their shapes (a compiled U-Net is then traced once, on a pass without a
        random draw: one graph)."""
        self.generator = generator
        if self.p == 0:
            return nullcontext()
        if self.channels is None:
            if self.seen is None:
                self.seen = []
                stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
                return stance("force_eager") if stance is not None else nullcontext()
            self.channels = self.seen
        self.masks = [
            torch.rand((batch, c), generator=generator, device=generator.device)
            for c in self.channels
        ]
        self.dropped += len(self.masks)
        return nullcontext()

    def _drop_skips(self, block, args, kwargs):
        if not self.unet.training:
            return None
        skips = []
        for skip in kwargs["res_hidden_states_tuple"]:
            if skip.shape[-1] in self.sizes:
                if self.masks:
                    keep = self.masks.pop(0)
                else:  # the first pass: drawn here, and the shapes noted for the next
                    keep = torch.rand(
                        skip.shape[:2], generator=self.generator, device=self.generator.device
                    )
                    self.dropped += 1
                    if self.channels is None and self.seen is not None:
                        self.seen.append(skip.shape[1])
                mask = (keep.to(skip.device) >= self.p).to(skip.dtype)[..., None, None]
                skip = skip * mask / (1 - self.p)
            skips.append(skip)
        return args, {**kwargs, "res_hidden_states_tuple": tuple(skips)}
