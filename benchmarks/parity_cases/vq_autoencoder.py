"""The VQ first stage against LDM's ``VQModel`` as DisDiff configures it
(configs/autoencoder/shapes3d_vq_4_16.yaml; dis-dis's first stage is the same model), with
taming's ``VectorQuantizer2`` and patch discriminator: the pre-quantisation latents, the
quantised latents and their codes, the codebook loss, both decodings (quantised, and
``force_not_quantize`` as DisDiff decodes x̂0), the L1 term and the discriminator's logits.

Their autoencoder casts nothing to float32, so it is compared in float64 as well: there the
two agree to round-off of float64, which shows that the float32 differences (up to ~1e-5 on
decodings of size 2) are the two float32 round-offs and not a difference in the model.

The LPIPS term is compared on its own: taming's ``LPIPS`` (scaling layer, VGG16 slices, unit
normalisation, linear heads, spatial average) against ours, both holding one set of random
VGG16 and head weights, which ours reads from the two files it reads in training. taming
builds its VGG16 with torchvision's ``models.vgg16(pretrained=True)``: in its place goes
VGG16's layer list (configuration "D", up to the fifth pooling) with those weights, so that
nothing is downloaded and torchvision is not needed."""

from __future__ import annotations

import copy
import tempfile
import types
from pathlib import Path
from unittest import mock

import torch
from omegaconf import OmegaConf
from torch import nn

from bench.methods.diffusion.lpips import LPIPS
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
        compare_lpips(comparison)
    return comparison


VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features``: 3×3 convolutions with ReLU, 2×2 max-pools."""
    layers: list[nn.Module] = []
    channels = 3
    for width in VGG16_D:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


def compare_lpips(comparison: Comparison) -> None:
    from taming.modules.losses import lpips as their_lpips

    vgg = vgg16_features()
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():  # He-initialised, so that features stay of order 1 to relu5_3
        for conv in (m for m in vgg if isinstance(m, nn.Conv2d)):
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
            conv.weight.mul_((2 / fan_in) ** 0.5)
            conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=generator))
    heads = {
        f"lin{i}.model.1.weight": torch.rand((1, c, 1, 1), generator=generator) / c
        for i, c in enumerate((64, 128, 256, 512, 512))
    }
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder) / "vgg16.pth", Path(folder) / "lpips.pth"
        torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()}, files[0])
        torch.save(heads, files[1])
        ours = LPIPS(str(files[0]), str(files[1]))

    def vgg16(pretrained: bool) -> types.SimpleNamespace:  # torchvision.models.vgg16
        return types.SimpleNamespace(features=vgg)

    torchvision_models = types.SimpleNamespace(vgg16=vgg16)
    with (
        mock.patch.object(their_lpips, "models", torchvision_models),
        mock.patch.object(their_lpips.LPIPS, "load_from_pretrained", lambda self: None),
    ):
        theirs = their_lpips.LPIPS().eval()
    theirs.load_state_dict(heads, strict=False)
    # Pairs from near (a little noise added) to unrelated.
    base, noise = inputs((4, 3, 64, 64), seed=7), inputs((4, 3, 64, 64), seed=8)
    amount = torch.tensor([0.05, 0.3, 1.0, 10.0])[:, None, None, None]
    x, y = base.tanh(), (base + amount * noise).tanh()
    with torch.no_grad():
        comparison.add("LPIPS(x, y)", ours(x, y), theirs(x, y).flatten())


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
