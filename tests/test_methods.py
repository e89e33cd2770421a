"""Conformance every registered method must pass, and β-VAE against dlib's architecture."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import bench.datasets
from bench.build import build_method
from bench.config import resolve_config
from bench.methods import METHODS
from bench.methods.beta_vae import BetaVAE, BetaVAEConfig
from bench.methods.trainer import Batch
from bench.runner import load_run, run
from tests.conftest import FAST

CONFORMANCE = [*FAST, "eval.metrics=[]"]


def conformance_overrides(name: str) -> list[str]:
    """FAST, plus what keeps a method's own extra work (stages, refits, pictures) small."""
    fields = {f.name for f in dataclasses.fields(METHODS.get(name).config_class)}
    extra = []
    if "first_stage" in fields:
        extra += ["method.first_stage.steps=3", "method.first_stage.batch_size=4"]
    if "ldm" in fields:  # the LDM stage and the first stage below it
        extra += [
            "method.ldm.model.first_stage.steps=3",
            "method.ldm.model.first_stage.batch_size=4",
        ]
        extra += ["method.ldm.steps=3", "method.ldm.batch_size=4"]
    if "ddpm" in fields:  # the pixel DDPM stage
        extra += ["method.ddpm.steps=3", "method.ddpm.batch_size=4"]
    if fields & {"first_stage", "ldm", "ddpm"}:
        extra += ["train.batch_size=4"]
    if "class_frequencies" in fields:  # DisUnknown: its four stages within the six steps
        extra += ["method.steps={stage1: 2, classifier: 1, stage2: 2, lenc: 1}"]
    pictures = {"sample_steps": 2, "picture_pairs": 1, "traversal_values": 2, "picture_samples": 2}
    pictures["picture_images"] = 2
    extra += [f"method.{key}={value}" for key, value in pictures.items() if key in fields]
    if "dyga" in fields:  # a refit at step 3, so that the anchors enter the numbers
        extra += ["method.dyga.refit_every=3", "method.dyga.max_fit_images=64"]
    return [*CONFORMANCE, *extra]


@pytest.mark.parametrize("name", METHODS.names())
def test_method_conformance(name, tmp_path):
    # A few CPU steps through the real runner, twice with the same seed.
    overrides = conformance_overrides(name)
    first = run(name, "dsprites-procedural", "smoke", overrides, out=tmp_path / "a")
    second = run(name, "dsprites-procedural", "smoke", overrides, out=tmp_path / "b")
    assert first.is_complete() and second.is_complete()
    weights, again = load_file(first.weights_file), load_file(second.weights_file)
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[k], again[k]) for k in weights), "same seed, other numbers"
    other_seed = run(name, "dsprites-procedural", "smoke", overrides, seed=1, out=tmp_path / "c")
    assert any(not torch.equal(weights[k], load_file(other_seed.weights_file)[k]) for k in weights)

    # Every picture says what it shows; all but a page of samples label its rows and columns.
    for picture in (first.path / "pictures").glob("*.png"):
        text = Image.open(picture).text
        assert text["Title"], picture.name
        if picture.name != "samples.png":
            assert json.loads(text["Rows"]) and json.loads(text["Columns"]), picture.name

    # Loading the record gives back exactly the trained weights, and encode has the declared size.
    loaded = load_run(first.path)
    state = loaded.method.state_dict()
    assert state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in state)
    data = bench.datasets.load("dsprites-procedural")
    images = torch.from_numpy(data.images(np.arange(5))).permute(0, 3, 1, 2).float() / 255
    codes = loaded.method.encode(images)
    assert codes.shape == (5, loaded.method.representation_dim) and not codes.requires_grad
    torch.testing.assert_close(load_run(second.path).method.encode(images), codes, rtol=0, atol=0)

    # Every method generates images for FID, shaped as its input, in [0, 1], fixed by the seed.
    generated = loaded.method.generate(images[:2], seed=3, steps=2)
    assert generated.shape == images[:2].shape
    assert generated.min() >= 0 and generated.max() <= 1
    again = loaded.method.generate(images[:2], seed=3, steps=2)
    torch.testing.assert_close(again, generated, rtol=0, atol=0)


def test_beta_vae_has_dlib_architecture():
    model = BetaVAE(BetaVAEConfig(), (64, 64, 1))
    kernels = [m.kernel_size for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert kernels == [(4, 4), (4, 4), (2, 2), (2, 2)]
    # Parameter count of dlib's conv_encoder + deconv_decoder for 64×64×1 and 10 latents.
    encoder = (16 * 1 * 32 + 32) + (16 * 32 * 32 + 32) + (4 * 32 * 64 + 64) + (4 * 64 * 64 + 64)
    encoder += (1024 * 256 + 256) + 2 * (256 * 10 + 10)
    decoder = (10 * 256 + 256) + (256 * 1024 + 1024)
    decoder += (16 * 64 * 64 + 64) + (16 * 64 * 32 + 32) + (16 * 32 * 32 + 32) + (16 * 32 * 1 + 1)
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder
    out = model.decoder(torch.zeros(2, 10))
    assert out.shape == (2, 1, 64, 64)
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if hasattr(m, "bias"))


def test_beta_vae_loss_is_bernoulli_nll_plus_beta_kl():
    torch.manual_seed(0)
    model = BetaVAE(BetaVAEConfig(beta=4.0), (64, 64, 3))
    images = torch.rand(3, 3, 64, 64)
    loss, logs = model.training_loss(Batch(images), torch.Generator().manual_seed(1))
    # Recompute from the distributions themselves, with the same noise.
    hidden = model.encoder(images)
    mean, log_var = model.to_mean(hidden), model.to_log_var(hidden)
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    kl = torch.distributions.kl_divergence(posterior, prior).sum(1).mean()
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    logits = model.decoder(mean + torch.exp(0.5 * log_var) * noise)
    nll = -(images * torch.nn.functional.logsigmoid(logits))
    nll = nll - (1 - images) * torch.nn.functional.logsigmoid(-logits)
    reconstruction = nll.sum((1, 2, 3)).mean()
    torch.testing.assert_close(logs["kl"], kl)
    torch.testing.assert_close(logs["reconstruction"], reconstruction)
    torch.testing.assert_close(loss, reconstruction + 4.0 * kl)


def test_weights_depend_only_on_the_seed():
    cfg = resolve_config("beta_vae", "dsprites-procedural", seed=7)
    data = bench.datasets.load("dsprites-procedural")
    torch.manual_seed(123)  # global state beforehand must not matter
    a = build_method(cfg, data).state_dict()
    b = build_method(cfg, data).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
