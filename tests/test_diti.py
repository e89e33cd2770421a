"""DiTi, its frozen pixel DDPM stage, and per-unit PCA over units of unequal widths."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from bench.evaluate import CodeTable
from bench.methods.ddpm_pixel import PixelDDPM, PixelDDPMConfig
from bench.methods.diffusion.gradient_field import frozen_pass
from bench.methods.diffusion.unet import PlainUNetConfig
from bench.methods.diti import (
    ALPHA_ZERO,
    CelebA64Encoder,
    DiTi,
    DiTiConfig,
    Mode,
    block_ends,
)
from bench.methods.trainer import Batch
from bench.metrics.utils import unit_slices
from bench.runner import run
from tests.conftest import FAST
from tests.test_disdiff import randomise

SMALL_UNET = PlainUNetConfig(
    channels=[16, 32, 32, 64], layers_per_block=1, attention_resolutions=[4], heads=1, norm_groups=8
)


def small_diti(**settings) -> DiTi:
    torch.manual_seed(0)
    config = DiTiConfig(**settings)
    config.ddpm.model.unet = SMALL_UNET
    model = DiTi(config, (64, 64, 3))
    randomise(model.ddpm.unet)  # a frozen model that predicts something
    return model.train()


def test_blocks_and_stages_are_the_published_table():
    ends = block_ends(1000, 64, [50, 100, 300, 500, 1000], [10, 25, 327, 100, 50])
    sizes = np.diff([0, *ends]).tolist()
    assert len(sizes) == 64 and sum(sizes) == 512 and sizes[-1] == 19
    per_stage = [sizes[:4], sizes[4:7], sizes[7:20], sizes[20:32], sizes[32:]]
    assert [len(s) for s in per_stage] == [4, 3, 13, 12, 32]
    assert per_stage[0] == [2, 2, 2, 4] and per_stage[1] == [8, 8, 9]
    assert per_stage[2] == [25] * 12 + [27] and per_stage[3] == [8] * 11 + [12]
    assert per_stage[4] == [1] * 31 + [19]
    model = small_diti()
    # Block 3 starts at t = 47 (stage 0) and covers t 47–62: the masks follow the blocks.
    assert model.block_of_step[47] == 3 and model.block_of_step[62] == 3
    assert model.masks[3].sum() == 10 and model.new_masks[3].sum() == 4
    assert model.old_masks[3].sum() == 6 and model.masks[63].sum() == 512
    torch.testing.assert_close(model.masks, model.old_masks + model.new_masks)


def test_loss_weight_and_parameter_counts_have_their_closed_forms():
    model = small_diti()
    alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    for t in (0, 500, 999):
        snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
        # float32 ᾱ, as DiTi's torch schedule: 1 − ᾱ_0 = 1e-4 carries ~1e-4 relative error
        assert model.weight[t].item() == pytest.approx(snr**0.1 / (1 + snr), rel=1e-3)
    assert model.weight[0].item() == pytest.approx(2.5e-4, rel=0.02)  # methods-pdae.md §2.5
    assert model.weight[999].item() == pytest.approx(0.36, abs=0.01)
    # The authors' encoder and PDAE's template at the most likely 64-px configuration.
    assert sum(p.numel() for p in CelebA64Encoder(3, 512).parameters()) == 1_487_104
    full = PixelDDPM(PixelDDPMConfig(), (64, 64, 3))
    assert sum(p.numel() for p in full.unet.parameters()) == 63_958_019  # 63.96M
    width = 4 * SMALL_UNET.channels[0]  # label_emb: 512 → the time embedding's 4·base
    assert sum(p.numel() for p in model.label_emb.parameters()) == 512 * width + width


def test_at_initialisation_the_prediction_is_the_frozen_models():
    model = small_diti()
    x, steps = torch.randn(2, 3, 64, 64), torch.tensor([5, 800])
    z = model.encode(torch.rand(2, 3, 64, 64))
    prediction, field = model.field(x, steps, z * model.masks[model.block_of_step[steps]])
    assert torch.count_nonzero(field) == 0 and prediction.abs().amax() > 0.01
    torch.testing.assert_close(prediction, model.ddpm.unet(x, steps).sample, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["base", "stop_grad"])
def test_each_sample_trains_only_its_blocks_dims(mode, monkeypatch):
    model = small_diti(mode=mode)
    randomise(model.decoder)  # g ≠ 0, so the code gets a gradient
    z = torch.randn(6, 512, requires_grad=True)
    monkeypatch.setattr(model.encoder, "forward", lambda x: z)
    generator = torch.Generator().manual_seed(3)
    loss, _ = model.training_loss(Batch(torch.rand(6, 3, 64, 64)), generator)
    loss.backward()
    steps, _, _ = model.ddpm.noisy_images(
        torch.rand(6, 3, 64, 64), torch.Generator().manual_seed(3)
    )
    allowed = (model.new_masks if mode == "stop_grad" else model.masks)[model.block_of_step[steps]]
    assert torch.all(z.grad[allowed == 0] == 0)
    assert torch.all((z.grad != 0).sum(1) > 0)  # every sample trains some of its dims
    if mode == "stop_grad":  # the older blocks' dims still condition the decoder, untrained
        assert (model.old_masks[model.block_of_step[steps]].sum(1) > 0).any()


def test_frozen_ddpm_is_unchanged_and_its_features_are_the_unets():
    model = small_diti()
    x, steps = torch.randn(2, 3, 64, 64), torch.tensor([0, 999])
    torch.testing.assert_close(
        frozen_pass(model.ddpm.unet, x, steps).prediction, model.ddpm.unet(x, steps).sample
    )
    before = {k: v.clone() for k, v in model.ddpm.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        loss, _ = model.training_loss(
            Batch(torch.rand(4, 3, 64, 64)), torch.Generator().manual_seed(0)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.ddpm.state_dict().items())
    assert not model.ddpm.training
    assert model.config.mode == Mode.base


class Codes(torch.nn.Module):
    """A stand-in method whose code is six numbers of the image (floor, wall and object
    colours vary), in units of unequal widths."""

    code_units: ClassVar[list[int]] = [1, 3, 2]
    representation_dim = 6

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :6] * torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, 1.0])


def test_pca1_reduces_units_of_unequal_widths_each_by_its_own_pca():
    assert unit_slices([1, 3, 2], 6) == [slice(0, 1), slice(1, 4), slice(4, 6)]
    assert unit_slices(2, 6) == [slice(0, 3), slice(3, 6)] and len(unit_slices(None, 6)) == 6
    with pytest.raises(ValueError, match="do not tile"):
        unit_slices([2, 2], 6)
    import bench.datasets

    data = bench.datasets.load("shapes3d-procedural")
    table = CodeTable(data, Codes(), torch.device("cpu"), 64)
    table.fit_pca1(200, random_seed=0)
    rows = np.arange(10)[:, None]
    reduced = table.lookup(rows)
    assert reduced.shape == (10, 3)
    fit_rows = np.sort(np.random.default_rng(0).choice(len(data), 200, replace=False))
    codes = table.codes[fit_rows]
    for u, unit in enumerate(unit_slices([1, 3, 2], 6)):
        expected = PCA(n_components=1).fit(codes[:, unit]).transform(table.codes[:10, unit])[:, 0]
        np.testing.assert_allclose(reduced[:, u], expected, rtol=1e-5, atol=1e-6)


# Two steps of each stage, tiny pictures: DiTi through the runner in seconds.
TINY_DITI = [
    *FAST,
    "eval.metrics=[]",
    "train.steps=2",
    "train.batch_size=4",
    "method.ddpm.steps=2",
    "method.ddpm.batch_size=4",
    "method.sample_steps=2",
    "method.picture_pairs=1",
]


def test_a_second_seed_reuses_the_ddpm_stage(tmp_path):
    first = run("diti", "shapes3d-procedural", "smoke", TINY_DITI, out=tmp_path)
    second = run("diti", "shapes3d-procedural", "smoke", TINY_DITI, seed=1, out=tmp_path)
    reused = [
        next(e for e in r.read_log() if e.get("event") == "ddpm")["reused"] for r in (first, second)
    ]
    assert reused == [False, True]
    assert (first.path / "pictures" / "counterfactual.png").is_file()


def test_generation_for_fid_is_seeded_masked_ddim_guided_by_the_images_code():
    model = small_diti(sample_steps=2).eval()
    randomise(model.decoder)  # its zero-initialised outputs would give no field
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    first = model.generate(images, seed=3)
    assert first.shape == (2, 3, 64, 64) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, model.generate(images, seed=3))
    assert not torch.equal(first, model.generate(images, seed=4))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    z = model.encode(images)
    assert torch.equal(first, model.sample(noise, z))
    assert not torch.equal(first, model.sample(noise, z + 1.0))
    assert len(model.ddim_schedule(5)) == 5 and len(model.ddim_schedule()) == 2


def test_inversion_takes_a_last_step_to_alpha_bar_zero(monkeypatch):
    # DiTi's masked_guided_ddim inverts up its schedule and then to ᾱ = 0, where x is the
    # noise recomputed from the clipped x0: (x − √ᾱ_t·x0) / √(1 − ᾱ_t).
    model = small_diti(sample_steps=10).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    z = model.encode(images)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        alpha = model.alphas_cumprod[900]
        epsilon = model.ddpm.unet(x, torch.tensor([900, 900])).sample  # g = 0 at init
        start = ((x - (1 - alpha).sqrt() * epsilon) / alpha.sqrt()).clamp(-1, 1)
        expected = (x - alpha.sqrt() * start) / (1 - alpha).sqrt()
        torch.testing.assert_close(model.ddim_step(x, 900, ALPHA_ZERO, z), expected)
    taken, step = [], model.ddim_step
    monkeypatch.setattr(
        model, "ddim_step", lambda x, t, to, z: taken.append((t, to)) or step(x, t, to, z)
    )
    model.invert(images, z)
    assert taken == [(t, t + 100) for t in range(0, 900, 100)] + [(900, ALPHA_ZERO)]
