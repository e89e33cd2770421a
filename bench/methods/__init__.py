"""Registered methods, one row each: (name, "module:class" under bench.methods, description).
Entries are lazy: listing them imports no torch. Another package adds its own through the
``bench.methods`` entry-point group (README, "Adding a method, metric or dataset")."""

from bench.registry import Registry

DLIB = ", as disentanglement_lib trains it"
METHODS = Registry("method", "bench.methods")
for _name, _target, _description in [
    (
        "beta_vae",
        "beta_vae:BetaVAE",
        "β-VAE (Higgins et al. 2017) as disentanglement_lib trains it; representation = encoder "
        "mean",
    ),
    (
        "annealed_vae",
        "annealed_vae:AnnealedVAE",
        f"AnnealedVAE (Burgess et al. 2018): γ·|KL − C|{DLIB}",
    ),
    (
        "factor_vae",
        "factor_vae:FactorVAE",
        f"FactorVAE (Kim & Mnih 2018): KL + γ·TC by a critic{DLIB}",
    ),
    ("dip_vae_i", "dip_vae:DIPVAE", f"DIP-VAE-I (Kumar et al. 2018): Cov[μ(x)] → identity{DLIB}"),
    ("dip_vae_ii", "dip_vae:DIPVAE", f"DIP-VAE-II (Kumar et al. 2018): Cov[q(z)] → identity{DLIB}"),
    ("beta_tc_vae", "beta_tc_vae:BetaTCVAE", f"β-TCVAE (Chen et al. 2018): KL + (β − 1)·TC{DLIB}"),
    (
        "vq_autoencoder",
        "vq_autoencoder:VQAutoencoder",
        "VQ autoencoder: the shared first stage of the latent-diffusion methods",
    ),
    (
        "ldm",
        "ldm:LatentDiffusion",
        "unconditional latent diffusion model: the shared stage DisDiff freezes and builds on",
    ),
    (
        "dyga_sd",
        "dyga_sd:DyGASD",
        "DyGA+SD (Jun et al. 2025): token-conditioned LDM, Dynamic Gaussian Anchoring, Skip "
        "Dropout",
    ),
    ("dyga", "dyga_sd:DyGASD", "DyGA+SD's ablation: Gaussian anchoring only"),
    ("sd", "dyga_sd:DyGASD", "DyGA+SD's ablation: Skip Dropout only"),
    (
        "dyga_sd_base",
        "dyga_sd:DyGASD",
        "DyGA+SD's ablation base: its code with anchoring and Skip Dropout off",
    ),
    (
        "dyga_sd_annealed",
        "dyga_sd:DyGASD",
        "DyGA+SD with the annealed anchoring of the authors' earlier code (a labelled deviation)",
    ),
    (
        "encdiff",
        "encdiff:EncDiff",
        "EncDiff (Yang et al. 2024) as its official code trains it; representation = raw scalars",
    ),
    (
        "disdiff",
        "disdiff:DisDiff",
        "DisDiff (Yang et al. 2023): gradient-field decoder per latent unit on a frozen LDM",
    ),
    (
        "ddpm_pixel",
        "ddpm_pixel:PixelDDPM",
        "pixel-space DDPM (PDAE's U-Net template): the shared stage DiTi freezes and builds on",
    ),
    (
        "diti",
        "diti:DiTi",
        "DiTi (Yue et al. 2024): time-step-specific feature subsets on a frozen pixel DDPM",
    ),
    (
        "dbrl",
        "dbrl:DBRL",
        "Diffusion-Based Representation Learning (Mittal et al. 2023): VE score model + E(x, t)",
    ),
    (
        "disunknown",
        "disunknown:DisUnknown",
        "DisUnknown (Xiang et al. 2021): weakly supervised — labelled factors, the rest distilled",
    ),
]:
    METHODS.register(_name, f"bench.methods.{_target}", _description)

__all__ = ["METHODS"]
