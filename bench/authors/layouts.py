"""Which of our networks maps onto which authors' module, method by method.

A ``Layout`` names the children of our method that make one module of the authors' (the
``parts``), the key map from our state dict (keys with the children's names) to theirs, and
the manifest recording that module's keys and shapes. ``benchmarks/parity.py`` loads the
mapped weights into the authors' module and compares outputs; ``tests/test_authors_layouts.py``
checks every map against its manifest without their code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from bench.authors.autoencoder import vq_keymap
from bench.authors.disunknown import renamed_keymap
from bench.authors.keymap import KeyMap, Piece, prefixed, to_authors
from bench.authors.openaimodel import attention_block, linear, shift_decoder_keymap, unet_keymap
from bench.authors.score_sde import ncsnpp_keymap, wide_resnet_keymap

MANIFESTS = files("bench.authors") / "manifests"


@dataclass(frozen=True)
class Layout:
    manifest: str  # bench/authors/manifests/<manifest>.json
    parts: tuple[str, ...]  # our method's modules (dotted paths) that make the authors' one
    keymap: Callable[[nn.Module], KeyMap]  # from our method's state dict keys
    # Keys of the authors' module (exact, or prefixes ending in ".") with no counterpart in
    # ours, each for a reason ``unused_because`` gives: a head their training never reads, a
    # buffer the forward pass does not use.
    unused: tuple[str, ...] = ()
    unused_because: str = ""

    def is_unused(self, key: str) -> bool:
        return any(key == u or (u.endswith(".") and key.startswith(u)) for u in self.unused)

    def state_of(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The parts' entries of ``model``'s state dict."""
        return {
            key: value
            for key, value in model.state_dict().items()
            if any(key == part or key.startswith(f"{part}.") for part in self.parts)
        }

    def authors_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The state dict of the authors' module holding ``model``'s weights."""
        return to_authors(self.state_of(model), self.keymap(model))

    def expected_shapes(self) -> dict[str, list[int]]:
        return read_manifest(self.manifest)["keys"]


def read_manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def sequential_keymap(ours: nn.Sequential, prefix: str, theirs: Callable[[int], str]) -> KeyMap:
    """Each parameter or buffer of child ``i`` of ``ours`` (at ``prefix``) to ``theirs(i)``."""
    return [
        Piece((f"{prefix}.{key}",), f"{theirs(int(key.split('.')[0]))}.{key.split('.', 1)[1]}")
        for key in ours.state_dict()
    ]


def disdiff_keymap(model: nn.Module) -> KeyMap:
    """DisDiff's ``openaimodel_shift.UNetModel``: the frozen LDM U-Net under openaimodel's
    names, the gradient-field decoder as its ``shift_*`` blocks, and the unit embeddings
    (``repre_embed``, ``part_latents`` (an nn.Embedding: W is its weight), ``part_emb``).
    It keeps the LDM's latent scale, read from the LDM checkpoint, as ``scale_factor``."""
    return [
        *prefixed(unet_keymap(model.ldm.unet), "ldm.unet."),
        Piece(("ldm.latent_scale",), "scale_factor"),
        *shift_decoder_keymap(model.decoder, "decoder"),
        *linear("unit_embeddings.code", "repre_embed"),
        Piece(("unit_embeddings.part_latents",), "part_latents.weight"),
        *linear("unit_embeddings.part", "part_emb"),
    ]


def feature_extractor_keymap(model: nn.Module) -> KeyMap:
    """dis-dis's ``FeatureExtractor``: ``image_encoder`` (convolutions as ``encoder.i``, the
    linear layers after the flatten as ``fc.j``) and one ``MLPModule`` per unit in ``mlps``."""
    flatten = next(i for i, m in enumerate(model.encoder) if isinstance(m, nn.Flatten))

    def image_encoder(i: int) -> str:
        return (
            f"image_encoder.encoder.{i}" if i < flatten else f"image_encoder.fc.{i - flatten - 1}"
        )

    keymap = sequential_keymap(model.encoder, "encoder", image_encoder)
    for layer in range(len(model.token_mlps.weights)):
        for unit in range(model.token_mlps.weights[layer].shape[0]):
            theirs = f"mlps.{unit}.layers.{2 * layer}"
            for ours, name in (("weights", "weight"), ("biases", "bias")):
                key = f"token_mlps.{ours}.{layer}"
                keymap.append(Piece((key,), f"{theirs}.{name}", "unit", unit=unit))
    return keymap


def encoder4_keymap(model: nn.Module) -> KeyMap:
    """DisDiff's ``Encoder4``: the same sequence; its residual blocks call their layers
    ``convs``."""
    return [
        Piece(piece.ours, piece.theirs.replace(".body.", ".convs."))
        for piece in sequential_keymap(model.encoder, "encoder", lambda i: f"encoder.{i}")
    ]


