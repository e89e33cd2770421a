"""DiTi against its authors' code (config/celeba64/diti64.yml): the time-step masks their
``DiTiTrainer`` builds, the loss weights and PDAE's coefficients of ``GaussianDiffusion``,
``CELEBA64Encoder``'s code, the ``ShiftUNet``'s (ε, g) on masked codes, the training loss in
each mode (``pdae_timestep_loss``), and the masked, guided DDIM of the pictures: one step, the
inversion up to ᾱ = 0 and the sampling back (``masked_guided_ddim``, 10 steps).

Their trainer is built only as far as its masks: its distributed and CUDA set-up is replaced by
pass-throughs (``DistributedDataParallel`` and ``Module.cuda`` return the module; the parent's
``_build_model``, which loads the pre-trained DDPM file, does nothing). Compared in evaluation
mode (the frozen U-Net's dropout 0.1 draws different masks in the two codes)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from omegaconf import OmegaConf
from torch import nn

from bench.methods.diffusion.gradient_field import guidance_coefficients
from bench.methods.diffusion.schedule import noise_for_training
from bench.methods.diti import ALPHA_ZERO, DiTi, Mode
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
from parity_cases.ddpm_pixel import CONFIG, NOTE, their_diffusion, unet_settings

NEEDS = (DITI,)
DDIM_STEPS = 10
# Modules their trainer imports that cannot load: their ``dataset`` package (its __init__
# imports dataset.mnist and dataset.horse, which the repository lacks) and TensorBoard's writer
# (not a dependency here).
ABSENT = ("dataset", "torch.utils.tensorboard")


def their_masks(root: Path) -> dict[str, torch.Tensor]:
    """``t_to_idx``, ``masks``, ``k_masks``, ``receding_masks`` as ``DiTiTrainer`` builds them."""
    import diti_trainer
    from representation_learning_trainer import RepresentationLearningTrainer

    trainer = diti_trainer.DiTiTrainer.__new__(diti_trainer.DiTiTrainer)
    trainer.config = OmegaConf.to_container(OmegaConf.load(root / CONFIG), resolve=True)
    trainer.device = torch.device("cpu")
    with (
        mock.patch.object(RepresentationLearningTrainer, "_build_model", lambda self: None),
        mock.patch.object(diti_trainer, "DistributedDataParallel", lambda m, **kwargs: m),
        mock.patch.object(nn.Module, "cuda", lambda self, *args, **kwargs: self),
    ):
        trainer._build_model()
    names = ("t_to_idx", "masks", "k_masks", "receding_masks")
    return {name: getattr(trainer, name) for name in names}


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DITI: CONFIG}, notes=[NOTE])
    comparison.notes.append(
        f"{DITI}'s dataset/__init__.py imports dataset.mnist and dataset.horse, which the "
        "repository lacks: a stand-in takes the package's place"
    )
    ours = our_method("diti", "celeba", overrides=[f"method.sample_steps={DDIM_STEPS}"]).eval()
    root = found[DITI].path
    with importable(root, root / "trainer", absent=ABSENT):
        from model.representation.decoder import CELEBA64Decoder
        from model.representation.encoder import CELEBA64Encoder

        settings = unet_settings(ours.ddpm)
        decoder = CELEBA64Decoder(latent_dim=ours.config.latent_dim, **settings).eval()
        state = load_into(decoder, ours, layout("diti", "diti-shift-unet"))
        module = f"ShiftUNet(latent_dim={ours.config.latent_dim}, **{settings})"
        comparison.manifests["diti-shift-unet"] = (DITI, module, state)
        encoder = CELEBA64Encoder(latent_dim=ours.config.latent_dim).eval()
        state = load_into(encoder, ours, layout("diti", "diti-celeba64-encoder"))
        comparison.manifests["diti-celeba64-encoder"] = (DITI, "CELEBA64Encoder(512)", state)
        masks = their_masks(root)
        compare_masks(comparison, ours, masks)
        diffusion = their_diffusion(root)
        compare_model(comparison, ours, encoder, decoder, diffusion, masks)
        compare_ddim(comparison, ours, decoder, diffusion, masks["masks"])
    return comparison


def compare_masks(comparison: Comparison, ours: DiTi, masks: dict[str, torch.Tensor]) -> None:
    comparison.add("block of each t (t_to_idx)", ours.block_of_step, masks["t_to_idx"])
    comparison.add("masks (blocks up to idx)", ours.masks, masks["masks"])
    comparison.add("k_masks (the newest block)", ours.new_masks, masks["k_masks"])
    comparison.add("receding_masks (older blocks)", ours.old_masks, masks["receding_masks"])


def compare_model(comparison: Comparison, ours: DiTi, encoder, decoder, diffusion, masks) -> None:
    comparison.add("loss weight w_t", ours.weight, diffusion.weight)
    comparison.add("training coefficient k_t", ours.mean_shift, diffusion.shift_coef)
    images = inputs((4, 3, 64, 64), seed=1).sigmoid()
    x = images * 2 - 1
    generator, replay = replayed(2)
    steps, noise, noisy = noise_for_training(ours.ddpm.scheduler, x, replay)
    with torch.no_grad():
        z = ours.encode(images)
        comparison.add("encoder code z", z, encoder(x))
        condition = z * ours.masks[ours.block_of_step[steps]]
        epsilon, field = ours.field(noisy, steps, condition)
        their_epsilon, their_field = decoder(noisy, steps, condition)
        comparison.add("ShiftUNet ε (frozen DDPM)", epsilon, their_epsilon)
        comparison.add("ShiftUNet g (gradient field)", field, their_field)
        for mode in Mode:
            ours.config.mode = mode
            loss, _ = ours.training_loss(
                Batch(images), torch.Generator().set_state(generator.get_state())
            )
            with replaying([("randint", steps), ("randn_like", noise)]):
                their_loss, _, _ = diffusion.pdae_timestep_loss(
                    encoder, decoder, x, masks["t_to_idx"], masks["masks"], masks["k_masks"],
                    masks["receding_masks"], mode.value,
                )  # fmt: skip
            comparison.add(f"loss (mode {mode.value})", loss, their_loss)
    ours.config.mode = Mode.base


def compare_ddim(comparison: Comparison, ours: DiTi, decoder, diffusion, masks) -> None:
    """One guided step in float32; the inversion and sampling chains in float64: over a chain,
    float32 round-off grows with 1/√ᾱ_t (to ~150 at t = 990), which would hide a difference of
    formula rather than show one. Their schedule's tensors are cast to float64 as our buffers
    are (our sampling coefficient is computed again from the float64 ᾱ, as theirs is), and
    their time-step embedding, made in float32 whatever the model's type, is cast to the
    model's: the only changes to their code, of type and not of formula."""
    images = inputs((4, 3, 64, 64), seed=3).sigmoid()
    x = images * 2 - 1
    z = ours.encode(images)
    t, to = torch.full((4,), 500), torch.full((4,), 400)
    with torch.no_grad():
        condition = z * ours.masks[ours.block_of_step[t]]
        step = diffusion.guided_ddim_step(decoder, condition, x, t, to)
        comparison.add("guided DDIM step 500 → 400", ours.ddim_step(x, 500, 400, z), step)
        last = diffusion.guided_ddim_step(decoder, condition, x, t, torch.full((4,), ALPHA_ZERO))
        comparison.add("guided DDIM step 500 → ᾱ = 0", ours.ddim_step(x, 500, ALPHA_ZERO, z), last)
        ours.double(), decoder.double()
        ours.guidance = guidance_coefficients(ours.alphas_cumprod)  # computed in float64 too
        for name, value in vars(diffusion).items():  # their schedule's tensors
            if torch.is_tensor(value) and value.is_floating_point():
                setattr(diffusion, name, value.double())
        images, z = images.double(), z.double()
        x = images * 2 - 1
        style = f"ddim{DDIM_STEPS}"
        inverted = ours.invert(images, z)
        with embedding_in_float64():
            theirs = diffusion.masked_guided_ddim(
                style, None, decoder, x, None, z=z, reverse_process=False, masks=masks,
                verbose=False,
            )  # fmt: skip
            comparison.add(f"inversion to x_T, {DDIM_STEPS} steps (float64)", inverted, theirs)
            sampled = ours.sample(inverted, z)
            theirs = diffusion.masked_guided_ddim(
                style, None, decoder, None, inverted, z=z, masks=masks, verbose=False
            )
        comparison.add(
            f"sampling from x_T, {DDIM_STEPS} steps (float64)", sampled, (theirs + 1) / 2
        )
    ours.float(), decoder.float().eval()  # their DDIM step leaves it in training mode


@contextmanager
def embedding_in_float64():
    import model.unet.shift_unet as shift_unet

    embedding = shift_unet.timestep_embedding
    with mock.patch.object(shift_unet, "timestep_embedding", lambda *a: embedding(*a).double()):
        yield
