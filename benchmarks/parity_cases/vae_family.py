"""The VAE family against disentanglement_lib 1.5's own model functions
(``methods/unsupervised/vae.py``: ``BetaVAE``, ``AnnealedVAE``, ``FactorVAE``, ``DIPVAE`` i and
ii, ``BetaTCVAE``, with ``losses.bernoulli_loss``), run without TensorFlow: its TF1 calls go to
a NumPy stand-in (``tf_numpy``, float64), and its gin-bound architecture (``encoder.encoder_fn``,
``decoder.decoder_fn``, ``discriminator.discriminator_fn``) is our networks, bound through its
own gin configurables. What is compared is therefore everything of dlib's that is not a
TensorFlow layer: the sampling of z, the reconstruction loss, the KL, each regulariser, the
loss and ELBO it returns in evaluation mode, and FactorVAE's TC term and discriminator loss
(the ops it names), on our recorded draws (the sampling noise, FactorVAE's shuffles).

dlib's layers themselves need TensorFlow; ``tests/test_methods.py`` checks our kernels and
parameter count against its architecture's."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.methods.trainer import Batch
from bench.metrics.helpers.dlib_reference import install_gin_shims
from parity_cases import tf_numpy
from parity_cases.authors import Checkout, StandIn
from parity_cases.common import Comparison, inputs, our_method, recording

NEEDS: tuple[str, ...] = ()  # the disentanglement_lib package (pip install --no-deps)
DLIB_REPO = "google-research/disentanglement_lib"
BATCH = 16
STEP = 5000  # AnnealedVAE's global step, inside its capacity ramp
# Our method → (dlib's class, its settings from ours, our config fields).
DLIB = {
    "beta_vae": ("BetaVAE", ("beta",)),
    "annealed_vae": ("AnnealedVAE", ("gamma", "c_max", "iteration_threshold")),
    "factor_vae": ("FactorVAE", ("gamma",)),
    "dip_vae_i": ("DIPVAE", ("lambda_od", "lambda_d_factor", "dip_type")),
    "dip_vae_ii": ("DIPVAE", ("lambda_od", "lambda_d_factor", "dip_type")),
    "beta_tc_vae": ("BetaTCVAE", ("beta",)),
}


def dlib_vae() -> types.ModuleType:
    """disentanglement_lib's ``methods.unsupervised.vae``, imported once per process (gin
    refuses a second registration of its configurables) with TensorFlow 1 served by
    ``tf_numpy`` and the gin shims of ``bench.metrics.helpers.dlib_reference``; the stand-ins leave
    ``sys.modules`` afterwards, dlib's modules keep them as their ``tf``."""
    name = "disentanglement_lib.methods.unsupervised.vae"
    if name in sys.modules:
        return sys.modules[name]
    install_gin_shims()
    v1 = tf_numpy
    fake = {
        "tensorflow": types.ModuleType("tensorflow"),
        "tensorflow.compat": types.ModuleType("tensorflow.compat"),
        "tensorflow.compat.v1": v1,
        "tensorflow.contrib": types.ModuleType("tensorflow.contrib"),
        "tensorflow_probability": StandIn("tensorflow_probability"),
        "tensorflow_hub": StandIn("tensorflow_hub"),
    }
    fake["tensorflow"].compat = fake["tensorflow.compat"]
    fake["tensorflow.compat"].v1 = v1
    fake["tensorflow.contrib"].tpu = types.SimpleNamespace(TPUEstimatorSpec=v1.estimator_spec)
    saved = {key: sys.modules.get(key) for key in fake}
    sys.modules.update(fake)
    try:
        return importlib.import_module(name)
    finally:
        for key, module in saved.items():
            if module is None:
                del sys.modules[key]
            else:
                sys.modules[key] = module


def compare(paths: list[Path], method: str) -> Comparison:
    import disentanglement_lib

    package = Path(disentanglement_lib.__file__).parent
    version = importlib.metadata.version("disentanglement-lib")
    comparison = Comparison({DLIB_REPO: Checkout(DLIB_REPO, package, f"PyPI {version}")})
    comparison.notes.append(
        "against the disentanglement_lib 1.5 package (PyPI), its TF1 ops on NumPy (float64); "
        "our networks bound as its gin architecture"
    )
    comparison.notes.append(
        "our reconstruction loss is taken in float32 (logits.float()), as in training: its "
        "difference (~6e-8 of its size) is float32 round-off; the rest is float64"
    )
    ours = our_method(method, "dsprites").double().eval()
    for name, (a, b) in measure(ours, method).items():
        comparison.add(name, a, b)
    return comparison


