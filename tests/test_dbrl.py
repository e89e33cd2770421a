"""Diffusion-Based Representation Learning: its loss against a closed form, the VE samplers on a
Gaussian, the encoder's time conditioning, the regulariser switch, and the t* knob."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bench.config import resolve_config
from bench.methods.dbrl import DBRL, DBRLConfig, Encoder, InputScale, WideResNetConfig
from bench.methods.diffusion.ve_sde import VESDE, Sampler
from bench.methods.trainer import Batch
from bench.runner import run
from bench.sweep import load_sweep

MEAN, STD = 0.3, 0.5  # every pixel of the Gaussian data set: N(MEAN, STD²), independent


class TrueScore(nn.Module):
    """∇ log p_σ of the Gaussian data set N(mean, std²) convolved with N(0, σ²):
    −(x − mean)/(std² + σ²)."""

    def __init__(self, mean: float = MEAN, std: float = STD) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x, sigma, code):
        return -(x - self.mean) / (self.std**2 + sigma[:, None, None, None] ** 2)


def tiny_dbrl(**settings) -> DBRL:
    """A narrow DBRL on 16×16 images in [0, 1], deterministic with λ_z 0 unless told."""
    settings = {
        "input_scale": InputScale.unit,
        "encoder": Encoder.deterministic,
        "lambda_z": 0.0,
        **settings,
    }
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
    loss, logs = model.training_loss(Batch(images), generator)
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
        loss, logs = model.training_loss(Batch(images), torch.Generator().manual_seed(6))
        results[lambda_z] = loss.item(), logs["dsm"].item(), logs["kl"].item()
    (loss0, dsm0, kl0), (loss1, dsm1, kl1) = results[0.0], results[1e-3]
    assert kl0 > 0 and loss0 == dsm0
    assert kl1 == kl0 and dsm1 == dsm0
    assert loss1 == pytest.approx(dsm1 + 1e-3 * kl1, rel=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_z_scored_inputs_are_what_the_score_network_denoises(t):
    # The Gaussian data set z-scored with its own statistics is N(0, 1) per pixel: the true
    # score of that is −x/(1 + σ²), whose σ²-weighted loss has mean ½·P/(1 + σ²). On the
    # [0, 1] scale the same score would be wrong and the loss larger.
    model = tiny_dbrl(input_scale=InputScale.zscore, channel_mean=[MEAN], channel_std=[STD])
    model.score_net = TrueScore(mean=0.0, std=1.0)
    model.sde.sample_times = lambda count, generator: torch.full((count,), t)
    generator = torch.Generator().manual_seed(1)
    images = MEAN + STD * torch.randn((4096, 1, 16, 16), generator=generator)
    loss, _ = model.training_loss(Batch(images), generator)
    sigma = float(model.sde.sigma(torch.tensor(t)))
    assert loss.item() == pytest.approx(0.5 * 16 * 16 / (1 + sigma**2), rel=0.01)
    # The encoder reads the same scale, and samples come back to [0, 1].
    torch.testing.assert_close(model.scaled(images) * STD + MEAN, images)
    model.sde.sample = lambda *args, **kwargs: torch.zeros(2, 1, 16, 16)  # the data's mean
    samples = model.sample(torch.zeros(2, 64), torch.zeros(2, 1, 16, 16), seed=0)
    torch.testing.assert_close(samples, torch.full_like(samples, MEAN))


def test_the_paper_code_is_the_128_pooled_features_of_a_probabilistic_encoder():
    from bench import datasets
    from bench.build import build_method

    cfg = resolve_config("dbrl", "shapes3d-procedural", "paper")
    data = datasets.load("shapes3d-procedural")
    with torch.device("meta"):
        model = build_method(cfg, data)
    assert cfg.train.batch_size == 100 and model.config.lambda_z == 1e-5
    assert model.representation_dim == 128 and model.encoder.probabilistic
    assert model.encoder.head.in_features == 128 and model.encoder.head.out_features == 256
    # The z-scoring statistics: each channel's over the fixed draw of training images.
    rows = np.sort(np.random.default_rng(0).choice(len(data), 5000, replace=False))
    pixels = data.images(rows).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(model.config.channel_mean, pixels.mean(0))
    np.testing.assert_allclose(model.config.channel_std, pixels.std(0))
    deviations = model.deviations()
    assert len(deviations) == 2 and all(d.startswith("not adopted: ") for d in deviations)


def test_a_20_dimensional_code_is_a_labelled_option():
    config = DBRLConfig(latent_dim=20, channel_mean=[0.5] * 3, channel_std=[0.25] * 3)
    model = DBRL(config, (64, 64, 3))
    assert model.representation_dim == 20 and model.encoder.head.out_features == 40
    assert model.deviations()[-1] == (
        "the code has 20 dimensions; the authors' is the 128 pooled features "
        "(method.latent_dim=null)"
    )
    assert tiny_dbrl().representation_dim == 64  # widen factor 1: 64 pooled features


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
