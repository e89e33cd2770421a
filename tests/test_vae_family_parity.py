"""The VAE family against disentanglement_lib 1.5's own model functions, run on NumPy
(``benchmarks/parity_cases/vae_family.py``): the sampling, reconstruction loss, KL, each
regulariser, loss and ELBO, and FactorVAE's TC and discriminator terms, on the same draws.
dlib is installed in CI (``--no-deps``), so this parity case runs with every test run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from parity_cases import VAE_FAMILY, case


@pytest.mark.parametrize("method", VAE_FAMILY)
def test_the_vae_family_computes_dlibs_losses(method):
    comparison = case(method).compare([])
    assert {"reconstruction loss", "KL", "regulariser", "loss"} <= set(comparison.quantities)
    for name, (ours, theirs) in comparison.quantities.items():
        ours, theirs = ours.double(), theirs.double()
        scale = max(1.0, float(theirs.abs().max()))
        assert float((ours - theirs).abs().max()) <= 1e-6 * scale, name
    assert "tensorflow" not in sys.modules  # the stand-ins do not outlive the import


def test_a_kl_summed_over_the_batch_instead_of_averaged_is_caught(monkeypatch):
    import bench.methods.vae as vae

    def summed(mean, log_var):
        return (0.5 * (mean.square() + log_var.exp() - log_var - 1.0)).sum()

    monkeypatch.setattr(vae, "gaussian_kl", summed)
    ours, theirs = case("beta_vae").compare([]).quantities["KL"]
    assert float((ours.double() - theirs.double()).abs().max()) > 1e-3
