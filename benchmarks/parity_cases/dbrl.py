"""DBRL against its authors' score_sde code (korabs-x/representation_score_based,
score_sde_pytorch: configs/ve/cifar10_ncsnpp_small_continuous.py with the README's
representation run: ``include_encoder``, ``probabilistic_encoder``, ``lambda_z=1e-5``, no mixup,
no reconstruction loss). The image size, levels and dropout are our preset's (64×64: a fifth
level); their config is CIFAR-10's 32×32.

Compared: the VE schedule σ(t), the encoder's (μ, log σ²) of E(x_0, t), the score s(x_t, σ, z)
of their ``NCSNpp`` (its forward pass encodes x_0 itself and samples z; the ε of that draw is
ours, replayed), and the loss of ``get_sde_loss_fn`` (σ²-weighted score matching, summed over
pixels, with λ_z·KL) on the same t, noise and ε, on z-scored inputs. The forward passes are
compared in evaluation mode, the loss in training mode (the encoder's batch norm on the
batch's statistics), with dropout 0 in both networks: its masks come from different
generators in the two codes. (Their loss cannot run in evaluation mode with the
probabilistic encoder: it detaches μ and log σ², views of one tensor, in place.)"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.methods.trainer import Batch
from parity_cases.authors import DBRL, checkouts, importable
from parity_cases.common import (
    Comparison,
    inputs,
    layout,
    load_into,
    our_method,
    replayed,
    replaying,
)

NEEDS = (DBRL,)
CODE = "score_sde_pytorch"
CONFIG = f"{CODE}/configs/ve/cifar10_ncsnpp_small_continuous.py"
# The README's representation run (its command-line overrides).
README_RUN = {
    "include_encoder": True,
    "probabilistic_encoder": True,
    "lambda_z": 1e-5,
    "apply_mixup": False,
    "lambda_reconstr": 0.0,
}
# Channel statistics for the z-scoring (any fixed values: the same scale reaches both codes).
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def their_config(ours):
    """Their config with the README's overrides and our preset's image size and network."""
    from configs.ve.cifar10_ncsnpp_small_continuous import get_config

    config = get_config()
    config.training.update(README_RUN)
    net = ours.config.score_net
    config.data.image_size = ours.image_shape[0]
    settings = {
        "nf": net.nf,
        "ch_mult": tuple(net.ch_mult),
        "num_res_blocks": net.num_res_blocks,
        "attn_resolutions": tuple(net.attn_resolutions),
        "dropout": net.dropout,
        "fourier_scale": net.fourier_scale,
        "sigma_min": ours.config.sigma_min,
        "sigma_max": ours.config.sigma_max,
    }
    # ml_collections keeps each field's type: their 16 and 50 are ints, ours floats.
    config.model.update({k: type(config.model[k])(v) for k, v in settings.items()})
    return config


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    comparison = Comparison(found, configs={DBRL: CONFIG})
    comparison.notes.append(
        "their config with the README's representation overrides and our preset's 64×64 "
        "network (a fifth level); the authors' runs are on 32×32 CIFAR-10"
    )
    overrides = [
        f"method.channel_mean={MEAN}",
        f"method.channel_std={STD}",
        "method.score_net.dropout=0.0",
    ]
    ours = our_method("dbrl", overrides=overrides).eval()
    with importable(found[DBRL].path / CODE):
        import losses
        import sde_lib
        from models.ncsnpp import NCSNpp

        config = their_config(ours)
        theirs = NCSNpp(config).eval()
        entry = layout("dbrl", "dbrl-ncsnpp")
        state = load_into(theirs, ours, entry)
        comparison.manifests["dbrl-ncsnpp"] = (DBRL, f"NCSNpp({CONFIG}, README run)", state)
        comparison.notes.append(f"their keys not used: {entry.unused_because}")
        sde = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
        loss_fn = losses.get_sde_loss_fn(
            sde, train=True, reduce_mean=config.training.reduce_mean, continuous=True,
            likelihood_weighting=config.training.likelihood_weighting, config=config,
        )  # fmt: skip
        compare_dbrl(comparison, ours, theirs, sde, loss_fn)
    return comparison


def compare_dbrl(comparison: Comparison, ours, theirs, sde, loss_fn) -> None:
    images = inputs((4, 3, 64, 64), seed=1).sigmoid()
    x0 = ours.scaled(images)
    mean, std = (torch.tensor(values)[:, None, None] for values in (MEAN, STD))
    comparison.add("z-scored inputs", x0, (images - mean) / std)
    generator, replay = replayed(2)
    uniform = torch.rand(len(images), generator=replay)
    noise = torch.randn(images.shape, generator=replay)
    eps = torch.randn((len(images), ours.latent_dim), generator=replay)
    t = uniform * (1 - ours.config.t_min) + ours.config.t_min
    sigma = ours.sde.sigma(t)
    with torch.no_grad():
        comparison.add("σ(t)", sigma, sde.marginal_prob(torch.zeros_like(x0), t)[1])
        mean, logvar = ours.encoder(x0, sigma)
        their_mean, their_logvar = theirs.encoder(x=x0, t=t)[2].chunk(2, dim=1)
        comparison.add("encoder μ", mean, their_mean)
        comparison.add("encoder log σ²", logvar, their_logvar)
        z = mean + eps * (0.5 * logvar).exp()
        noisy = x0 + sigma[:, None, None, None] * noise
        with replaying([("randn_like", eps)]):
            score = theirs(noisy, sigma, x0=x0, t=t)["output"]
        comparison.add("score s(x_t, σ, z)", ours.score_net(noisy, sigma, z), score)
        loss, _ = ours.train().training_loss(Batch(images), generator)
        with replaying([("rand", uniform), ("randn_like", noise), ("randn_like", eps)]):
            their_loss = loss_fn(theirs, x0)  # sets their model to training mode
        comparison.add("loss (score matching + λ_z·KL)", loss, their_loss)
