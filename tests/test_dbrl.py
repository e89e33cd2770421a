"""Diffusion-Based Representation Learning: its loss against a closed form, the VE samplers on a
Gaussian, the encoder's time conditioning, the regulariser switch, and the t* knob."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bench.config import resolve_config
from bench.methods.dbrl import DBRL, DBRLConfig, Encoder, WideResNetConfig
from bench.methods.diffusion.ve_sde import VESDE, Sampler
from bench.runner import run
from bench.sweep import load_sweep

MEAN, STD = 0.3, 0.5  # every pixel of the Gaussian data set: N(MEAN, STD²), independent


class TrueScore(nn.Module):
    """∇ log p_σ of the Gaussian data set convolved with N(0, σ²): −(x − μ)/(s² + σ²)."""

    def forward(self, x, sigma, code):
        return -(x - MEAN) / (STD**2 + sigma[:, None, None, None] ** 2)


def tiny_dbrl(**settings) -> DBRL:
    config = DBRLConfig(wide_resnet=WideResNetConfig(depth=10, widen_factor=1), **settings)
    torch.manual_seed(0)
    return DBRL(config, (16, 16, 1))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.6, 0.95])
def test_the_loss_of_the_true_score_is_the_closed_form_of_sigma_squared_weighting(t):
    # With the true score, σ·s + ε = (s²ε − σ·s·η)/(s² + σ²) per pixel (x₀ = μ + s·η), whose
    # second moment is s²/(s² + σ²): the σ²-weighted loss ½ Σ_pixels (σ·s + ε)² has mean
    # ½·P·s²/(s² + σ²). Unweighted (λ = 1) it would be that divided by σ².
    model = tiny_dbrl()
    model.score_net = TrueScore()
    model.sde.sample_times = lambda count, generator: torch.full((count,), t)
    generator = torch.Generator().manual_seed(1)
    images = MEAN + STD * torch.randn((4096, 1, 16, 16), generator=generator)
    loss, logs = model.training_loss(images, generator)
    sigma = float(model.sde.sigma(torch.tensor(t)))
    expected = 0.5 * 16 * 16 * STD**2 / (STD**2 + sigma**2)
    assert loss.item() == pytest.approx(expected, rel=0.01)
    assert logs["dsm"].item() == loss.item()  # λ_z = 0: nothing else is added


@pytest.mark.parametrize("sampler", list(Sampler))
def test_both_samplers_draw_the_gaussian_data_set_from_its_true_score(sampler):
    sde = VESDE()
    noise = torch.randn((2000, 1, 4, 4), generator=torch.Generator().manual_seed(2))
    samples = sde.sample(
        lambda x, sigma: TrueScore()(x, sigma, None),
        noise,
        steps=500,
        sampler=sampler,
        generator=torch.Generator().manual_seed(3),
    )
    assert samples.mean().item() == pytest.approx(MEAN, abs=0.03)
    assert samples.std().item() == pytest.approx(STD, rel=0.05)


def test_the_encoders_output_changes_with_t_through_its_time_biases():
    model = tiny_dbrl().eval()
    images = torch.rand((4, 1, 16, 16), generator=torch.Generator().manual_seed(4))
    early, late = (model.code(images, torch.full((4,), t))[1] for t in (0.1, 0.9))
    assert not torch.allclose(early, late)
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.time_bias.weight.zero_()
            block.time_bias.bias.zero_()
    early, late = (model.code(images, torch.full((4,), t))[1] for t in (0.1, 0.9))
    torch.testing.assert_close(early, late)


def test_the_kl_is_logged_but_added_only_with_a_positive_lambda():
    images = torch.rand((8, 1, 16, 16), generator=torch.Generator().manual_seed(5))
    results = {}
    for lambda_z in (0.0, 1e-3):
        model = tiny_dbrl(encoder=Encoder.probabilistic, lambda_z=lambda_z)
        model.score_net = TrueScore()
        loss, logs = model.training_loss(images, torch.Generator().manual_seed(6))
        results[lambda_z] = loss.item(), logs["dsm"].item(), logs["kl"].item()
    (loss0, dsm0, kl0), (loss1, dsm1, kl1) = results[0.0], results[1e-3]
    assert kl0 > 0 and loss0 == dsm0
    assert kl1 == kl0 and dsm1 == dsm0
    assert loss1 == pytest.approx(dsm1 + 1e-3 * kl1, rel=1e-6)


def test_the_authors_width_is_no_deviation_and_ours_is_recorded():
    assert tiny_dbrl().deviations() == []  # widen factor 1: 64 pooled features, no 128 to match
    config = DBRLConfig()
    assert "method.latent_dim=128" in DBRL(config, (64, 64, 3)).deviations()[0]
    config.latent_dim = 128
    assert DBRL(config, (64, 64, 3)).deviations() == []


def test_the_t_sweep_lists_its_grid():
    sweep = load_sweep(__import__("pathlib").Path("sweeps/dbrl_t.yaml"))
    values = sorted({spec.variant for spec in sweep.runs()})
    assert values == [f"method.eval_t={t}" for t in (0.1, 0.3, 0.5, 0.7)]
    assert len(sweep.runs()) == 4 * 2 * 3


def test_two_t_stars_give_different_scores(tmp_path):
    scores = []
    for t in (0.1, 0.9):
        record = run(
            "dbrl", "shapes3d-procedural", "ci", [f"method.eval_t={t}"], out=tmp_path / str(t)
        )
        scores.append(json.loads(record.metrics_file.read_text()))
    assert list(scores[0]) == ["mig", "sap_score", "dci"]
    values = [np.array([m["values"][k] for m in s.values() for k in m["values"]]) for s in scores]
    assert not np.allclose(values[0], values[1])
    assert resolve_config("dbrl", "shapes3d-procedural").method.eval_t == 0.5
