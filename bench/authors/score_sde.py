"""DBRL's networks in the layout of its authors' score_sde code (korabs-x/
representation_score_based: ``models/ncsnpp.py`` with ``include_encoder``, ``models/wrn.py``).

score_sde's ``NCSNpp`` keeps its layers in one list, ``all_modules``, in the order its forward
pass reads them: the Fourier features, the two time-embedding layers, the input convolution,
per level its ResBlocks (each followed by its attention where the resolution has one), the
downsampling ResBlock and the input pyramid's strided convolution; the middle ResBlock,
attention and ResBlock; per level upwards its ResBlocks, its attention and the upsampling
ResBlock; the output GroupNorm and convolution. Its BigGAN ResBlock names its layers
``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``GroupNorm_1``, ``Conv_1``, ``Conv_2`` (shortcut);
its attention applies ``NIN`` matrices from the right (``keymap``'s transposed layout). The
code path (``latent_to_temb``, ``z_dec_1..3``) and the encoder sit beside the list.
"""

from __future__ import annotations

from diffusers.models.resnet import Downsample2D
from torch import nn

from bench.authors.keymap import KeyMap, Piece, rename
from bench.authors.openaimodel import linear

BIGGAN_RESNET = {
    "norm1": "GroupNorm_0",
    "conv1": "Conv_0",
    "time_emb_proj": "Dense_0",
    "norm2": "GroupNorm_1",
    "conv2": "Conv_1",
    "conv_shortcut": "Conv_2",
}
WIDE_BASIC = {
    "bn1": "bn1",
    "conv1": "conv1",
    "time_bias": "Dense_0",
    "bn2": "bn2",
    "conv2": "conv2",
    "shortcut": "shortcut.0",
}
BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def ncsnpp_keymap(net: nn.Module, ours: str) -> KeyMap:
    """Our ``NCSNpp`` (at ``ours``) as score_sde's with DBRL's code input."""
    order: list[tuple[str, nn.Module]] = [
        (f"{ours}.time.0", net.time[0]),
        (f"{ours}.time.1", net.time[1]),
        (f"{ours}.time.3", net.time[3]),
        (f"{ours}.conv_in", net.conv_in),
    ]
    for i, stage in enumerate(net.down):
        for j, resnet in enumerate(stage.resnets):
            order.append((f"{ours}.down.{i}.resnets.{j}", resnet))
            if len(stage.attentions):
                order.append((f"{ours}.down.{i}.attentions.{j}", stage.attentions[j]))
        if hasattr(stage, "downsample"):
            order.append((f"{ours}.down.{i}.downsample", stage.downsample))
            order.append((f"{ours}.down.{i}.pyramid", stage.pyramid))
    order += [(f"{ours}.middle.{i}", block) for i, block in enumerate(net.middle)]
    for i, stage in enumerate(net.up):
        order += [(f"{ours}.up.{i}.resnets.{j}", r) for j, r in enumerate(stage.resnets)]
        order += [(f"{ours}.up.{i}.attentions.{j}", a) for j, a in enumerate(stage.attentions)]
        if hasattr(stage, "upsample"):
            order.append((f"{ours}.up.{i}.upsample", stage.upsample))
    order += [(f"{ours}.norm_out", net.norm_out), (f"{ours}.conv_out", net.conv_out)]

    keymap: KeyMap = [Piece((f"{ours}.time.0.weight",), "all_modules.0.W")]
    for index, (name, module) in enumerate(order[1:], start=1):
        keymap += layer(name, f"all_modules.{index}", module)
    return [
        *keymap,
        *linear(f"{ours}.code_to_temb", "latent_to_temb"),
        *(p for i in range(3) for p in linear(f"{ours}.code_map.{2 * i}", f"z_dec_{i + 1}")),
    ]


def layer(ours: str, theirs: str, module: nn.Module) -> KeyMap:
    """One entry of ``all_modules``: a BigGAN ResBlock, an attention block, a downsampler or a
    plain layer."""
    names = {name for name, _ in module.named_children()}
    if "time_emb_proj" in names:  # diffusers' ResnetBlock2D
        present = [name for name in BIGGAN_RESNET if name in names]
        return [
            piece
            for name in present
            for piece in linear(f"{ours}.{name}", f"{theirs}.{BIGGAN_RESNET[name]}")
        ]
    if "to_q" in names:  # diffusers' Attention as score_sde's AttnBlockpp
        keymap = linear(f"{ours}.group_norm", f"{theirs}.GroupNorm_0")
        for i, projection in enumerate(("to_q", "to_k", "to_v", "to_out.0")):
            keymap += [
                Piece((f"{ours}.{projection}.weight",), f"{theirs}.NIN_{i}.W", "transposed"),
                Piece((f"{ours}.{projection}.bias",), f"{theirs}.NIN_{i}.b"),
            ]
        return keymap
    if isinstance(module, Downsample2D):  # the input pyramid's strided convolution
        return linear(f"{ours}.conv", f"{theirs}.Conv_0")
    return linear(ours, theirs)


def wide_resnet_keymap(encoder: nn.Module, ours: str) -> KeyMap:
    """Our ``TimeConditionedWideResNet`` (at ``ours``) as DBRL's ``Wide_ResNet`` (``encoder`` of
    their NCSNpp): blocks in groups ``layer1..3`` of n each, the time embedding's layers as
    ``time_embedding.all_modules``, the probabilistic head as ``linear_latent``."""
    keymap: KeyMap = [
        Piece((f"{ours}.time.0.weight",), "encoder.time_embedding.all_modules.0.W"),
        *linear(f"{ours}.time.1", "encoder.time_embedding.all_modules.1"),
        *linear(f"{ours}.time.3", "encoder.time_embedding.all_modules.2"),
        *linear(f"{ours}.conv_in", "encoder.conv1"),
        *rename(f"{ours}.norm", "encoder.bn1", {key: key for key in BATCH_NORM}),
    ]
    per_group = len(encoder.blocks) // 3
    for k, block in enumerate(encoder.blocks):
        theirs = f"encoder.layer{k // per_group + 1}.{k % per_group}"
        for name, child in block.named_children():
            for key in child.state_dict():
                keymap.append(
                    Piece(
                        (f"{ours}.blocks.{k}.{name}.{key}",), f"{theirs}.{WIDE_BASIC[name]}.{key}"
                    )
                )
    if encoder.probabilistic:  # a deterministic code's head (latent_dim ≠ 128) is not theirs
        keymap += linear(f"{ours}.head", "encoder.linear_latent")
    return keymap
