"""DisDiff, the gradient-field decoder on a frozen U-Net, and the chain of shared stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D
from safetensors.torch import load_file

from bench.config import resolve_config
from bench.methods.diffusion.anchoring import DyGAConfig
from bench.methods.diffusion.gradient_field import (
    FiLMResnetBlock,
    frozen_pass,
    guidance_coefficients,
    mean_shift_coefficients,
)
from bench.methods.diffusion.unet import PlainUNetConfig, SkipDropoutConfig, build_plain_unet
from bench.methods.disdiff import DisDiff, DisDiffConfig
from bench.methods.trainer import Batch, run_optimizer
from bench.runner import run
from tests.conftest import FAST
from tests.test_dyga_sd import refit

SMALL_UNET = PlainUNetConfig(channels=[32, 32, 64, 64], layers_per_block=1, heads=4, norm_groups=8)


def small_disdiff(**settings) -> DisDiff:
    """A DisDiff with small parts whose frozen U-Net predicts something (not LDM's zeros)."""
    torch.manual_seed(0)
    config = DisDiffConfig(encoder_channels=16, **settings)
    config.ldm.model.unet = SMALL_UNET
    config.ldm.model.first_stage.autoencoder.channels = [16, 32, 32]
    config.ldm.model.first_stage.autoencoder.norm_groups = 8
    model = DisDiff(config, (64, 64, 3))
    with torch.no_grad():
        for parameter in model.ldm.unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.ldm.set_latent_scale(0.7)
    return model.train()


def randomise(module: torch.nn.Module) -> None:
    """Move every weight off its initialisation (the zero outputs included)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))


def test_frozen_pass_is_the_unets_forward():
    torch.manual_seed(0)
    unet = build_plain_unet(SMALL_UNET, 3, 16)
    randomise(unet)
    latents, steps = torch.randn(3, 3, 16, 16), torch.tensor([0, 400, 999])
    features = frozen_pass(unet.eval(), latents, steps)
    torch.testing.assert_close(features.prediction, unet(latents, steps).sample, rtol=0, atol=0)
    assert features.bottleneck.shape == (3, 64, 2, 2)
    assert len(features.skips) == 1 + 4 * (1 + 1) - 1  # stem, a ResBlock and a resampler per level


@pytest.mark.parametrize("resample", ["none", "up", "down"])
def test_film_block_without_a_condition_is_the_diffusers_block(resample):
    torch.manual_seed(0)
    block = ResnetBlock2D(
        in_channels=16,
        out_channels=32 if resample == "none" else 16,
        temb_channels=24,
        groups=8,
        time_embedding_norm="scale_shift",
        up=resample == "up",
        down=resample == "down",
    ).eval()
    randomise(block)
    holder = torch.nn.Module()
    film = FiLMResnetBlock(block, condition_dim=10, decoder=holder)
    x, temb = torch.randn(2, 16, 8, 8), torch.randn(2, 24)
    torch.nn.init.zeros_(film.film[1].weight)
    torch.nn.init.zeros_(film.film[1].bias)
    holder.condition = torch.randn(2, 10)
    torch.testing.assert_close(film(x, temb), block(x, temb), rtol=0, atol=0)
    # A condition changes the output through (1 + γ)·h + β after the time scale-shift.
    randomise(film.film)
    assert not torch.allclose(film(x, temb), block(x, temb))


def test_at_initialisation_the_prediction_is_the_frozen_models():
    model = small_disdiff()
    images = torch.rand(3, 3, 64, 64)
    latents = model.ldm.latents(images)
    steps = torch.tensor([1, 500, 999])
    features = frozen_pass(model.ldm.unet, latents, steps)
    fields = model.fields(features, model.units(images))
    assert fields.shape == (3, 6, 3, 16, 16) and torch.count_nonzero(fields) == 0
    assert features.prediction.abs().amax() > 0.01  # the frozen model predicts something
    torch.testing.assert_close(
        model.predict_epsilon(latents, steps, model.units(images)),
        model.ldm.unet(latents, steps).sample,
        rtol=0,
        atol=0,
    )


def test_mean_shift_and_guidance_coefficients_have_their_closed_forms():
    betas = np.linspace(0.0015**0.5, 0.0155**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    previous = np.concatenate([[1.0], alphas_cumprod[:-1]])
    expected = -np.sqrt(1 - betas) * (1 - previous) / np.sqrt(1 - alphas_cumprod)
    k = mean_shift_coefficients(torch.from_numpy(alphas_cumprod))
    np.testing.assert_allclose(k.numpy(), expected, rtol=1e-12)
    assert k[0] == 0  # no learning signal at t = 0
    # In the posterior mean, k_t·g in ε moves μ̃ by −k_t·β_t/(√α_t·√(1−ᾱ_t))·g = β̃_t·g.
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    shift = -k.numpy() * betas / (np.sqrt(1 - betas) * np.sqrt(1 - alphas_cumprod))
    np.testing.assert_allclose(shift, posterior_variance, rtol=1e-12)
    guidance = guidance_coefficients(torch.from_numpy(alphas_cumprod)).numpy()
    np.testing.assert_allclose(guidance, -np.sqrt(1 - alphas_cumprod), rtol=1e-12)
    model = small_disdiff()
    np.testing.assert_allclose(model.mean_shift.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_the_part_embedding_matrix_is_orthogonal():
    model = small_disdiff()
    p = model.unit_embeddings.orthogonal().double()
    torch.testing.assert_close(p.T @ p, torch.eye(128, dtype=torch.float64), rtol=0, atol=5e-5)
    # The authors' Padé routine gives exp(−(W − Wᵀ)): the inverse of expm(W − Wᵀ).
    w = model.unit_embeddings.part_latents.detach().double()
    identity = torch.eye(128, dtype=torch.float64)
    torch.testing.assert_close(p @ torch.linalg.matrix_exp(w - w.T), identity, rtol=0, atol=1e-5)


def test_disentangling_loss_reaches_decoder_and_encoder_not_the_frozen_stages():
    model = small_disdiff()
    randomise(model.decoder)  # g ≠ 0: at initialisation the loss and its gradient are 0
    _, disentangling = model.losses(torch.rand(4, 3, 64, 64), torch.Generator().manual_seed(1))
    assert disentangling.shape == (4,) and (disentangling > 0).all()
    disentangling.mean().backward()
    for part in (model.encoder, model.decoder, model.unit_embeddings):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), type(part).__name__
    assert all(p.grad is None for p in model.ldm.parameters())  # the U-Net and the VQ model
    assert all(not p.requires_grad for p in model.ldm.parameters())


def test_disentangling_weight_is_its_closed_form(monkeypatch):
    # w = mean((z0 − z0^c)²) = ((1 − ᾱ_t)/√ᾱ_t)²·mean(g_c²) (methods-pdae.md §4), times the two
    # per-image cross-entropies.
    model = small_disdiff(dis_weight=1.0)
    randomise(model.decoder)
    images = torch.rand(2, 3, 64, 64)
    latents = model.ldm.latents(images)
    steps = torch.tensor([100, 900])
    features = frozen_pass(model.ldm.unet, latents, steps)
    units = model.units(images)
    field = model.fields(features, units)[:, 0]
    cross_entropies = []
    cross_entropy = torch.nn.functional.cross_entropy

    def keep(logits, target, reduction):
        cross_entropies.append(cross_entropy(logits, target, reduction=reduction))
        return cross_entropies[-1]

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", keep)
    sampled = torch.zeros(2, dtype=torch.long)
    loss = model.disentangling_loss(latents, steps, features, field, units, sampled)
    alphas = model.ldm.alphas_cumprod(steps).flatten()
    weight = ((1 - alphas) / alphas.sqrt()) ** 2 * field.pow(2).flatten(1).mean(1)
    assert len(cross_entropies) == 2 and all(c.shape == (2,) for c in cross_entropies)
    torch.testing.assert_close(loss, weight * sum(cross_entropies), rtol=1e-4, atol=1e-8)


def test_frozen_unet_and_first_stage_are_unchanged_by_training():
    model = small_disdiff()
    cfg = resolve_config("disdiff", "shapes3d-procedural", "smoke")
    optimizer = run_optimizer([p for p in model.parameters() if p.requires_grad], cfg.train)
    frozen = {k: v.clone() for k, v in model.ldm.state_dict().items()}
    trained = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        loss, _ = model.training_loss(Batch(torch.rand(4, 3, 64, 64)), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(frozen[k], v) for k, v in model.ldm.state_dict().items())
    assert any(not torch.equal(trained[k], v) for k, v in model.decoder.state_dict().items())
    assert not model.ldm.training and not model.ldm.unet.training  # dropout off in the frozen U-Net


CHAIN = [
    *FAST,
    "eval.metrics=[]",
    "train.steps=2",
    "train.batch_size=4",
    "method.ldm.model.first_stage.steps=2",
    "method.ldm.model.first_stage.batch_size=4",
    "method.ldm.steps=2",
    "method.ldm.batch_size=4",
    "method.sample_steps=2",
    "method.picture_pairs=1",
    "method.traversal_values=2",
]


def test_a_second_seed_trains_nothing_but_disdiff(tmp_path):
    first = run("disdiff", "shapes3d-procedural", "smoke", CHAIN, out=tmp_path)
    second = run("disdiff", "shapes3d-procedural", "smoke", CHAIN, seed=1, out=tmp_path)
    for record, reused in ((first, False), (second, True)):
        events = {e["event"]: e for e in record.read_log() if "event" in e}
        assert events["first_stage"]["reused"] is reused and events["ldm"]["reused"] is reused
    artifacts = tmp_path / "artifacts"
    assert len(list((artifacts / "ldm" / "shapes3d-procedural").iterdir())) == 1
    assert len(list((artifacts / "vq_autoencoder" / "shapes3d-procedural").iterdir())) == 1
    # Both seeds froze the same LDM (the stage's raw weights, first stage included).
    (ldm_record,) = (artifacts / "ldm" / "shapes3d-procedural").iterdir()
    stage = load_file(ldm_record / "model.safetensors")
    for record in (first, second):
        weights = load_file(record.weights_file)
        assert all(torch.equal(weights[f"ldm.{k}"], v) for k, v in stage.items())
    assert {p.name for p in (first.path / "pictures").iterdir()} == {"swap.png", "traversal.png"}


def test_skip_dropout_on_disdiff_drops_only_the_decoders_skips():
    model = small_disdiff(skip_dropout=SkipDropoutConfig(p=0.5))
    randomise(model.decoder)
    images = torch.rand(2, 3, 64, 64)
    latents, steps = model.ldm.latents(images), torch.tensor([10, 600])
    features = frozen_pass(model.ldm.unet, latents, steps)
    torch.testing.assert_close(features.prediction, model.ldm.unet(latents, steps).sample)
    units = model.units(images)
    fields = []
    for seed in (0, 0, 1):
        model.skip_dropout.generator = torch.Generator().manual_seed(seed)
        fields.append(model.fields(features, units))
    assert model.skip_dropout.dropped > 0
    assert torch.equal(fields[0], fields[1]) and not torch.equal(fields[0], fields[2])
    model.eval()  # no dropout outside training
    assert torch.equal(model.fields(features, units), model.fields(features, units))
    assert model.deviations() and not small_disdiff().deviations()


def test_dyga_on_disdiff_anchors_the_units_the_decoder_and_the_metrics_see():
    model = small_disdiff(dyga=DyGAConfig(mixing="annealed", initial_components=4, iterations=5))
    images = torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(
        model.code(images[:8]), model.anchoring.normalise(model.units(images[:8]), (0, 2))
    )
    refit(model, images)
    model.anchoring.progress_fraction.fill_(0.5)  # half-way: λ = 0.5
    assert int(model.anchoring.anchor_refits) == 1
    model.eval()
    units = model.units(images[:8])
    normalised = model.anchoring.normalise(units, (0, 2))
    expected = 0.5 * normalised + 0.5 * model.anchoring.nearest_anchors(units)
    torch.testing.assert_close(model.code(images[:8]), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.encode(images[:8]), expected.flatten(1), rtol=0, atol=1e-5)
    assert len(model.deviations()) == 2  # DyGA on DisDiff, and the annealed mixing


def test_dyga_sd_on_disdiff_is_one_override_away(tmp_path):
    overrides = [
        *CHAIN,
        "train.steps=4",
        "method.dyga.enabled=true",
        "method.dyga.refit_every=2",
        "method.dyga.max_fit_images=64",
        "method.skip_dropout.p=0.2",
    ]
    record = run("disdiff", "shapes3d-procedural", "smoke", overrides, out=tmp_path)
    assert record.status()["training"]["dyga"]["refits"] == 2
    assert any("dyga_lambda" in e for e in record.read_log())
    assert len(record.identity()["deviations"]) == 2


def test_generation_for_fid_is_seeded_ddim_guided_by_the_images_units():
    model = small_disdiff().eval()
    randomise(model.decoder)  # its zero-initialised outputs would give no field
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    first = model.generate(images, seed=3, steps=2)
    assert first.shape == (2, 3, 64, 64) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, model.generate(images, seed=3, steps=2))
    assert not torch.equal(first, model.generate(images, seed=4, steps=2))
    with torch.no_grad():
        noise, units = model.ldm.latent_noise(2, "cpu", 3), model.code(images)
        assert torch.equal(first, model.sample(units, noise, 2))
        assert not torch.equal(first, model.sample(units + 1.0, noise, 2))
