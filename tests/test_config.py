"""Config layers, overrides, errors and the run hash."""

from __future__ import annotations

import pytest

from bench.config import config_hash, from_dict, resolve_config, to_dict
from bench.errors import BenchError
from bench.registry import UnknownNameError


def resolve(*overrides, preset=None, seed=None, config_files=()):
    return resolve_config(
        "beta_vae", "dsprites-procedural", preset, list(overrides), seed, config_files
    )


def test_layers_apply_in_order():
    paper = resolve()
    assert paper.train.steps == 300_000 and paper.train.batch_size == 64 and paper.train.lr == 1e-4
    assert paper.method.num_latent == 10 and paper.seed == 0
    smoke = resolve(preset="smoke")
    assert smoke.train.steps == 3000 and smoke.train.checkpoint_every == 500
    overridden = resolve("train.steps=2000", "method.beta=4", preset="smoke", seed=3)
    assert overridden.train.steps == 2000 and overridden.method.beta == 4.0 and overridden.seed == 3


def test_config_files_merge_before_overrides(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("method:\n  beta: 6\ntrain:\n  steps: 10\n")
    cfg = resolve("train.steps=20", config_files=[extra])
    assert cfg.method.beta == 6.0 and cfg.train.steps == 20


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.stepz=3"],
            "unknown config key 'train.stepz' from command line (did you mean "
            "'train.steps'?); valid keys under 'train': steps, batch_size",
        ),
        (
            ["method.bta=2"],
            "valid keys under 'method': name, num_latent, picture_images, traversal_images, "
            "traversal_values, beta",
        ),
        (["train.steps=abc"], "config key 'train.steps' from command line: Value 'abc'"),
        (["train.optimizer=sgd"], "expected one of [adam, adamw]"),
        (["train.steps=-1"], "'train.steps' must be at least 0 (0: the untrained baseline)"),
        (["eval.metrics=[mgi]"], "unknown metric 'mgi' (did you mean 'mig'?)"),
        (["train"], "override 'train' must be key=value"),
        (["eval.every=0"], "'eval.every' must be at least 1"),
        (["eval.every=5", "eval.history.metrics=[nope]"], "unknown metric 'nope'"),
        (
            ["eval.reduce=pca1", "eval.pca_fit=sample"],
            "which only attribute_probe and tad do; score beta_vae, factor_vae, mig",
        ),
        (
            ["eval.every=5", "eval.reduce=pca1", "eval.pca_fit=sample", "eval.metrics=[tad]"],
            "score factor_vae, dci with eval.pca_fit=dataset (or leave it out of "
            "eval.history.metrics)",
        ),
    ],
)
def test_bad_overrides_give_one_line_errors(overrides, message):
    with pytest.raises(BenchError) as error:
        resolve(*overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_names_and_presets():
    with pytest.raises(
        UnknownNameError, match="known methods: annealed_vae, beta_tc_vae, beta_vae"
    ):
        resolve_config("nope", "dsprites-procedural")
    with pytest.raises(
        UnknownNameError,
        match="known datasets: cars3d, celeba, dsprites, dsprites-procedural, mpi3d",
    ):
        resolve_config("beta_vae", "nope")
    with pytest.raises(
        BenchError,
        match=r"unknown preset 'smok' \(did you mean 'smoke'\?\); "
        r"known presets: ci, learn, paper, smoke",
    ):
        resolve(preset="smok")


def test_hash_ignores_seed_and_runtime_keys_only():
    base = config_hash(resolve())
    assert config_hash(resolve(seed=5)) == base
    assert (
        config_hash(resolve("train.device=cpu", "train.log_every=1", "train.progress=false"))
        == base
    )
    assert config_hash(resolve("method.beta=4")) != base
    assert config_hash(resolve("train.batch_size=32")) != base


def test_saved_config_round_trips():
    cfg = resolve("method.beta=8", preset="smoke", seed=2)
    again = from_dict(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg) and config_hash(again) == config_hash(cfg)


def test_metric_hyperparameters_are_checked_against_the_profile_that_runs():
    fast = resolve("eval.metrics=[dci]", "eval.profile=fast", "eval.hyperparams.dci.max_bins=128")
    assert fast.eval.hyperparams.dci.max_bins == 128
    with pytest.raises(
        BenchError, match=r"eval.hyperparams.dci: unknown hyperparameter 'max_bins'"
    ):
        resolve("eval.metrics=[dci]", "eval.hyperparams.dci.max_bins=128")


def test_a_plain_unet_saved_before_its_middle_attention_norm_is_read_without_it():
    # Records written before the field existed were trained without the GroupNorm: they load
    # as they were built, and their folder keeps the older schema's hash.
    from bench.config import written_before_fields

    saved = to_dict(resolve_config("disdiff", "shapes3d-procedural", "ci"))
    assert not written_before_fields(saved)
    assert from_dict(saved).method.ldm.model.unet.mid_attention_norm is True
    del saved["method"]["ldm"]["model"]["unet"]["mid_attention_norm"]
    assert written_before_fields(saved)
    assert from_dict(saved).method.ldm.model.unet.mid_attention_norm is False
    assert "mid_attention_norm" not in saved["method"]["ldm"]["model"]["unet"]  # not mutated
