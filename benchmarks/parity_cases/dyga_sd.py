"""DyGA+SD against dis-dis's ``LatentDiffusion`` (ldm/models/diffusion/ddpm_dyga.py,
configs/latent-diffusion/shapes3d.yaml): the feature extractor's tokens, the U-Net's ε given
them, and the training loss with its terms.

Compared in evaluation mode: dropout and Skip Dropout draw their masks from different
generators in the two codes, so only their absence can be equal. The loss is the loss
before the first DyGA refit, where both train on the raw tokens (after it, anchoring's
weight is 0 in the released code)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.methods.diffusion.schedule import noise_for_training
from bench.methods.trainer import Batch
from parity_cases.authors import DIS_DIS, TAMING, checkouts, importable
from parity_cases.common import Comparison, inputs, layout, load_into, our_method, replayed
from parity_cases.ldm import load_first_stage, their_latent_diffusion

NEEDS = (DIS_DIS, TAMING)
CONFIG = "configs/latent-diffusion/shapes3d.yaml"
# ddpm_dyga.py imports DDIMSampler from this module, which the repository does not have
ABSENT = ("ldm.models.diffusion.ddim",)


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DIS_DIS: f"code/{CONFIG}"})
    code = found[DIS_DIS].path / "code"
    ours = our_method("dyga_sd").eval()
    comparison.notes.append(
        f"{DIS_DIS} lacks {ABSENT[0]}, which ddpm_dyga.py imports: a stand-in takes its place"
    )
    with importable(code, found[TAMING].path, absent=ABSENT):
        theirs = their_latent_diffusion(code, CONFIG).eval()
        for manifest, module in (
            ("dis-dis-unet", theirs.model.diffusion_model),
            ("dis-dis-feature-extractor", theirs.cond_stage_model),
        ):
            state = load_into(module, ours, layout("dyga_sd", manifest))
            comparison.manifests[manifest] = (DIS_DIS, f"code/{CONFIG}", state)
        compare_token_diffusion(comparison, ours, theirs)
    return comparison


def compare_token_diffusion(comparison: Comparison, ours, theirs) -> None:
    """Tokens, ε and loss of a token-conditioned method against their LatentDiffusion (our
    first stage and latent scale given to theirs)."""
    load_first_stage(theirs, ours.first_stage)
    images = inputs((8, 3, 64, 64), seed=1).sigmoid()
    x = images * 2 - 1
    with torch.no_grad():
        latents = ours.latents(images)
        theirs.scale_factor.fill_(float(ours.latent_scale))
        encoded = theirs.get_first_stage_encoding(theirs.encode_first_stage(x))
        comparison.add("first stage latents (scaled)", latents, encoded)
        tokens = ours.condition(ours.tokens(ours.scalars(images)))
        their_tokens = theirs.get_learned_conditioning(x)
        comparison.add("tokens", tokens, their_tokens)
        generator, replay = replayed(2)
        steps, noise, noisy = noise_for_training(ours.scheduler, latents, replay)
        alphas = ours.scheduler.alphas_cumprod.float()
        comparison.add("alphas_cumprod", alphas, theirs.alphas_cumprod)
        comparison.add("q_sample", noisy, theirs.q_sample(encoded, steps, noise))
        epsilon = theirs.apply_model(noisy, steps, their_tokens)
        ours_epsilon = ours.unet(noisy, steps, encoder_hidden_states=tokens).sample
        comparison.add("unet ε", ours_epsilon, getattr(epsilon, "pred", epsilon))
        loss, _ = ours.training_loss(Batch(images), generator)
        their_loss, terms = theirs.p_losses(encoded, their_tokens, steps, noise=noise)
        comparison.add("loss", loss, their_loss)
        prefix = "train" if theirs.training else "val"
        comparison.add("loss_simple", loss, terms[f"{prefix}/loss_simple"])
