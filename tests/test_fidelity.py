"""DyGA+SD and EncDiff as their authors' code runs them (fidelity-dyga-sd.md): the U-Net's
size and initialisation, what the EMA averages, float32 where the targets are made, and
EncDiff's residual block."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from bench.config import resolve_config
from bench.errors import BenchError
from bench.methods.diffusion.encoder4 import ResidualBlock
from bench.methods.diffusion.unet import ResBlockResample, UNetConfig, build_unet
from bench.methods.dyga_sd import DyGASD
from bench.methods.trainer import Batch
from bench.runner import run
from tests.test_dyga_sd import TINY


def paper_unet():
    cfg = resolve_config("dyga_sd", "shapes3d-procedural", "paper")
    torch.manual_seed(0)
    return build_unet(OmegaConf.to_object(cfg.method).unet, 3, 16, 32)


def test_the_unet_resamples_with_resblocks_and_outputs_zero_at_initialisation():
    # Its parameter count is the authors' (tests/test_parameter_counts.py).
    unet = paper_unet()
    resamplers = [m for m in unet.modules() if isinstance(m, ResBlockResample)]
    assert len(resamplers) == 6  # three down, three up, as LDM's resblock_updown
    latents, context = torch.randn(2, 3, 16, 16), torch.randn(2, 20, 32)
    with torch.no_grad():
        out = unet(latents, torch.tensor([3, 900]), encoder_hidden_states=context).sample
    assert out.shape == latents.shape and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_zero_initialised_resampling_resblock_is_pooling_or_nearest_upsampling(direction):
    # With its last convolution 0, LDM's resampling ResBlock returns its resampled input:
    # average pooling going down, nearest-neighbour upsampling going up.
    config = UNetConfig(channels=[32, 32], norm_groups=8)
    unet = build_unet(config, 3, 8, 4)
    block = next(
        m
        for m in unet.modules()
        if isinstance(m, ResBlockResample) and m.resnet.down == (direction == "down")
    )
    block.eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        unet(
            torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), encoder_hidden_states=torch.ones(2, 1, 4)
        )
        out = block(x)
    expected = F.avg_pool2d(x, 2) if direction == "down" else F.interpolate(x, scale_factor=2.0)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["dyga_sd", "encdiff"])
def test_the_ema_averages_the_unet_and_the_scored_encoder_stays_live(method, tmp_path):
    # The EMA is a side computation: with and without it, training follows the same path, so
    # the live weights are equal; only what it averages (the U-Net) is kept averaged.
    overrides = [*TINY, "train.ema_decay=0.5"]
    averaged = run(method, "shapes3d-procedural", "ci", overrides, out=tmp_path)
    live = run(method, "shapes3d-procedural", "ci", [*TINY, "train.ema_decay=null"], out=tmp_path)
    a, b = load_file(averaged.weights_file), load_file(live.weights_file)
    for key in a:
        if key.startswith("unet."):
            continue
        assert torch.equal(a[key], b[key]), key  # encoder, token MLPs, BN statistics: live
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("unet."))


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        ("[encoder]", "would cover batch norm layers"),
        ("null", "would cover batch norm layers"),
        ("[unett]", "has no module 'unett'"),
    ],
)
def test_an_ema_over_batch_norm_weights_is_refused(modules, message, tmp_path):
    overrides = [*TINY, f"train.ema_modules={modules}"]
    with pytest.raises(BenchError, match=message):
        run("dyga_sd", "shapes3d-procedural", "ci", overrides, out=tmp_path)


def test_latents_and_add_noise_run_in_float32_under_autocast():
    cfg = resolve_config("dyga_sd", "shapes3d-procedural", "ci")
    torch.manual_seed(0)
    model = DyGASD(OmegaConf.to_object(cfg.method), (64, 64, 3))
    images = torch.rand(4, 3, 64, 64)
    latents = model.latents(images)  # float32, and fixes the latent scale
    seen = {}

    def keep_input(module, args):
        seen["noisy"] = args[0]

    model.unet.register_forward_pre_hook(keep_input)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.training_loss(Batch(images), torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    steps = torch.randint(0, 1000, (4,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    expected = model.scheduler.add_noise(latents, noise, steps)
    assert seen["noisy"].dtype == torch.float32
    torch.testing.assert_close(seen["noisy"], expected, rtol=0, atol=0)


def test_encdiff_residual_branch_has_the_official_layout():
    # EncResBlock(bn=True): ReLU, conv 3×3, BN, ReLU, conv 1×1 — no batch norm at the end.
    block = ResidualBlock(8)
    layout = [(type(m), getattr(m, "kernel_size", None)) for m in block.body]
    assert layout == [
        (nn.ReLU, None),
        (nn.Conv2d, (3, 3)),
        (nn.BatchNorm2d, None),
        (nn.ReLU, None),
        (nn.Conv2d, (1, 1)),
    ]


def test_every_unet_resnet_normalises_with_openaimodels_epsilon():
    # openaimodel's normalization() is GroupNorm32(32, c) with eps 1e-5, in every ResBlock,
    # the resampling ones too; diffusers' ResnetBlock2D defaults to 1e-6 (the parity harness
    # found the resamplers at 1e-6: ~1e-3 apart on one block).
    unet = paper_unet()
    norms = [
        norm
        for block in unet.modules()
        if isinstance(block, ResnetBlock2D)
        for norm in (block.norm1, block.norm2)
    ]
    assert len(norms) == 2 * (8 + 12 + 2 + 6)  # down, up and middle ResBlocks, resamplers
    assert {norm.eps for norm in norms} == {1e-5}
