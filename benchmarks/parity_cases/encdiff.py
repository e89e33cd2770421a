"""EncDiff's networks against the modules they are made of. EncDiff's own code is not
public: its U-Net is LDM's openaimodel U-Net as dis-dis has it (context 16, no dropout, no
Skip Dropout) and its encoder DisDiff's ``Encoder4`` with 20 outputs (methods.md §7), so
those are compared, each on fixed inputs; EncDiff's loss has no released code to compare
with (it is the ldm and dyga_sd cases' L1 on ε)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from omegaconf import OmegaConf

from parity_cases.authors import DIS_DIS, DISDIFF, checkouts, importable
from parity_cases.common import Comparison, inputs, layout, load_into, our_method
from parity_cases.dyga_sd import CONFIG as DIS_DIS_CONFIG

NEEDS = (DIS_DIS, DISDIFF)
UNET = "ldm.modules.diffusionmodules.openaimodel_skip-dropout"


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DIS_DIS: f"code/{DIS_DIS_CONFIG}"})
    ours = our_method("encdiff").eval()
    code = found[DIS_DIS].path / "code"
    with importable(code):
        params = dict(OmegaConf.load(code / DIS_DIS_CONFIG).model.params.unet_config.params)
        params.update(context_dim=ours.config.token_dim, dropout=0.0, skip_dropout=0.0)
        unet = importlib.import_module(UNET).UNetModel(**params).eval()
        state = load_into(unet, ours, layout("encdiff", "encdiff-unet"))
        comparison.manifests["encdiff-unet"] = (DIS_DIS, f"{UNET} with EncDiff's settings", state)
        latents, steps = (
            inputs((8, 3, 16, 16), seed=1),
            torch.tensor([0, 1, 10, 100, 400, 700, 900, 999]),
        )
        tokens = inputs((8, ours.config.num_units, ours.config.token_dim), seed=2)
        with torch.no_grad():
            epsilon = unet(latents, steps, context=tokens)
            ours_epsilon = ours.unet(latents, steps, encoder_hidden_states=tokens).sample
        comparison.add("unet ε", ours_epsilon, getattr(epsilon, "pred", epsilon))
    with importable(found[DISDIFF].path):
        from ldm.modules.encoders.modules import Encoder4

        encoder = Encoder4(d=128, latent_dim=ours.config.num_units).eval()
        state = load_into(encoder, ours, layout("encdiff", "encdiff-encoder4"))
        comparison.manifests["encdiff-encoder4"] = (
            DISDIFF,
            "Encoder4(d=128, latent_dim=20)",
            state,
        )
        images = inputs((8, 3, 64, 64), seed=3).sigmoid()
        with torch.no_grad():
            comparison.add("encoder units", ours.scalars(images), encoder(images * 2 - 1))
    return comparison
