"""The VAE family against disentanglement_lib's loss formulas (restated in numpy from
``methods/unsupervised/vae.py``), FactorVAE's two optimizers, resume, pictures and the
study's sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

import bench.datasets
from bench.build import build_method
from bench.config import resolve_config
from bench.methods import METHODS
from bench.methods.annealed_vae import capacity
from bench.methods.factor_vae import discriminator_terms
from bench.methods.trainer import RUN, Batch, backward
from bench.methods.vae import VAE
from bench.runner import run
from bench.store import RunRecord
from bench.sweep import load_sweep
from bench.train import train

VAES = ["beta_vae", "annealed_vae", "factor_vae", "dip_vae_i", "dip_vae_ii", "beta_tc_vae"]

rng = np.random.default_rng(0)
Z, MEAN = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
LOG_VAR = rng.normal(scale=0.5, size=(7, 4))


def t(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.float64)


# dlib's formulas, in numpy.
def dlib_kl(mean, log_var):
    return np.mean(0.5 * np.sum(mean**2 + np.exp(log_var) - log_var - 1, axis=1))


def dlib_covariance(mean):
    return np.mean(mean[:, :, None] * mean[:, None, :], axis=0) - np.outer(
        mean.mean(0), mean.mean(0)
    )


def dlib_dip(matrix, lambda_od, lambda_d):
    diagonal = np.diag(matrix)
    off = matrix - np.diag(diagonal)
    return lambda_od * np.sum(off**2) + lambda_d * np.sum((diagonal - 1) ** 2)


def dlib_total_correlation(z, mean, log_var):
    log_q = -0.5 * (
        (z[:, None, :] - mean[None]) ** 2 * np.exp(-log_var[None])
        + log_var[None]
        + np.log(2 * np.pi)
    )
    log_q_product = np.sum(logsumexp(log_q, axis=1), axis=1)
    log_q_joint = logsumexp(np.sum(log_q, axis=2), axis=1)
    return np.mean(log_q_joint - log_q_product)


def regulariser_of(name: str, **settings) -> torch.Tensor:
    cfg = resolve_config(
        name, "dsprites-procedural", None, [f"method.{k}={v}" for k, v in settings.items()], 0
    )
    model = build_method(cfg, bench.datasets.load("dsprites-procedural")).double()
    kl = t(np.array(dlib_kl(MEAN, LOG_VAR)))
    return model, model.regularizer(kl, t(MEAN), t(LOG_VAR), t(Z))[0]


def test_each_regulariser_equals_dlibs_formula():
    kl = dlib_kl(MEAN, LOG_VAR)
    _, beta = regulariser_of("beta_vae", beta=4.0)
    assert beta.item() == pytest.approx(4.0 * kl, abs=1e-6)

    _, tc_vae = regulariser_of("beta_tc_vae", beta=6.0)
    expected = kl + 5.0 * dlib_total_correlation(Z, MEAN, LOG_VAR)
    assert tc_vae.item() == pytest.approx(expected, abs=1e-6)

    _, dip_i = regulariser_of("dip_vae_i", lambda_od=2.0)
    expected = kl + dlib_dip(dlib_covariance(MEAN), 2.0, 20.0)
    assert dip_i.item() == pytest.approx(expected, abs=1e-6)

    _, dip_ii = regulariser_of("dip_vae_ii", lambda_od=5.0)
    cov_z = np.mean(np.stack([np.diag(np.exp(v)) for v in LOG_VAR]), axis=0) + dlib_covariance(MEAN)
    assert dip_ii.item() == pytest.approx(kl + dlib_dip(cov_z, 5.0, 5.0), abs=1e-6)

    model, annealed = regulariser_of("annealed_vae", gamma=1000.0, c_max=25.0)
    assert annealed.item() == pytest.approx(1000.0 * abs(kl - 0.0), abs=1e-6)  # step 0: C = 0
    model.steps_done.fill_(40000)
    again = model.regularizer(t(np.array(kl)), t(MEAN), t(LOG_VAR), t(Z))[0]
    assert again.item() == pytest.approx(1000.0 * abs(kl - 10.0), rel=1e-6)


def test_factor_vae_terms_equal_dlibs():
    logits_real, logits_shuffled = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))
    tc, loss = discriminator_terms(t(logits_real), t(logits_shuffled))
    p_real = np.clip(softmax(logits_real, axis=1), 1e-6, 1 - 1e-6)
    p_shuffled = np.clip(softmax(logits_shuffled, axis=1), 1e-6, 1 - 1e-6)
    expected_loss = -(0.5 * np.mean(np.log(p_real[:, 0])) + 0.5 * np.mean(np.log(p_shuffled[:, 1])))
    assert tc.item() == pytest.approx(np.mean(logits_real[:, 0] - logits_real[:, 1]), abs=1e-6)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-6)


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.0), (50000, 12.5), (100000, 25.0), (250000, 25.0)]
)
def test_annealed_capacity_grows_linearly_to_c_max_then_stays(step, expected):
    assert capacity(25.0, step, 100000).item() == pytest.approx(expected)


def test_annealed_vae_reads_the_steps_done_and_resumes_with_them(tmp_path):
    cfg = resolve_config(
        "annealed_vae",
        "dsprites-procedural",
        "ci",
        ["train.steps=6", "train.log_every=1", "train.batch_size=8"],
        0,
    )
    data = bench.datasets.load("dsprites-procedural")
    model = build_method(cfg, data)
    record = RunRecord(tmp_path)
    train(model, data, cfg, record)
    capacities = [entry["capacity"] for entry in record.read_log()]
    # Step k's loss uses the k − 1 steps done before it: C = 25 · (k − 1) / 50 (ci threshold).
    np.testing.assert_allclose(capacities, [25.0 * k / 50 for k in range(6)], rtol=1e-6)
    assert int(model.steps_done) == 6


def test_factor_vae_routes_each_loss_to_its_own_optimizer_only():
    cfg = resolve_config("factor_vae", "dsprites-procedural", "ci", [], 0)
    model = build_method(cfg, bench.datasets.load("dsprites-procedural"))
    images = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    losses, _ = model.training_loss(Batch(images), torch.Generator().manual_seed(1))
    trainer = model.trainer(cfg.train, torch.device("cpu"))
    critic, vae = trainer.parameters["discriminator"], trainer.parameters[RUN]
    assert critic == list(model.discriminator.parameters())
    assert {id(p) for p in critic}.isdisjoint({id(p) for p in vae})
    parameters = {RUN: vae, "discriminator": critic}
    by_hand = {
        name: torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True)
        for name, params in parameters.items()
    }
    # Either loss reaches the other's parameters (so a summed backward would mix them) ...
    leak = torch.autograd.grad(losses["discriminator"], vae[:1], retain_graph=True)[0]
    assert leak.abs().sum() > 0
    assert torch.autograd.grad(losses[RUN], critic[:1], retain_graph=True)[0].abs().sum() > 0
    # ... and the loop gives each only its own.
    backward(losses, parameters)
    for name, params in parameters.items():
        for param, grad in zip(params, by_hand[name], strict=True):
            expected = torch.zeros_like(param) if grad is None else grad
            torch.testing.assert_close(param.grad, expected, rtol=0, atol=0)


class StopAt(Exception):
    pass


def test_factor_vae_resumes_bit_identically_with_both_optimizers(tmp_path):
    overrides = ["train.steps=8", "train.checkpoint_every=4", "train.batch_size=8"]
    cfg = resolve_config("factor_vae", "dsprites-procedural", "ci", overrides, 0)
    data = bench.datasets.load("dsprites-procedural")
    whole = build_method(cfg, data)
    train(whole, data, cfg, RunRecord(tmp_path / "whole"))

    def stop(step):
        if step == 5:  # after the checkpoint of step 4
            raise StopAt

    split = RunRecord(tmp_path / "split")
    with pytest.raises(StopAt):
        train(build_method(cfg, data), data, cfg, split, on_step=stop)
    resumed = build_method(cfg, data)
    train(resumed, data, cfg, split)
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert any("discriminator" in name for name in whole.state_dict())


@pytest.mark.parametrize("name", VAES)
def test_every_vae_writes_dlibs_pictures(name, tmp_path):
    overrides = ["train.steps=2", "eval.metrics=[]", "train.batch_size=8"]
    record = run(name, "dsprites-procedural", "ci", overrides, out=tmp_path)
    names = {p.name for p in (record.path / "pictures").iterdir()}
    assert names == {"reconstructions.png", "samples.png", "traversals.png"}
    assert issubclass(METHODS.get(name), VAE)


def test_the_study_sweep_lists_six_models_by_six_values():
    sweep = load_sweep_quickly()
    runs = sweep.runs()
    assert len(runs) == 36
    grid = {(r.method, tuple(r.overrides)) for r in runs}
    assert ("factor_vae", ("method.gamma=100.0",)) in grid
    assert ("dip_vae_ii", ("method.lambda_od=50.0",)) in grid
    assert ("annealed_vae", ("method.c_max=5.0",)) in grid
    assert not any(
        r.method == "factor_vae" and "method.beta" in " ".join(r.overrides) for r in runs
    )


def load_sweep_quickly():
    """The study's sweep file with one seed and one dataset (7,200 configs resolve slowly)."""
    import tempfile
    from pathlib import Path

    import yaml

    study = Path(__file__).parents[1] / "sweeps" / "dlib_unsupervised_study.yaml"
    data = yaml.safe_load(study.read_text())
    assert data["seeds"] == 50 and data["datasets"] == [
        "dsprites",
        "smallnorb",
        "cars3d",
        "shapes3d",
    ]
    data.update(seeds=1, datasets=["dsprites"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_sweep(path)
