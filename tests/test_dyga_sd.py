"""DyGA's batched mixtures, its anchoring, Skip Dropout, and the shared first stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from bench.methods.base import TrainingProgress
from bench.methods.diffusion.gmm import (
    Mixtures,
    SplitPruneSchedule,
    init_at_samples,
    mean_log_likelihood,
    prune,
    run_em,
    split_rounds,
)
from bench.methods.diffusion.unet import SkipDropout, SkipDropoutConfig, UNetConfig, build_unet
from bench.methods.dyga_sd import DyGASD, DyGASDConfig, FeatureExtractorConfig
from bench.runner import run
from tests.conftest import FAST


def three_mixtures(rng: np.random.RandomState, n: int = 600, dim: int = 3) -> np.ndarray:
    """Three sets, each a mixture of three Gaussians with its own means and covariances."""
    sets = []
    for _ in range(3):
        parts = []
        for _ in range(3):
            a = rng.randn(dim, dim) * 0.5
            parts.append(
                rng.multivariate_normal(rng.randn(dim) * 5, a @ a.T + 0.2 * np.eye(dim), n // 3)
            )
        sets.append(np.concatenate(parts))
    return np.stack(sets)


def test_batched_em_reaches_scikit_learns_likelihood():
    data = three_mixtures(np.random.RandomState(0))
    x = torch.tensor(data, dtype=torch.float64)
    mask = torch.ones(x.shape[:2], dtype=torch.float64)
    best = torch.full((3,), -math.inf, dtype=torch.float64)
    for seed in range(5):  # restarts, as sklearn's n_init
        start = init_at_samples(x, mask, 3, 3, torch.Generator().manual_seed(seed))
        best = torch.maximum(best, mean_log_likelihood(x, run_em(x, mask, start, 200)))
    for unit in range(3):
        reference = GaussianMixture(
            3,
            covariance_type="full",
            reg_covar=1e-6,
            tol=1e-12,
            max_iter=1000,
            n_init=5,
            random_state=0,
        ).fit(data[unit])
        assert best[unit].item() == pytest.approx(reference.score(data[unit]), abs=1e-6)


def one_component(x: torch.Tensor, capacity: int) -> Mixtures:
    batch, _, dim = x.shape
    means = torch.zeros(batch, capacity, dim, dtype=x.dtype)
    means[:, 0] = x.mean(dim=1)
    covariances = torch.eye(dim, dtype=x.dtype).repeat(batch, capacity, 1, 1)
    log_weights = torch.full((batch, capacity), -math.inf, dtype=x.dtype)
    log_weights[:, 0] = 0.0
    return Mixtures(means, covariances, log_weights)


def two_blobs(distance: float, n: int = 400, dim: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centre = torch.zeros(dim, dtype=torch.float64)
    centre[0] = distance / 2
    points = torch.randn(n, dim, generator=g, dtype=torch.float64) * 0.05
    return torch.cat([points[: n // 2] - centre, points[n // 2 :] + centre])[None]


def test_a_wide_component_is_split_into_its_two_clusters():
    x = two_blobs(distance=4.0)  # mean member distance 2 > 0.5: dense
    schedule = SplitPruneSchedule(split_probability=0.0)
    mixtures = split_rounds(x, one_component(x, 4), schedule, torch.Generator().manual_seed(0))
    assert mixtures.num_components.tolist() == [4]  # split, then both halves split again
    # The 2-component EM starts at two random members, as the authors'; with seed 2 they
    # fall in different blobs (with both in one blob, 30 iterations stay near the middle).
    seed_two = torch.Generator().manual_seed(2)
    first_split = split_rounds(x, one_component(x, 2), schedule, seed_two)
    centres = sorted(first_split.means[0, :, 0].tolist())
    assert centres == pytest.approx([-2.0, 2.0], abs=0.02)
    assert torch.exp(first_split.log_weights).sum().item() == pytest.approx(1.0)


def test_tight_components_are_left_alone_unless_picked_at_random():
    x = two_blobs(distance=0.2)  # every point within ~0.2 of the mean: not dense
    never = SplitPruneSchedule(split_probability=0.0)
    kept = split_rounds(x, one_component(x, 8), never, torch.Generator().manual_seed(0))
    assert kept.num_components.tolist() == [1]
    # Random splits only happen in a round that some dense component opens.
    always = SplitPruneSchedule(split_probability=1.0)
    still = split_rounds(x, one_component(x, 8), always, torch.Generator().manual_seed(0))
    assert still.num_components.tolist() == [1]


def test_splits_stop_at_the_split_budget_and_the_component_cap():
    g = torch.Generator().manual_seed(0)
    line = torch.arange(8, dtype=torch.float64).repeat_interleave(50) * 4  # 8 blobs on a line
    x = torch.stack([line, torch.zeros_like(line)], dim=1)
    x = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64))[None]
    budget = SplitPruneSchedule(split_probability=1.0, max_splits=3)
    grown = split_rounds(x, one_component(x, 32), budget, torch.Generator().manual_seed(0))
    # Rounds split 1, then 2 components (3 splits done): 1 → 2 → 4.
    assert grown.num_components.tolist() == [4]
    capped = split_rounds(x, one_component(x, 3), budget, torch.Generator().manual_seed(0))
    assert capped.num_components.tolist() == [3]


def test_prune_drops_components_with_a_small_soft_count():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(300, 2, generator=g, dtype=torch.float64)
    small = torch.randn(6, 2, generator=g, dtype=torch.float64) * 0.1 + 20
    x = torch.cat([big, small])[None]
    mixtures = Mixtures(
        torch.tensor([[[0.0, 0.0], [20.0, 20.0]]], dtype=torch.float64)
        * torch.tensor([1.0, 1.0], dtype=torch.float64),
        torch.eye(2, dtype=torch.float64).repeat(1, 2, 1, 1),
        torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64)),
    )
    mixtures.means[0, 1] = small.mean(dim=0)
    pruned = prune(x, mixtures, min_soft_count=10)
    assert pruned.active.tolist() == [[True, False]]
    assert pruned.log_weights[0, 0].item() == pytest.approx(0.0)
    kept = prune(x, mixtures, min_soft_count=5)
    assert kept.active.tolist() == [[True, True]]


def small_dyga(**dyga) -> DyGASD:
    config = DyGASDConfig(
        unet=UNetConfig(channels=[32, 32, 64, 64], layers_per_block=1, heads=4, norm_groups=8),
        encoder=FeatureExtractorConfig(channels=8, hidden=64, token_widths=[16, 16]),
    )
    config.first_stage.autoencoder.channels = [16, 32, 32]
    config.first_stage.autoencoder.norm_groups = 8
    for key, value in dyga.items():
        setattr(config.dyga, key, value)
    torch.manual_seed(0)
    return DyGASD(config, (64, 64, 3))


def refit(model: DyGASD, images: torch.Tensor) -> None:
    model.after_step(
        TrainingProgress(
            step=1,
            epoch=1,
            epoch_ended=True,
            images=lambda rows: images[torch.from_numpy(rows)],
            num_images=len(images),
            seed=0,
        )
    )


@pytest.mark.parametrize("normalization", ["reference", "minmax"])
def test_mixing_weight_stays_in_its_range(normalization):
    model = small_dyga(normalization=normalization, initial_components=4, iterations=5)
    images = torch.rand(96, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    refit(model, images)
    assert int(model.anchoring.anchor_refits) == 1
    g = torch.Generator().manual_seed(2)
    for scale in (0.01, 1.0, 100.0):
        tokens = torch.rand(16, 20, 32, generator=g) * scale + 0.01
        mixing = model.anchoring.mixing_weight(tokens, model.anchoring.nearest_anchors(tokens))
        assert 0 < mixing.item() <= 0.1
    tokens = torch.rand(16, 20, 32, generator=g) + 0.01
    anchors = model.anchoring.nearest_anchors(tokens)
    mixing = model.anchoring.mixing_weight(tokens, anchors)
    torch.testing.assert_close(model.condition(tokens), mixing * anchors + (1 - mixing) * tokens)
    assert model.anchoring.mixing_weight(
        anchors.abs() + 0.5, anchors.abs() + 0.5
    ).item() == pytest.approx(0.1)


def test_normalisations_follow_their_formulas():
    tokens = torch.tensor([[[0.0, 2.0]], [[4.0, 1.0]]])  # (B=2, N=1, D=2): max 4, min 0
    reference = small_dyga(normalization="reference").anchoring.normalise(tokens, over=(0, 2))
    minmax = small_dyga(normalization="minmax").anchoring.normalise(tokens, over=(0, 2))
    torch.testing.assert_close(reference, (tokens - 4) / (4 + 1e-6))
    torch.testing.assert_close(minmax, tokens / (4 + 1e-6))


def test_no_anchoring_before_the_first_refit_or_when_disabled():
    tokens = torch.rand(4, 20, 32)
    assert torch.equal(small_dyga().condition(tokens), tokens)
    model = small_dyga(enabled=False)
    refit(model, torch.rand(8, 3, 64, 64))
    assert int(model.anchoring.anchor_refits) == 0 and torch.equal(model.condition(tokens), tokens)


def skip_tensors(unet) -> tuple[list, list]:
    """Hooks that see each up block's skips before and after Skip Dropout."""
    before, after = [], []
    for block in unet.up_blocks:
        block.register_forward_pre_hook(
            lambda m, a, k: before.extend(k["res_hidden_states_tuple"]),
            with_kwargs=True,
            prepend=True,
        )
        block.register_forward_pre_hook(
            lambda m, a, k: after.extend(k["res_hidden_states_tuple"]), with_kwargs=True
        )
    return before, after


