"""The LDM stage against DisDiff's ``LatentDiffusion`` (configs/latent-diffusion/
shapes3d-vq-4-16.yaml): the first stage's latents, LDM's std scale of the first batch, the
schedule and its noising, the U-Net, and the training loss (L1 on ε, with its terms)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.methods.diffusion.schedule import noise_for_training
from bench.methods.trainer import Batch
from parity_cases.authors import DISDIFF, TAMING, checkouts, importable
from parity_cases.common import Comparison, inputs, layout, load_into, our_method, replayed

NEEDS = (DISDIFF, TAMING)
CONFIG = "configs/latent-diffusion/shapes3d-vq-4-16.yaml"


def their_latent_diffusion(root: Path, config: str, unet_checkpoint: Path | None = None):
    """Their ``LatentDiffusion`` from ``config``, with no loss module in its first stage (the
    first-stage losses are the vq_autoencoder case's) and no first-stage checkpoint to read;
    a U-Net that loads a checkpoint itself (DisDiff's) reads ``unet_checkpoint``."""
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(root / config).model
    first = cfg.params.first_stage_config.params
    first.pop("ckpt_path", None)
    first.lossconfig = {"target": "torch.nn.Identity"}
    if "ckpt_path" in cfg.params.unet_config.params:
        cfg.params.unet_config.params.ckpt_path = str(unet_checkpoint)
    return instantiate_from_config(cfg)


def load_first_stage(theirs, ours_first_stage) -> None:
    """Our VQ first stage in their LatentDiffusion's ``first_stage_model``."""
    first = layout("vq_autoencoder", "ldm-vq-autoencoder")
    state = first.authors_state(torch.nn.ModuleDict({"vq": ours_first_stage}))
    theirs.first_stage_model.load_state_dict(state, strict=True)


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DISDIFF: CONFIG})
    ours = our_method("ldm").train()
    with importable(found[DISDIFF].path, found[TAMING].path):
        theirs = their_latent_diffusion(found[DISDIFF].path, CONFIG).train()
        unet = load_into(theirs.model.diffusion_model, ours, layout("ldm", "disdiff-ldm-unet"))
        comparison.manifests["disdiff-ldm-unet"] = (DISDIFF, f"{CONFIG} unet_config", unet)
        load_first_stage(theirs, ours.first_stage)
        compare_latent_diffusion(comparison, ours, theirs)
    return comparison


def compare_latent_diffusion(comparison: Comparison, ours, theirs) -> None:
    images = inputs((8, 3, 64, 64), seed=1).sigmoid()  # in [0, 1], as our datasets give
    x = images * 2 - 1
    with torch.no_grad():
        latents = ours.latents(images)  # measures the scale on this first batch, as theirs
        theirs.on_train_batch_start({"image": x.permute(0, 2, 3, 1)}, 0, 0)
        encoded = theirs.get_first_stage_encoding(theirs.encode_first_stage(x))
        comparison.add("first stage latents (scaled)", latents, encoded)
        comparison.add("latent scale", ours.latent_scale, theirs.scale_factor)
        comparison.add(
            "alphas_cumprod", ours.scheduler.alphas_cumprod.float(), theirs.alphas_cumprod
        )
        generator, replay = replayed(2)
        steps, noise, noisy = noise_for_training(ours.scheduler, latents, replay)
        comparison.add("q_sample", noisy, theirs.q_sample(encoded, steps, noise))
        epsilon = theirs.apply_model(noisy, steps, None)
        comparison.add("unet ε", ours.unet(noisy, steps).sample, getattr(epsilon, "pred", epsilon))
        loss, _ = ours.training_loss(Batch(images), generator)
        their_loss, terms = theirs.p_losses(encoded, None, steps, noise)
        comparison.add("loss", loss, their_loss)
        comparison.add("loss_simple", loss, terms["train/loss_simple"])
