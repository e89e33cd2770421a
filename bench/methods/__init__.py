"""Registered methods. Entries are lazy: listing them imports no torch."""

from bench.registry import Registry

METHODS = Registry("method", "bench.methods")
METHODS.register(
    "beta_vae",
    "bench.methods.beta_vae:BetaVAE",
    "β-VAE (Higgins et al. 2017) as disentanglement_lib trains it; representation = encoder mean",
)
for _name, _path, _description in (
    ("annealed_vae", "annealed_vae:AnnealedVAE", "AnnealedVAE (Burgess et al. 2018): γ·|KL − C|"),
    ("factor_vae", "factor_vae:FactorVAE", "FactorVAE (Kim & Mnih 2018): KL + γ·TC by a critic"),
    ("dip_vae_i", "dip_vae:DIPVAE", "DIP-VAE-I (Kumar et al. 2018): Cov[μ(x)] → identity"),
    ("dip_vae_ii", "dip_vae:DIPVAE", "DIP-VAE-II (Kumar et al. 2018): Cov[q(z)] → identity"),
    ("beta_tc_vae", "beta_tc_vae:BetaTCVAE", "β-TCVAE (Chen et al. 2018): KL + (β − 1)·TC"),
):
    METHODS.register(
        _name, f"bench.methods.{_path}", f"{_description}, as disentanglement_lib trains it"
    )
METHODS.register(
    "vq_autoencoder",
    "bench.methods.diffusion.vq:VQAutoencoder",
    "VQ autoencoder: the shared first stage of the latent-diffusion methods",
)
METHODS.register(
    "ldm",
    "bench.methods.diffusion.ldm:LatentDiffusion",
    "unconditional latent diffusion model: the shared stage DisDiff freezes and builds on",
)
METHODS.register(
    "dyga_sd",
    "bench.methods.dyga_sd:DyGASD",
    "DyGA+SD (Jun et al. 2025): token-conditioned LDM, Dynamic Gaussian Anchoring, Skip Dropout",
)
METHODS.register(
    "dyga", "bench.methods.dyga_sd:DyGASD", "DyGA+SD's ablation: Gaussian anchoring only"
)
METHODS.register("sd", "bench.methods.dyga_sd:DyGASD", "DyGA+SD's ablation: Skip Dropout only")
METHODS.register(
    "dyga_sd_base",
    "bench.methods.dyga_sd:DyGASD",
    "DyGA+SD's ablation base: its code with anchoring and Skip Dropout off",
)
METHODS.register(
    "dyga_sd_annealed",
    "bench.methods.dyga_sd:DyGASD",
    "DyGA+SD with the annealed anchoring of the authors' earlier code (a labelled deviation)",
)
METHODS.register(
    "encdiff",
    "bench.methods.encdiff:EncDiff",
    "EncDiff (Yang et al. 2024) as its official code trains it; representation = raw scalars",
)
METHODS.register(
    "disdiff",
    "bench.methods.disdiff:DisDiff",
    "DisDiff (Yang et al. 2023): gradient-field decoder per latent unit on a frozen LDM",
)
METHODS.register(
    "ddpm_pixel",
    "bench.methods.diffusion.ddpm:PixelDDPM",
    "pixel-space DDPM (PDAE's U-Net template): the shared stage DiTi freezes and builds on",
)
METHODS.register(
    "diti",
    "bench.methods.diti:DiTi",
    "DiTi (Yue et al. 2024): time-step-specific feature subsets on a frozen pixel DDPM",
)

METHODS.register(
    "dbrl",
    "bench.methods.dbrl:DBRL",
    "Diffusion-Based Representation Learning (Mittal et al. 2023): VE score model + E(x, t)",
)
METHODS.register(
    "disunknown",
    "bench.methods.disunknown:DisUnknown",
    "DisUnknown (Xiang et al. 2021): weakly supervised — labelled factors, the rest distilled",
)

__all__ = ["METHODS"]
