"""Our diffusers U-Nets in the layout of LDM's openaimodel ``UNetModel`` (DisDiff's LDM and
gradient-field decoder, dis-dis's U-Net for DyGA+SD and EncDiff) and of PDAE's ``UNet``, which
DiTi's repository carries with the same names (its pixel DDPM and ``ShiftUNet``).

openaimodel numbers its blocks where diffusers names them: ``input_blocks.0`` is the input
convolution, then one entry per ResBlock (with its attention as ``.1``) and one per resampling
ResBlock; ``middle_block`` is ResBlock, attention, ResBlock; each ``output_blocks`` entry is a
ResBlock, its attention, and the level's upsampler last. The ResBlock's layers are numbered
within ``in_layers``/``emb_layers``/``out_layers``. A spatial transformer has the same names in
both; a plain attention block fuses q, k and v (``keymap``'s qkv layouts). A gradient-field
decoder is the second middle block and output path of openaimodel_shift (DisDiff) or of
``ShiftUNet`` (DiTi), whose ResBlocks add the condition's FiLM.
"""

from __future__ import annotations

from dataclasses import replace

from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from bench.authors.keymap import KeyMap, Piece, rename
from bench.methods.diffusion.gradient_field import FiLMResnetBlock, GradientFieldDecoder
from bench.methods.diffusion.unet import ResBlockResample

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
WEIGHT_AND_BIAS = {"weight": "weight", "bias": "bias"}


def unet_keymap(unet: nn.Module, legacy_attention: bool = True) -> KeyMap:
    """The map of a diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` built by
    ``bench.methods.diffusion.unet``; ``legacy_attention``: openaimodel's default
    ``use_new_attention_order=False``."""
    keymap = [
        *linear("time_embedding.linear_1", "time_embed.0"),
        *linear("time_embedding.linear_2", "time_embed.2"),
        *linear("conv_in", "input_blocks.0.0"),
    ]
    number = 1
    for i, down in enumerate(unet.down_blocks):
        for j, resnet in enumerate(down.resnets):
            keymap += block(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{number}.0", resnet)
            if getattr(down, "attentions", None) is not None:
                attention = down.attentions[j]
                ours, theirs = f"down_blocks.{i}.attentions.{j}", f"input_blocks.{number}.1"
                keymap += block(ours, theirs, attention, legacy_attention)
            number += 1
        if down.downsamplers is not None:
            sampler = down.downsamplers[0]
            keymap += block(f"down_blocks.{i}.downsamplers.0", f"input_blocks.{number}.0", sampler)
            number += 1
    keymap += middle_keymap(unet.mid_block, "mid_block", "middle_block", legacy_attention)
    keymap += output_keymap(unet.up_blocks, "up_blocks", "output_blocks", legacy_attention)
    keymap += linear("conv_norm_out", "out.0") + linear("conv_out", "out.2")
    return keymap


def shift_decoder_keymap(
    decoder: GradientFieldDecoder, ours: str, film: str = "cond_emb_layers"
) -> KeyMap:
    """A gradient-field decoder as PDAE's ``shift_middle_block``, ``shift_output_blocks`` and
    ``shift_out``, whose ResBlocks call the condition's FiLM ``film``: ``cond_emb_layers`` in
    DisDiff's openaimodel_shift, ``emb_z_layers`` in DiTi's ShiftUNet."""
    keymap = [
        *middle_keymap(decoder.mid_block, f"{ours}.mid_block", "shift_middle_block"),
        *output_keymap(decoder.up_blocks, f"{ours}.up_blocks", "shift_output_blocks"),
        *linear(f"{ours}.conv_norm_out", "shift_out.0"),
        *linear(f"{ours}.conv_out", "shift_out.2"),
    ]
    return [replace(p, theirs=p.theirs.replace(".cond_emb_layers.", f".{film}.")) for p in keymap]


def middle_keymap(middle: nn.Module, ours: str, theirs: str, legacy: bool = True) -> KeyMap:
    return [
        *block(f"{ours}.resnets.0", f"{theirs}.0", middle.resnets[0]),
        *block(f"{ours}.attentions.0", f"{theirs}.1", middle.attentions[0], legacy),
        *block(f"{ours}.resnets.1", f"{theirs}.2", middle.resnets[1]),
    ]


def output_keymap(ups: nn.ModuleList, ours: str, theirs: str, legacy: bool = True) -> KeyMap:
    keymap: KeyMap = []
    number = 0
    for i, up in enumerate(ups):
        attentions = getattr(up, "attentions", None)
        for j, resnet in enumerate(up.resnets):
            keymap += block(f"{ours}.{i}.resnets.{j}", f"{theirs}.{number}.0", resnet)
            if attentions is not None:
                keymap += block(
                    f"{ours}.{i}.attentions.{j}", f"{theirs}.{number}.1", attentions[j], legacy
                )
            if j == len(up.resnets) - 1 and up.upsamplers is not None:
                place = 2 if attentions is not None else 1
                sampler = up.upsamplers[0]
                keymap += block(f"{ours}.{i}.upsamplers.0", f"{theirs}.{number}.{place}", sampler)
            number += 1
    return keymap


def block(ours: str, theirs: str, module: nn.Module, legacy: bool = True) -> KeyMap:
    """One openaimodel block: a ResBlock (plain or resampling), a plain attention block or a
    spatial transformer."""
    if isinstance(module, ResBlockResample):
        return block(f"{ours}.resnet", theirs, module.resnet)
    if isinstance(module, FiLMResnetBlock):  # openaimodel_shift's ResBlockShift
        return block(f"{ours}.block", theirs, module.block) + linear(
            f"{ours}.film.1", f"{theirs}.cond_emb_layers.1"
        )
    if isinstance(module, ResnetBlock2D):
        parts = [name for name, child in module.named_children() if name in RESNET]
        return [p for name in parts for p in linear(f"{ours}.{name}", f"{theirs}.{RESNET[name]}")]
    if isinstance(module, Transformer2DModel):
        return [Piece((f"{ours}.{key}",), f"{theirs}.{key}") for key in module.state_dict()]
    if isinstance(module, Attention):
        return attention_block(ours, theirs, module, legacy)
    raise TypeError(f"no openaimodel layout for {type(module).__name__} at {ours}")


def attention_block(ours: str, theirs: str, attention: Attention, legacy: bool) -> KeyMap:
    """openaimodel's ``AttentionBlock``: GroupNorm, the fused 1-d qkv convolution, proj_out."""
    layout, heads = ("qkv_legacy" if legacy else "qkv"), attention.heads
    return [
        *linear(f"{ours}.group_norm", f"{theirs}.norm"),
        *(
            Piece(tuple(f"{ours}.to_{x}.{p}" for x in "qkv"), f"{theirs}.qkv.{p}", layout, heads)
            for p in ("weight", "bias")
        ),
        Piece((f"{ours}.to_out.0.weight",), f"{theirs}.proj_out.weight", "conv"),
        Piece((f"{ours}.to_out.0.bias",), f"{theirs}.proj_out.bias"),
    ]


def linear(ours: str, theirs: str) -> KeyMap:
    """A layer with a weight and a bias, renamed."""
    return rename(ours, theirs, WEIGHT_AND_BIAS)
