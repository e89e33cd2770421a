"""Every network of the diffusion methods and their stages has its authors' parameter count at
the paper configuration.

The counts were taken once by building the authors' own modules on the meta device at the
configurations named below (``benchmarks/parity.py`` builds the same modules); a network that
drops or adds a layer (as diffusers' U-Net dropped the middle attention's GroupNorm) fails
here. EncDiff's authors' code is not public: its U-Net is LDM's openaimodel U-Net (dis-dis's)
at EncDiff's settings and its encoder DisDiff's ``Encoder4`` with 20 outputs.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D

from bench.build import build_method
from bench.config import resolve_config
from bench.datasets import DATASETS
from bench.stages import shared_stages, stage_config

DISDIFF = "ThomasMrY/DisDiff @c3ba0c7, configs/latent-diffusion/shapes3d-vq-4-16(-dis).yaml"
DITI = "yue-zhongqi/diti @ca4ed6c, diti64.yml; DPM: Diff-AE's 64-px setting (methods-pdae.md)"
DYGA = "youngjun-jun/dis-dis @538e374, configs/latent-diffusion/shapes3d.yaml"

# (method, dataset, network: a stage's method name or an attribute of the method) → count
AUTHORS_COUNTS = {
    # openaimodel.UNetModel, shapes3d-vq-4-16.yaml
    ("disdiff", "shapes3d", "ldm.unet"): (29_422_467, DISDIFF),
    # VQModel: Encoder + Decoder + codebook + quant convs, autoencoder/shapes3d_vq_4_16.yaml
    ("disdiff", "shapes3d", "vq_autoencoder.vq"): (3_478_078, DISDIFF),
    # openaimodel_shift.UNetModel: shift_middle_block + shift_output_blocks + shift_out
    ("disdiff", "shapes3d", "decoder"): (22_680_835, DISDIFF),
    # repre_embed + part_latents + part_emb
    ("disdiff", "shapes3d", "unit_embeddings"): (57_856, DISDIFF),
    # ldm.modules.encoders.modules.Encoder4(d=128, latent_dim=192)
    ("disdiff", "shapes3d", "encoder"): (1_516_480, DISDIFF),
    # model/unet/unet.py UNet
    ("diti", "celeba", "ddpm_pixel.unet"): (63_958_019, DITI),
    # model/unet/shift_unet.py ShiftUNet: shift_middle_block + shift_output_blocks + shift_out
    ("diti", "celeba", "decoder"): (51_876_483, DITI),
    ("diti", "celeba", "label_emb"): (131_328, DITI),
    ("diti", "celeba", "encoder"): (1_487_104, DITI),
    # openaimodel_skip-dropout.UNetModel
    ("dyga_sd", "shapes3d", "unet"): (37_549_507, DYGA),
    # FeatureExtractor: image_encoder, mlps
    ("dyga_sd", "shapes3d", "encoder"): (20_600_084, DYGA),
    ("dyga_sd", "shapes3d", "token_mlps"): (2_970_240, DYGA),
    ("dyga_sd", "shapes3d", "vq_autoencoder.vq"): (3_478_078, DYGA),
    # the same U-Net with context_dim 16, no dropout
    ("encdiff", "shapes3d", "unet"): (37_469_635, DYGA),
    # DisDiff's Encoder4(d=128, latent_dim=20)
    ("encdiff", "shapes3d", "encoder"): (1_164_052, DISDIFF),
}


pytestmark = pytest.mark.usefixtures("lpips_files")


def networks(method: str, dataset: str) -> dict[str, torch.nn.Module]:
    """The method's children and its stages' children (``stage.child``), built on meta."""
    cfg = resolve_config(method, dataset, "paper")
    data = DATASETS.get(dataset)
    with torch.device("meta"):
        model = build_method(cfg, data)
        found = dict(model.named_children())
        for shared in shared_stages(cfg, data, "unused"):
            stage = build_method(stage_config(shared.stage, cfg), data)
            found.update({f"{shared.method}.{n}": c for n, c in stage.named_children()})
    return found


@pytest.mark.parametrize(("method", "dataset", "network"), sorted(AUTHORS_COUNTS))
def test_each_network_has_its_authors_parameter_count(method, dataset, network):
    expected, source = AUTHORS_COUNTS[(method, dataset, network)]
    count = sum(p.numel() for p in networks(method, dataset)[network].parameters())
    assert count == expected, f"{method} {network}: {count:,} against {expected:,} ({source})"


@pytest.mark.parametrize(("method", "dataset"), [("disdiff", "shapes3d"), ("diti", "celeba")])
def test_every_plain_unet_normalises_before_its_middle_attention(method, dataset):
    # openaimodel's AttentionBlock starts with a GroupNorm; diffusers' middle block leaves it
    # out under scale-shift time conditioning unless given its group count. The frozen
    # U-Nets and the gradient-field decoders built from them all have one.
    middles = {
        name: module
        for name, network in networks(method, dataset).items()
        for module in network.modules()
        if isinstance(module, UNetMidBlock2D)
    }
    assert set(middles) >= {"decoder", "ldm.unet" if method == "disdiff" else "ddpm_pixel.unet"}
    for name, middle in middles.items():
        norm = middle.attentions[0].group_norm
        assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 32, name
