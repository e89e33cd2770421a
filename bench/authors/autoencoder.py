"""Our diffusers ``VQModel`` in the layout of LDM's ``VQModel`` (ldm/models/autoencoder.py
with ldm/modules/diffusionmodules/model.py's Encoder and Decoder), the first stage of DisDiff,
DyGA+SD and EncDiff.

Block for block the networks are the same; LDM names the levels ``down.i.block.j`` and
``up.i.block.j`` where the decoder's ``up`` is indexed from the lowest resolution's end (it
runs ``up`` in reverse), calls the middle ``mid.block_1, attn_1, block_2``, and its middle
attention uses 2-d 1×1 convolutions for q, k, v and the output.
"""

from __future__ import annotations

from diffusers import VQModel

from bench.authors.keymap import KeyMap, Piece
from bench.authors.openaimodel import linear

RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2"}


def vq_keymap(vq: VQModel) -> KeyMap:
    keymap = [
        *coder(vq.encoder, "encoder", vq.encoder.down_blocks, "down", "downsamplers", "downsample"),
        *coder(vq.decoder, "decoder", vq.decoder.up_blocks, "up", "upsamplers", "upsample"),
        Piece(("quantize.embedding.weight",), "quantize.embedding.weight"),
    ]
    for conv in ("quant_conv", "post_quant_conv"):
        keymap += linear(conv, conv)
    return keymap


def coder(network, name: str, blocks, level: str, samplers: str, sampler: str) -> KeyMap:
    """The encoder (``level="down"``) or the decoder (``"up"``, levels counted backwards)."""
    keymap = [*linear(f"{name}.conv_in", f"{name}.conv_in")]
    for i, block in enumerate(blocks):
        number = i if level == "down" else len(blocks) - 1 - i
        ours, theirs = f"{name}.{level}_blocks.{i}", f"{name}.{level}.{number}"
        for j, resnet in enumerate(block.resnets):
            keymap += resnet_block(f"{ours}.resnets.{j}", f"{theirs}.block.{j}", resnet)
        if getattr(block, samplers) is not None:
            keymap += linear(f"{ours}.{samplers}.0.conv", f"{theirs}.{sampler}.conv")
    middle = network.mid_block
    keymap += resnet_block(f"{name}.mid_block.resnets.0", f"{name}.mid.block_1", middle.resnets[0])
    keymap += attention(f"{name}.mid_block.attentions.0", f"{name}.mid.attn_1")
    keymap += resnet_block(f"{name}.mid_block.resnets.1", f"{name}.mid.block_2", middle.resnets[1])
    return [
        *keymap,
        *linear(f"{name}.conv_norm_out", f"{name}.norm_out"),
        *linear(f"{name}.conv_out", f"{name}.conv_out"),
    ]


def resnet_block(ours: str, theirs: str, resnet) -> KeyMap:
    keymap = [p for a, b in RESNET.items() for p in linear(f"{ours}.{a}", f"{theirs}.{b}")]
    if resnet.conv_shortcut is not None:
        keymap += linear(f"{ours}.conv_shortcut", f"{theirs}.nin_shortcut")
    return keymap


def attention(ours: str, theirs: str) -> KeyMap:
    keymap = linear(f"{ours}.group_norm", f"{theirs}.norm")
    for a, b in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        keymap += [
            Piece((f"{ours}.{a}.weight",), f"{theirs}.{b}.weight", "conv", conv_dims=2),
            Piece((f"{ours}.{a}.bias",), f"{theirs}.{b}.bias"),
        ]
    return keymap