def test_skip_dropout_touches_exactly_the_16_and_8_skips_in_training_only():
    torch.manual_seed(0)
    unet = build_unet(UNetConfig(), 3, 16, 32)
    dropout = SkipDropout(unet, SkipDropoutConfig(p=0.2))
    dropout.generator = torch.Generator().manual_seed(0)
    before, after = skip_tensors(unet)
    inputs = (torch.randn(4, 3, 16, 16), torch.tensor([1, 10, 100, 999]))
    context = torch.randn(4, 20, 32)

    unet.train()
    unet(*inputs, encoder_hidden_states=context)
    assert dropout.dropped == 6 and len(before) == len(after) == 12
    assert sorted(t.shape[-1] for t in before) == [2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    for pre, post in zip(before, after, strict=True):
        if pre.shape[-1] in (16, 8):
            kept = (post != 0).flatten(2).any(dim=2)  # whole channels are dropped
            torch.testing.assert_close(post, pre * kept[..., None, None] / 0.8)
            assert 0 < kept.float().mean() < 1
        else:
            assert torch.equal(pre, post)

    unet.eval()
    before.clear(), after.clear()
    with torch.no_grad():
        unet(*inputs, encoder_hidden_states=context)
    assert dropout.dropped == 6
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


TINY = [
    *FAST,
    "eval.metrics=[]",
    "method.first_stage.steps=2",
    "method.first_stage.batch_size=4",
    "train.batch_size=4",
    "method.sample_steps=2",
    "method.picture_pairs=1",
    "method.traversal_values=2",
]


def test_a_second_method_reuses_the_cached_first_stage(tmp_path):
    first = run("dyga_sd", "shapes3d-procedural", "smoke", TINY, out=tmp_path)
    second = run("sd", "shapes3d-procedural", "smoke", TINY, out=tmp_path)
    (stage,) = (tmp_path / "artifacts" / "vq_autoencoder" / "shapes3d-procedural").iterdir()
    events = [
        next(e for e in record.read_log() if e.get("event") == "first_stage")
        for record in (first, second)
    ]
    assert [e["reused"] for e in events] == [False, True]
    assert events[0]["path"] == events[1]["path"] == str(stage)
    assert (first.path / "pictures" / "interchange.png").is_file()
    # Same first-stage weights inside both runs.
    from safetensors.torch import load_file

    a, b = load_file(first.weights_file), load_file(second.weights_file)
    stage_keys = [k for k in a if k.startswith("first_stage.")]
    assert stage_keys and all(torch.equal(a[k], b[k]) for k in stage_keys)


def test_annealed_mixing_moves_the_tokens_onto_their_anchors():
    model = small_dyga(mixing="annealed", initial_components=4, iterations=5)
    images = torch.rand(96, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tokens = torch.rand(16, 20, 32, generator=torch.Generator().manual_seed(2)) + 0.01
    normalised = model.anchoring.normalise(tokens, over=(0, 2))
    # Before the first refit the U-Net sees the normalised tokens (λ = 1).
    torch.testing.assert_close(model.condition(tokens), normalised, rtol=0, atol=0)
    refit(model, images)
    model.anchoring.progress_fraction.fill_(0.25)  # λ = 1 − step/steps = 0.75
    model.eval()  # without Gumbel noise, the τ = 1e-4 assignment is the most likely component
    expected = 0.75 * normalised + 0.25 * model.anchoring.nearest_anchors(tokens)
    conditioned = model.condition(tokens)
    torch.testing.assert_close(conditioned, expected, rtol=0, atol=1e-5)
    assert (conditioned - tokens).abs().max() > 0.1  # what the U-Net sees has changed
    model.anchoring.progress_fraction.fill_(1.0)  # at the end of training: the anchors themselves
    torch.testing.assert_close(model.condition(tokens), model.anchoring.nearest_anchors(tokens))
    # In training, the assignment is a Gumbel-softmax sample drawn from the run's generator.
    model.train()
    draws = [model.condition(tokens, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert model.deviations() and not small_dyga().deviations()


CI_DYGA = [
    "train.steps=16",
    "train.log_every=1",
    "method.dyga.refit_every=4",
    "method.dyga.max_fit_images=128",
    "eval.metrics=[mig]",
    "eval.hyperparams.mig.num_train=300",
    "method.picture_pairs=1",
    "method.traversal_values=2",
]


def test_released_anchoring_is_inert_and_annealed_anchoring_acts(tmp_path):
    released = run("dyga_sd", "shapes3d-procedural", "ci", CI_DYGA, out=tmp_path)
    log = [e for e in released.read_log() if "loss" in e]
    after_refit = [e for e in log if e["step"] > 4]
    assert len(after_refit) == 12  # every step after the first refit is logged …
    assert all(e["dyga_lambda"] == 0.0 for e in after_refit)  # … with λ exactly 0 (as released)
    assert all(e["dyga_lambda_zero_fraction"] == 1.0 for e in after_refit)
    assert all("dyga_lambda" not in e for e in log if e["step"] <= 4)  # no anchors yet
    summary = released.status()["training"]["dyga"]
    assert summary["steps_with_anchors"] == 12 and summary["steps_anchoring_anything"] == 0

    annealed = run("dyga_sd_annealed", "shapes3d-procedural", "ci", CI_DYGA, out=tmp_path)
    summary = annealed.status()["training"]["dyga"]
    assert summary["steps_anchoring_anything"] == 12 and summary["mixing"] == "annealed"
    lambdas = [e["dyga_lambda"] for e in annealed.read_log() if e["step"] > 4 and "loss" in e]
    assert lambdas == pytest.approx([1 - (step - 1) / 16 for step in range(5, 17)])
    # The two differ only in the mixing: anchoring that acts changes what is learned.
    assert annealed.metrics()["mig"]["values"] != released.metrics()["mig"]["values"]
    assert annealed.identity()["deviations"] and not released.identity()["deviations"]


def test_weights_saved_before_the_anchoring_component_still_load():
    model = small_dyga(initial_components=4, iterations=5)
    refit(model, torch.rand(96, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    state = {
        key.removeprefix("anchoring."): value for key, value in model.state_dict().items()
    }  # the buffers at the top, as the earlier DyGASD kept them
    assert "anchor_means" in state
    again = small_dyga(initial_components=4, iterations=5)
    again.load_state_dict(state)
    assert int(again.anchoring.anchor_refits) == 1
    torch.testing.assert_close(again.anchoring.anchor_means, model.anchoring.anchor_means)


def test_generation_for_fid_is_ddim_from_seeded_noise_conditioned_on_the_images():
    model = small_dyga().eval()
    model.set_latent_scale(1.0)  # measured on the first training batch; untrained here
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # zero-initialised output layers would ignore the condition
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    images = torch.rand(2, 3, 64, 64, generator=generator)
    first = model.generate(images, seed=3, steps=2)
    assert first.shape == (2, 3, 64, 64) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, model.generate(images, seed=3, steps=2))
    assert not torch.equal(first, model.generate(images, seed=4, steps=2))
    with torch.no_grad():
        noise, scalars = model.latent_noise(2, "cpu", 3), model.scalars(images)
        assert torch.equal(first, model.sample(scalars, noise, 2))  # the images' own units,
        assert not torch.equal(first, model.sample(scalars + 1.0, noise, 2))  # which condition


def test_skip_dropout_masks_drawn_before_the_pass_equal_those_drawn_inside_it():
    # draw() takes every random draw out of the U-Net (one compiled graph); same numbers.
    inputs = (torch.randn(4, 3, 16, 16), torch.tensor([1, 10, 100, 999]))
    context = torch.randn(4, 20, 32)
    unets = []
    for _ in range(2):  # the same weights twice
        torch.manual_seed(0)
        unets.append(build_unet(UNetConfig(), 3, 16, 32).train())
    inside, before = (SkipDropout(unet, SkipDropoutConfig(p=0.2)) for unet in unets)
    inside.generator, generator = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for step in range(3):
        expected = unets[0](*inputs, encoder_hidden_states=context).sample
        with before.draw(generator, 4):
            assert len(before.masks) == (0 if step == 0 else 6)  # the first learns the shapes
            got = unets[1](*inputs, encoder_hidden_states=context).sample
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert not before.masks
    assert before.dropped == inside.dropped == 18


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="torch < 2.6")
def test_a_compiled_unet_with_skip_dropout_is_traced_as_one_graph():
    # train.compile: no random draw inside the U-Net, so dynamo never breaks its graph.
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    unet = build_unet(UNetConfig(), 3, 16, 32).train()
    dropout = SkipDropout(unet, SkipDropoutConfig(p=0.2))
    unet.compile(dynamic=False, backend="eager")  # tracing alone, no code generation
    inputs = (torch.randn(4, 3, 16, 16), torch.tensor([1, 10, 100, 999]))
    context = torch.randn(4, 20, 32)
    generator = torch.Generator().manual_seed(0)
    counters.clear()
    try:
        for _ in range(3):
            with dropout.draw(generator, 4):
                unet(*inputs, encoder_hidden_states=context)
        assert counters["stats"]["unique_graphs"] == 1
        assert not counters["graph_break"]
    finally:
        torch._dynamo.reset()
