"""DisDiff against its authors' ``LatentDiffusion`` with ``dis_loss_flag`` (ldm/models/
diffusion/ddpm.py, configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml, dis_weight 0.05 as
the README's ``-dw 0.05``): the encoder's units, the orthogonal part matrix, the frozen ε,
the sum of the units' gradient fields and the sampled unit's field, and the training loss
(L_diff, L_dis, their sum), in training mode (the encoder's batch norm on batch statistics,
its frozen copy in the disentangling loss on the running ones).

Their shift U-Net reads the frozen LDM from a checkpoint file when it is built: ours is
written in the LDM's checkpoint layout (``model.diffusion_model.*`` and ``scale_factor``)
and read by their own loading code. Two things their code does that a CPU comparison must
steer: it draws the sampled unit with ``np.random.randint`` (here it returns ours) and moves
it to CUDA (``.cuda()`` returns the tensor as it is, for the comparison's duration)."""

from __future__ import annotations

import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.authors.keymap import to_authors
from bench.authors.openaimodel import unet_keymap
from bench.methods.diffusion.gradient_field import frozen_pass
from bench.methods.diffusion.schedule import noise_for_training
from parity_cases.authors import DISDIFF, TAMING, checkouts, importable
from parity_cases.common import Comparison, inputs, layout, load_into, our_method, replayed
from parity_cases.ldm import load_first_stage, their_latent_diffusion

NEEDS = (DISDIFF, TAMING)
CONFIG = "configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml"


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DISDIFF: CONFIG})
    comparison.notes.append(
        "their sampled unit (np.random.randint) is ours; their .cuda() is the identity on the CPU"
    )
    ours = our_method("disdiff").train()
    images = inputs((8, 3, 64, 64), seed=1).sigmoid()
    with torch.no_grad():
        ours.ldm.latents(images)  # measures the LDM's scale on this batch, as its stage does
    with (
        tempfile.TemporaryDirectory() as folder,
        importable(found[DISDIFF].path, found[TAMING].path),
    ):
        checkpoint = Path(folder) / "ldm.ckpt"
        write_ldm_checkpoint(ours.ldm, checkpoint)
        theirs = their_latent_diffusion(found[DISDIFF].path, CONFIG, checkpoint).train()
        load_first_stage(theirs, ours.ldm.first_stage)
        for manifest, module in (
            ("disdiff-shift-unet", theirs.model.diffusion_model),
            ("disdiff-encoder4", theirs.cond_stage_model),
        ):
            state = load_into(module, ours, layout("disdiff", manifest))
            comparison.manifests[manifest] = (DISDIFF, CONFIG, state)
        compare_disdiff(comparison, ours, theirs, images)
    return comparison


def write_ldm_checkpoint(ldm, path: Path) -> None:
    """Our LDM stage as the LDM's Lightning checkpoint holds it."""
    unet = to_authors(ldm.unet.state_dict(), unet_keymap(ldm.unet))
    state = {f"model.diffusion_model.{key}": value for key, value in unet.items()}
    torch.save({"state_dict": {**state, "scale_factor": ldm.latent_scale.clone()}}, path)


@contextmanager
def steered(sampled: torch.Tensor):
    with (
        mock.patch.object(np.random, "randint", lambda *args, **kwargs: sampled.numpy()),
        mock.patch.object(torch.Tensor, "cuda", lambda tensor, *args, **kwargs: tensor),
    ):
        yield


def compare_disdiff(comparison: Comparison, ours, theirs, images: torch.Tensor) -> None:
    x = images * 2 - 1
    theirs.on_train_batch_start({"image": x.permute(0, 2, 3, 1)}, 0, 0)
    comparison.add("latent scale", ours.ldm.latent_scale, theirs.scale_factor)
    with torch.no_grad():
        latents = ours.ldm.latents(images)
        encoded = theirs.get_first_stage_encoding(theirs.encode_first_stage(x))
    comparison.add("first stage latents (scaled)", latents, encoded)

    generator, replay = replayed(2)
    steps, noise, noisy = noise_for_training(ours.ldm.scheduler, latents, replay)
    sampled = torch.randint(0, ours.config.num_units, (len(images),), generator=replay)

    # One training-mode encoder pass on each side before the losses, so that the frozen
    # copies in the disentangling losses have the same batch-norm running statistics.
    diffusion, disentangling = ours.losses(images, generator)
    units = theirs.get_learned_conditioning(x)
    with steered(sampled):
        loss, terms = theirs.p_losses(encoded, units, steps, noise=noise)
    comparison.add("L_diff", diffusion, terms["train/loss_simple"])
    comparison.add("L_dis", disentangling.mean(), loss - terms["train/loss_simple"])
    comparison.add("loss", diffusion + disentangling.mean(), loss)

    with torch.no_grad():
        ours_units = ours.units(images)
        comparison.add("units", ours_units.flatten(1), theirs.get_learned_conditioning(x))
        shift_unet = theirs.model.diffusion_model
        expm = sys.modules[type(shift_unet).__module__].torch_expm
        weight = shift_unet.part_latents.weight
        comparison.add(
            "P = expm(Wᵀ − W)", ours.unit_embeddings.orthogonal(), expm((weight - weight.T)[None])
        )
        features = frozen_pass(ours.ldm.unet, noisy, steps)
        fields = ours.fields(features, ours_units)
        with steered(sampled):
            output = theirs.apply_model(
                noisy, steps, ours_units.flatten(1), sampled_concept=sampled.numpy()
            )
        comparison.add("frozen ε", features.prediction, output.pred)
        comparison.add("Σ_c g_c", fields.sum(1), output.out_grad)
        comparison.add(
            "g of the sampled unit", fields[torch.arange(len(images)), sampled], output.sub_grad
        )