def measure(ours, method: str) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    images = inputs((BATCH, 1, 64, 64), seed=1).sigmoid().double()
    if method == "annealed_vae":
        ours.steps_done.fill_(STEP)
    records: list[tuple[str, torch.Tensor]] = []
    with recording(records, ("randn", "randperm")):
        loss, logs = ours.training_loss(Batch(images), torch.Generator().manual_seed(2))
    tf_numpy.DRAWS["random_normal"] = [v.numpy() for k, v in records if k == "randn"]
    tf_numpy.DRAWS["random_shuffle"] = [v.numpy() for k, v in records if k == "randperm"]
    tf_numpy.STEP[0] = STEP
    tf_numpy.NAMED.clear()
    spec = their_model_fn(dlib_vae(), ours, method, images)
    named = tf_numpy.NAMED
    run_loss = loss["run"] if isinstance(loss, dict) else loss
    pairs = {
        "sampled z": (ours_z(ours, images, records), named["sampled_latent_variable"]),
        "reconstruction loss": (logs["reconstruction"], spec["reconstruction_loss"]),
        "KL": (logs["kl"], spec["kl_loss"]),
        "regulariser": (run_loss - logs["reconstruction"], spec["regularizer"]),
        "loss": (run_loss, spec["loss"]),
    }
    if "elbo" in spec:
        pairs["ELBO"] = (logs["elbo"], spec["elbo"])
    if method == "factor_vae":
        # dlib's discriminator maximises discriminator_loss; ours minimises its negative.
        pairs["discriminator loss"] = (loss["discriminator"], -named["discriminator_loss"])
        z = shuffled(records, ours_z(ours, images, records))
        pairs["shuffled z"] = (z, named["latent_shuffled"])
    return {k: (torch.as_tensor(a), torch.as_tensor(np.asarray(b))) for k, (a, b) in pairs.items()}


def their_model_fn(vae, ours, method: str, images: torch.Tensor) -> dict[str, np.ndarray]:
    """dlib's model function in evaluation mode on the images (NHWC, as its input pipeline
    gives them), with our networks bound as its architecture."""
    import gin
    from disentanglement_lib.methods.shared import losses

    def encoder_fn(input_tensor, num_latent, is_training):
        hidden = ours.encoder(nchw(input_tensor))
        return nhwc(ours.to_mean(hidden)), nhwc(ours.to_log_var(hidden))

    def decoder_fn(latent_tensor, output_shape, is_training):
        return nhwc(ours.decoder(torch.from_numpy(np.asarray(latent_tensor))))

    def discriminator_fn(input_tensor, is_training):
        logits = ours.discriminator(torch.from_numpy(np.asarray(input_tensor)))
        return nhwc(logits), nhwc(F.softmax(logits, dim=1))  # dlib's fc_discriminator heads

    for key, value in (
        ("encoder.encoder_fn", encoder_fn),
        ("encoder.num_latent", ours.config.num_latent),
        ("decoder.decoder_fn", decoder_fn),
        ("discriminator.discriminator_fn", discriminator_fn),
        ("reconstruction_loss.loss_fn", losses.bernoulli_loss),
        ("reconstruction_loss.activation", "logits"),
    ):
        gin.bind_parameter(key, value)
    name, fields = DLIB[method]
    settings = {f: getattr(ours.config, f) for f in fields}
    if "dip_type" in settings:
        settings["dip_type"] = str(getattr(settings["dip_type"], "value", settings["dip_type"]))
    model = getattr(vae, name)(**settings)
    features = tf_numpy.tensor(images.permute(0, 2, 3, 1).numpy())
    try:
        with torch.no_grad():
            return model.model_fn(features, None, "eval", {})
    finally:
        gin.clear_config()


def nchw(x) -> torch.Tensor:
    """An NHWC array of theirs as our NCHW tensor (a flat one as it is)."""
    t = torch.from_numpy(np.asarray(x))
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


def nhwc(x: torch.Tensor) -> np.ndarray:
    """Our tensor as their array: NCHW images as NHWC, flat ones as they are."""
    x = x.detach()
    return tf_numpy.tensor((x.permute(0, 2, 3, 1) if x.dim() == 4 else x).numpy())


def ours_z(ours, images: torch.Tensor, records) -> torch.Tensor:
    """Our sampled z: the encoder's mean and log-variance with our recorded noise."""
    with torch.no_grad():
        hidden = ours.encoder(images)
        mean, log_var = ours.to_mean(hidden), ours.to_log_var(hidden)
    noise = next(v for k, v in records if k == "randn")
    return mean + torch.exp(0.5 * log_var) * noise


def shuffled(records, z: torch.Tensor) -> torch.Tensor:
    perms = [v for k, v in records if k == "randperm"]
    return torch.stack([z[p, i] for i, p in enumerate(perms)], 1)
