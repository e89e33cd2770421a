"""The pixel DDPM stage against DiTi's ``UNet`` and ``GaussianDiffusion`` (model/unet/unet.py,
model/diffusion/gaussian_diffusion.py, the schedule of config/celeba64/diti64.yml): the
schedule, its noising, the U-Net's ε and the regular trainer's loss (MSE on ε).

The U-Net is built with our preset's settings: the authors' 64-px DDPM config sits in a
Google-Drive folder and is not public (diffusion/ddpm.py says which settings we take).
Compared in evaluation mode (dropout 0.1 draws different masks in the two codes)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from bench.methods.ddpm_pixel import PixelDDPM
from bench.methods.diffusion.schedule import noise_for_training
from bench.methods.trainer import Batch
from parity_cases.authors import DITI, checkouts, importable
from parity_cases.common import (
    Comparison,
    inputs,
    layout,
    load_into,
    our_method,
    replayed,
    replaying,
)

NEEDS = (DITI,)
CONFIG = "config/celeba64/diti64.yml"
NOTE = (
    "the U-Net has our preset's settings: the authors' 64-px DDPM config is not public "
    "(see bench/methods/ddpm_pixel.py)"
)


def unet_settings(ddpm: PixelDDPM) -> dict:
    """Our pixel U-Net's settings as the arguments of their ``UNet`` and ``ShiftUNet``."""
    unet = ddpm.config.unet
    base = unet.channels[0]
    return {
        "input_channel": ddpm.image_shape[2],
        "base_channel": base,
        "channel_multiplier": [width // base for width in unet.channels],
        "num_residual_blocks_of_a_block": unet.layers_per_block,
        "attention_resolutions": list(unet.attention_resolutions),
        "num_heads": unet.heads,
        "head_channel": -1,
        "use_new_attention_order": False,
        "dropout": unet.dropout,
    }


def their_diffusion(root: Path):
    from model.diffusion import GaussianDiffusion

    return GaussianDiffusion(OmegaConf.load(root / CONFIG).diffusion_config, device="cpu")


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DITI: CONFIG}, notes=[NOTE])
    ours = our_method("ddpm_pixel", "celeba").eval()
    with importable(found[DITI].path):
        from model.unet import UNet

        settings = unet_settings(ours)
        unet = UNet(**settings).eval()
        state = load_into(unet, ours, layout("ddpm_pixel", "diti-ddpm-unet"))
        comparison.manifests["diti-ddpm-unet"] = (DITI, f"model.unet.UNet(**{settings})", state)
        compare_ddpm(comparison, ours, unet, their_diffusion(found[DITI].path))
    return comparison


def compare_ddpm(comparison: Comparison, ours: PixelDDPM, unet: nn.Module, diffusion) -> None:
    images = inputs((8, 3, 64, 64), seed=1).sigmoid()
    x = images * 2 - 1
    comparison.add(
        "alphas_cumprod", ours.scheduler.alphas_cumprod.float(), diffusion.alphas_cumprod
    )
    generator, replay = replayed(2)
    steps, noise, noisy = noise_for_training(ours.scheduler, x, replay)
    comparison.add("q_sample", noisy, diffusion.q_sample(x, steps, noise))
    with torch.no_grad():
        comparison.add("unet ε", ours.unet(noisy, steps).sample, unet(noisy, steps))
        loss, _ = ours.training_loss(Batch(images), generator)
        with replaying([("randint", steps), ("randn_like", noise)]):
            theirs = diffusion.regular_train_one_batch(unet, x)["prediction_loss"]
        comparison.add("loss", loss, theirs)