def diti_keymap(model: nn.Module) -> KeyMap:
    """DiTi's ``ShiftUNet`` (its decoder): the frozen pixel DDPM's U-Net, the gradient-field
    decoder as its ``shift_*`` blocks (FiLM as ``emb_z_layers``) and ``label_emb``."""
    return [
        *prefixed(unet_keymap(model.ddpm.unet), "ddpm.unet."),
        *shift_decoder_keymap(model.decoder, "decoder", film="emb_z_layers"),
        *linear("label_emb", "label_emb"),
    ]


def diti_encoder_keymap(model: nn.Module) -> KeyMap:
    """DiTi's ``CELEBA64Encoder``: the same sequence under ``encoder``, its self-attention
    PDAE's ``AttentionBlock`` (fused qkv, legacy head order)."""
    keymap: KeyMap = []
    for i, child in enumerate(model.encoder):
        if isinstance(child, Attention):
            keymap += attention_block(f"encoder.{i}", f"encoder.{i}", child, legacy=True)
        else:
            keymap += [Piece((f"encoder.{i}.{k}",), f"encoder.{i}.{k}") for k in child.state_dict()]
    return keymap


def dbrl_keymap(model: nn.Module) -> KeyMap:
    """DBRL's ``NCSNpp`` with ``include_encoder``: the score network and, as its ``encoder``,
    the time-conditioned WideResNet."""
    return [
        *ncsnpp_keymap(model.score_net, "score_net"),
        *wide_resnet_keymap(model.encoder, "encoder"),
    ]


def renamed_layout(manifest: str, part: str, kind: str) -> Layout:
    return Layout(manifest, (part,), lambda m: renamed_keymap(getattr(m, part), part, kind))


LAYOUTS: dict[str, list[Layout]] = {
    "vq_autoencoder": [
        Layout("ldm-vq-autoencoder", ("vq",), lambda m: prefixed(vq_keymap(m.vq), "vq.")),
        Layout(
            "taming-patch-discriminator",
            ("discriminator",),  # taming's NLayerDiscriminator names its layers main.i
            lambda m: sequential_keymap(m.discriminator.net, "discriminator.net", "main.{}".format),
        ),
    ],
    "ldm": [
        Layout("disdiff-ldm-unet", ("unet",), lambda m: prefixed(unet_keymap(m.unet), "unet.")),
    ],
    "ddpm_pixel": [
        Layout("diti-ddpm-unet", ("unet",), lambda m: prefixed(unet_keymap(m.unet), "unet.")),
    ],
    "diti": [
        Layout("diti-shift-unet", ("ddpm.unet", "decoder", "label_emb"), diti_keymap),
        Layout("diti-celeba64-encoder", ("encoder",), diti_encoder_keymap),
    ],
    "dbrl": [
        Layout(
            "dbrl-ncsnpp",
            ("score_net", "encoder"),
            dbrl_keymap,
            unused=("decoder.", "encoder.linear.", "encoder.time_embedding.param_t", "sigmas"),
            unused_because=(
                "their reconstruction decoder (its loss weight is 0 in their command), the "
                "encoder's classifier head and learnable t (read only by their semi-supervised "
                "and use_param_t paths), and the discrete σ buffer (continuous training)"
            ),
        ),
    ],
    # The files DisUnknown's trainers save: trained_models/E.pt, G1.pt, B1.pt, R1.pt, and
    # the stage checkpoints' C (stage 1), G, B, D (stage 2) and S (the labelled encoder).
    "disunknown": [
        renamed_layout("disunknown-E", "unknown_encoder", "encoder"),
        renamed_layout("disunknown-G1", "stage1_generator", "generator"),
        renamed_layout("disunknown-C", "stage1_classifier", "compound"),
        renamed_layout("disunknown-B1", "stage1_embedder", "embedder"),
        renamed_layout("disunknown-R", "label_classifier", "classifier"),
        renamed_layout("disunknown-G2", "generator", "generator"),
        renamed_layout("disunknown-B2", "embedder", "embedder"),
        renamed_layout("disunknown-D", "discriminator", "discriminator"),
        renamed_layout("disunknown-S", "labeled_encoder", "encoder"),
    ],
    "disdiff": [
        Layout(
            "disdiff-shift-unet",
            ("ldm.unet", "ldm.latent_scale", "decoder", "unit_embeddings"),
            disdiff_keymap,
        ),
        Layout("disdiff-encoder4", ("encoder",), encoder4_keymap),
    ],
    "dyga_sd": [
        Layout("dis-dis-unet", ("unet",), lambda m: prefixed(unet_keymap(m.unet), "unet.")),
        Layout("dis-dis-feature-extractor", ("encoder", "token_mlps"), feature_extractor_keymap),
    ],
    "encdiff": [
        Layout("encdiff-unet", ("unet",), lambda m: prefixed(unet_keymap(m.unet), "unet.")),
        Layout("encdiff-encoder4", ("encoder",), encoder4_keymap),
    ],
}
