"""What the diffusion methods share: the VQ first stage, the conditional U-Net with Skip
Dropout, the token-conditioned latent diffusion base, batched Gaussian mixtures, LPIPS."""
