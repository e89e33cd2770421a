"""Building blocks the diffusion methods share: the U-Nets (with Skip Dropout), noise
schedules, the latent-diffusion and token-conditioned bases, the PDAE gradient-field
decoder, DyGA's anchoring and batched Gaussian mixtures, the VE SDE and NCSN++, LPIPS and the
DisDiff encoder. The registered methods built from them (the stages ``vq_autoencoder``,
``ldm`` and ``ddpm_pixel`` among them) are the modules one folder up."""
