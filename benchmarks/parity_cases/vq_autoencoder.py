"""The VQ first stage against LDM's ``VQModel`` as DisDiff configures it
(configs/autoencoder/shapes3d_vq_4_16.yaml; dis-dis's first stage is the same model), with
taming's ``VectorQuantizer2`` and patch discriminator: the pre-quantisation latents, the
quantised latents and their codes, the codebook loss, both decodings (quantised, and
``force_not_quantize`` as DisDiff decodes x̂0), the L1 term and the discriminator's logits.

Their autoencoder casts nothing to float32, so it is compared in float64 as well: there the
two agree to round-off of float64, which shows that the float32 differences (up to ~1e-5 on
decodings of size 2) are the two float32 round-offs and not a difference in the model.

The LPIPS term is not compared here: taming's LPIPS builds torchvision's VGG16, which needs
torchvision (``tests/test_lpips.py`` checks ours against the formula of LPIPS v0.1)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from omegaconf import OmegaConf

from parity_cases.authors import DISDIFF, TAMING, checkouts, importable
from parity_cases.common import Comparison, inputs, layout, load_into, our_method

NEEDS = (DISDIFF, TAMING)
CONFIG = "configs/autoencoder/shapes3d_vq_4_16.yaml"


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DISDIFF: CONFIG})
    # LPIPS would read its weight files; it is not part of this comparison
    ours = our_method("vq_autoencoder", overrides=["method.perceptual_weight=0"]).eval()
    with importable(found[DISDIFF].path, found[TAMING].path):
        from ldm.models.autoencoder import VQModel, VQModelInterface
        from taming.modules.discriminator.model import NLayerDiscriminator

        params = OmegaConf.load(found[DISDIFF].path / CONFIG).model.params
        built = (params.ddconfig, {"target": "torch.nn.Identity"}, params.n_embed, params.embed_dim)
        vq, interface = VQModel(*built).eval(), VQModelInterface(params.embed_dim, *built[:3])
        state = load_into(vq, ours, layout("vq_autoencoder", "ldm-vq-autoencoder"))
        interface.eval().load_state_dict(state)
        comparison.manifests["ldm-vq-autoencoder"] = (DISDIFF, CONFIG, state)
        channels = params.lossconfig.params.disc_in_channels
        discriminator = NLayerDiscriminator(input_nc=channels, n_layers=3).eval()
        state = load_into(
            discriminator, ours, layout("vq_autoencoder", "taming-patch-discriminator")
        )
        comparison.manifests["taming-patch-discriminator"] = (
            TAMING,
            "NLayerDiscriminator(n_layers=3)",
            state,
        )

        x = inputs((8, 3, 64, 64), seed=1).tanh()
        theirs = (vq, interface, discriminator)
        for dtype, suffix in ((torch.float32, ""), (torch.float64, " (float64)")):
            ours_copy = copy.deepcopy(ours).to(dtype)
            theirs_copy = [copy.deepcopy(module).to(dtype) for module in theirs]
            measured = measure(ours_copy, *theirs_copy, x.to(dtype))
            for name, pair in measured.items():
                comparison.add(name + suffix, *pair)
    return comparison


def measure(ours, vq, interface, discriminator, x) -> dict[str, tuple]:
    with torch.no_grad():
        h = ours.vq.encode(x).latents
        decoded = ours.vq.decode(h)
        quantised, codebook_loss, (_, _, codes) = vq.quantize(h)
        ours_quantised, _, (_, _, ours_codes) = ours.vq.quantize(h)
        reconstruction, _ = vq(x)
        return {
            "pre-quantisation latents": (h, vq.encode_to_prequant(x)),
            "codes": (ours_codes.flatten(), codes.flatten()),
            "quantised latents": (ours_quantised, quantised),
            "codebook loss": (decoded.commit_loss.mean(), codebook_loss),
            "decoded": (decoded.sample, vq.decode(quantised)),
            "decoded without quantising": (
                ours.vq.decode(h, force_not_quantize=True).sample,
                interface.decode(h, force_not_quantize=True),
            ),
            # their loss's rec_loss, the term before LPIPS
            "L1": ((x - decoded.sample).abs().mean(), (x - reconstruction).abs().mean()),
            "discriminator logits": (ours.discriminator(x), discriminator(x)),
        }
