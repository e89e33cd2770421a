"""Registered methods. Entries are lazy: listing them imports no torch."""

from bench.registry import Registry

METHODS = Registry("method", "bench.methods")
METHODS.register(
    "beta_vae",
    "bench.methods.beta_vae:BetaVAE",
    "β-VAE (Higgins et al. 2017) as disentanglement_lib trains it; representation = encoder mean",
)

__all__ = ["METHODS"]
