"""DisUnknown: its losses against closed forms, stage 1's gradient routing against a by-hand
single-loss computation, nested dropout, the refusals, a resume in stage 2, and its two score
sets in metrics.json and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import bench.datasets
from bench.build import build_method
from bench.config import resolve_config
from bench.errors import BenchError
from bench.evaluate import EncodedGroundTruth
from bench.methods.disunknown import (
    DisUnknown,
    DisUnknownConfig,
    FactorCode,
    class_labels,
    code_kl,
    drop_and_sample,
    gaussian_nll,
    gaussian_noise,
    keep_probabilities,
    nll,
    roll,
    unlikelihood,
)
from bench.report import collect, summarise
from bench.runner import run
from bench.store import RunRecord
from bench.train import train
from tests.grid_data import FactorGrid


def tiny(labeled=("a", "b"), **settings) -> DisUnknown:
    """A 16×16 DisUnknown with two labelled factors (3 and 4 classes) and one unknown."""
    config = DisUnknownConfig(
        labeled=list(labeled),
        factors={"a": FactorCode(2, [0.8]), "b": FactorCode(3, None, "circle"), "c": FactorCode()},
        conv_channels=[4, 8],
        fc_features=16,
        enc_gen_fc_layers=1,
        code_cla1_features=16,
        code_cla1_layers=1,
        class_frequencies=[[0.5, 0.3, 0.2], [0.25] * 4],
        unknown_factors=["c"],
        **settings,
    )
    torch.manual_seed(0)
    return DisUnknown(config, (16, 16, 3))


def test_gaussian_nll_is_the_normal_log_density_per_pixel():
    generator = torch.Generator().manual_seed(0)
    images, target = torch.randn(2, 4, 3, 3, 3, generator=generator)
    std = torch.tensor([0.3, 2.0, 1.0, 0.7])
    expected = -torch.distributions.Normal(images, std[:, None, None, None]).log_prob(target)
    torch.testing.assert_close(gaussian_nll(images, target, std), expected.mean())


def test_code_kl_is_the_gaussian_kl_and_the_batch_moment_kl():
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(5, 3, generator=generator)
    std = torch.rand(5, 3, generator=generator) + 0.5
    keep = torch.tensor([1.0, 0.5, 0.25])
    kl, batch_kl = code_kl(mean, std, keep)
    prior = torch.distributions.Normal(0.0, 1.0)
    per_dim = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std), prior)
    torch.testing.assert_close(kl, (per_dim.mean(0) * keep).sum())
    # The batch's Gaussian: the codes' mean, and their unbiased variance plus the mean σ².
    variance = mean.var(0) + std.pow(2).mean(0)
    moments = torch.distributions.Normal(mean.mean(0), variance.sqrt())
    expected = (torch.distributions.kl_divergence(moments, prior) * keep).sum()
    torch.testing.assert_close(batch_kl, expected)


def test_keep_probabilities_follow_the_authors_example():
    # config_example.yaml: size 8 with [0.9, 0.8, 0.7, 0.1].
    got = keep_probabilities(8, [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(got, [1, 0.9, 0.8, 0.7, 0.4304, 0.2646, 0.1627, 0.1], atol=1e-4)
    assert keep_probabilities(3, None) == [1.0, 1.0, 1.0]
    assert keep_probabilities(3, [1, 0.5]) == [1.0, 1.0, 0.5]  # the 3D Shapes unknown code


def test_gaussian_noise_puts_one_sample_in_each_stratum():
    samples = gaussian_noise(50, 3, torch.Generator().manual_seed(0))
    # Φ maps N(0, 1) to U(0, 1); the strata are 50 equal slices (up to the 1e-5 margins).
    strata = np.floor(norm.cdf(samples.double().numpy()) * 50).astype(int)
    for column in strata.T:
        assert sorted(column) == list(range(50))


def test_nested_dropout_replaces_dropped_dimensions_by_the_prior():
    n = 20000
    mean, std = torch.full((n, 3), 5.0), torch.full((n, 3), 0.01)
    keep = torch.tensor([1.0, 0.5, 0.0])
    kept, sample = drop_and_sample(mean, std, keep, torch.Generator().manual_seed(0))
    assert kept[:, 0].all() and not kept[:, 2].any()
    assert (kept[:, 1] >= kept[:, 2]).all() and (kept[:, 0] >= kept[:, 1]).all()  # nested
    assert abs(kept[:, 1].mean().item() - 0.5) < 0.02
    dropped = sample[kept == 0]
    assert abs(dropped.mean().item()) < 0.03 and abs(dropped.std().item() - 1) < 0.03
    assert torch.allclose(sample[kept == 1], torch.tensor(5.0), atol=0.05)


def test_unlikelihood_weights_each_label_by_its_inverse_frequency():
    log_probs = [torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]))]
    labels = torch.tensor([[0], [2]])
    freqs = [torch.tensor([0.5, 0.3, 0.2])]
    expected = (-math.log(0.3) * (1 / 0.5 - 1) - math.log(0.7) * (1 / 0.2 - 1)) / 2
    assert unlikelihood(log_probs, labels, freqs).item() == pytest.approx(expected, rel=1e-6)
    assert unlikelihood(log_probs, labels).item() == pytest.approx(
        (-math.log(0.3) - math.log(0.7)) / 2, rel=1e-6
    )


def by_hand_stage1_gradients(model, x, labels, seed):
    """Stage 1's gradients as single losses: C descends the NLL of the true labels; E, G's FC
    layers and B descend reconstruction + cla1_weight·unlikelihood (the reversed loss) + the KL
    terms; G's conv layers the reconstruction alone. The random draws in the method's order."""
    c, generator = model.config, torch.Generator().manual_seed(seed)
    E, G, C = model.unknown_encoder, model.stage1_generator, model.stage1_classifier
    B = model.stage1_embedder
    offsets = torch.randint(1, len(x), (2,), generator=generator).tolist()
    other = torch.stack([roll(t, k) for t, k in zip(labels.t(), offsets, strict=True)], 1)
    ((umean, ustd),) = E(x)
    ukeep, ucode = drop_and_sample(umean, ustd, model.unknown_keep, generator)
    ukl, ubatch = code_kl(umean, ustd, model.unknown_keep)
    keeps = [model.keep_0, model.keep_1]

    def sample(labels):
        triples = zip(B, labels.t(), keeps, strict=True)
        pairs = [drop_and_sample(*b(t), p, generator) for b, t, p in triples]
        return [k for k, _ in pairs], [s for _, s in pairs]

    lkeep, lcode = sample(labels)
    lkl = sum(b.code_loss().mul(p).sum() for b, p in zip(B, keeps, strict=True))
    rec, std = G([ucode, *lcode], [ukeep, *lkeep])
    rec_loss = gaussian_nll(rec, x, std)
    okeep, ocode = sample(other)
    cross = G([ucode, *ocode], [ukeep, *okeep])[0]
    freqs = [b.frequencies for b in B]
    reversed_loss = unlikelihood(C(cross, ucode, ukeep), labels, freqs) * c.cla1_weight
    kl = ukl * c.ucode_weight + ubatch * c.ubatch_weight + lkl * c.lcode_weight
    full = rec_loss + reversed_loss + kl

    def grads(loss, module_params):
        params = list(module_params)
        found = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)]

    expected = {}
    expected["E"] = grads(full, E.parameters())
    expected["G.conv"] = grads(rec_loss, G.conv.parameters())
    fc = [*G.fc1.parameters(), *G.fc2.parameters(), *G.std_head.parameters()]
    expected["G.fc"] = grads(rec_loss + reversed_loss, fc)
    expected["B"] = grads(full, B.parameters())
    true_labels = nll(C(cross.detach(), ucode.detach(), ukeep), labels)
    expected["C"] = grads(true_labels, C.parameters())
    return expected


def test_stage1_trains_the_adversary_on_true_labels_and_the_encoder_on_the_reversed_loss():
    model = tiny()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 16, 16, generator=generator) * 2 - 1
    labels = torch.tensor([[0, 1], [1, 3], [2, 0], [1, 2], [0, 0], [2, 3]])
    model.zero_grad(set_to_none=True)
    model._stage1(x, labels, torch.Generator().manual_seed(7))
    G = model.stage1_generator
    got = {
        "E": [p.grad for p in model.unknown_encoder.parameters()],
        "G.conv": [p.grad for p in G.conv.parameters()],
        "G.fc": [
            p.grad for p in [*G.fc1.parameters(), *G.fc2.parameters(), *G.std_head.parameters()]
        ],
        "B": [p.grad for p in model.stage1_embedder.parameters()],
        "C": [p.grad for p in model.stage1_classifier.parameters()],
    }
    expected = by_hand_stage1_gradients(model, x, labels, seed=7)
    for part, grads in expected.items():
        for g, e in zip(got[part], grads, strict=True):
            g = torch.zeros_like(e) if g is None else g
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6, msg=part)
    assert any(e.abs().sum() > 0 for e in expected["E"])  # the check has something to check
    # Nothing of the later stages moves in stage 1.
    later = [model.generator, model.embedder, model.discriminator, model.label_classifier]
    assert all(p.grad is None for m in later for p in m.parameters())


def test_stage1_gradient_signs_fail_if_the_encoder_helped_the_adversary():
    # The same check is sensitive to the sign of the adversarial term: with cla1_weight < 0 (E
    # pushed to help C), E's gradient no longer matches the authors' reversed loss at +0.5.
    model = tiny(cla1_weight=-0.5)
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 16, 16, generator=generator) * 2 - 1
    labels = torch.tensor([[0, 1], [1, 3], [2, 0], [1, 2], [0, 0], [2, 3]])
    model._stage1(x, labels, torch.Generator().manual_seed(7))
    got = [p.grad for p in model.unknown_encoder.parameters()]
    model.config.cla1_weight = 0.5
    expected = by_hand_stage1_gradients(model, x, labels, seed=7)["E"]
    assert any(not torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected, strict=True))


def test_no_labelled_factor_is_a_one_line_error_naming_the_option():
    cfg = resolve_config("disunknown", "dsprites-procedural", "ci", ["method.labeled=[]"], 0)
    data = bench.datasets.load("dsprites-procedural")
    with pytest.raises(BenchError, match=r"method\.labeled=\[") as error:
        build_method(cfg, data)
    assert "\n" not in str(error.value)
    every = "method.labeled=[shape,scale,orientation,posX,posY]"
    cfg = resolve_config("disunknown", "dsprites-procedural", "ci", [every], 0)
    with pytest.raises(BenchError, match=r"leave at least one factor out of method\.labeled"):
        build_method(cfg, data)


def test_train_steps_must_be_the_sum_of_the_stages(tmp_path):
    with pytest.raises(BenchError, match=r"set train\.steps=66"):
        run("disunknown", "shapes3d-procedural", "ci", ["train.steps=50"], out=tmp_path)
    assert not any(tmp_path.rglob("*.json")), "nothing is written before the refusal"


class StopAt(Exception):
    pass


def test_a_run_stopped_in_stage_2_resumes_in_stage_2_bit_identically(tmp_path):
    cfg = resolve_config(
        "disunknown",
        "shapes3d-procedural",
        "ci",
        ["train.checkpoint_every=5", "train.log_every=1"],
        0,
    )
    data = bench.datasets.load(cfg.dataset.name, **cfg.dataset.options)
    whole = build_method(cfg, data)
    train(whole, data, cfg, RunRecord(tmp_path / "whole"))

    def stop(step):
        if step == 46:  # stage 2 is steps 37-56; the checkpoint of step 45 is on disk
            raise StopAt

    split = RunRecord(tmp_path / "split")
    with pytest.raises(StopAt):
        train(build_method(cfg, data), data, cfg, split, on_step=stop)
    resumed = build_method(cfg, data)
    assert whole.phase_of(45) == ("stage2", 10)
    train(resumed, data, cfg, split)
    log = split.read_log()
    assert [e["stage"] for e in log if 45 < e["step"] <= 56] == [3.0] * 11
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_ci_run_scores_all_factors_and_the_unknown_ones_and_is_marked_weakly_supervised(
    tmp_path,
):
    record = run("disunknown", "shapes3d-procedural", "ci", out=tmp_path)
    metrics = record.metrics()
    assert {"mig", "mig/unknown", "dci/unknown", "sap_score/unknown"} <= metrics.keys()
    unknown = metrics["mig/unknown"]
    assert unknown["factors"] == ["floor_hue"] and unknown["dims"] == [0, 3]
    assert unknown["reduce"] == "none" and metrics["mig"]["reduce"] == "pca1"
    raw = metrics["mig/raw"]  # every factor on the raw dimensions, beside the PCA(1) view
    assert raw["reduce"] == "none" and raw["dims"] == [0, 3 + 2 + 2 + 2 + 4 + 2]
    assert raw["factors"] == list(bench.datasets.load("shapes3d-procedural").factor_names)
    assert record.identity()["supervision"] == (
        "weakly supervised (labels: wall_hue, object_hue, scale, shape, orientation)"
    )
    assert {p.name for p in (record.path / "pictures").iterdir()} == {"swap.png", "classes.png"}
    summary = summarise(collect(tmp_path))
    (row,) = summary.row.unique()
    assert row.endswith(
        "[weakly supervised (labels: wall_hue, object_hue, scale, shape, orientation)]"
    )
    assert {"MIG", "MIG (unknown factors)", "MIG (raw dims)"} <= set(summary.column)


def test_excluded_factors_are_drawn_as_nuisances_and_not_scored():
    data = bench.datasets.load("shapes3d-procedural")
    view = EncodedGroundTruth(data, ("wall_hue", "object_hue", "scale", "shape", "orientation"))
    assert view.factor_names == ("floor_hue",) and view.num_factors == 1
    rows = view.sample_observations_from_factors(np.full((200, 1), 3), np.random.RandomState(0))[
        :, 0
    ]
    factors = data.factors_of(rows)
    assert (factors[:, 0] == 3).all()
    assert all(len(np.unique(factors[:, k])) > 1 for k in range(1, 6))
    # Without exclusions the view draws exactly as the dataset does, nuisances included.
    grid = FactorGrid((3, 4, 5))
    grid.nuisance_factors = ("f1",)
    factors = np.random.RandomState(1).randint(3, size=(50, 2))
    rows = EncodedGroundTruth(grid).sample_observations_from_factors(
        factors, np.random.RandomState(2)
    )[:, 0]
    expected = grid.index_of(grid.complete_factors(factors, np.random.RandomState(2)))
    np.testing.assert_array_equal(rows, expected)
    assert len(np.unique(grid.factors_of(rows)[:, 1])) > 1  # the nuisance was drawn


def test_normalised_prelu_has_zero_mean_and_unit_variance_for_a_standard_normal_input():
    from bench.methods.disunknown_networks import WNPReLU

    layer = WNPReLU(3)
    with torch.no_grad():
        layer.pre_bias.copy_(torch.tensor([-1.0, 0.0, 0.7]))
        layer.weight.copy_(torch.tensor([0.25, -0.5, 0.9]))
    x = torch.randn(400000, 3, generator=torch.Generator().manual_seed(0))
    y = layer(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=0.01, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3), atol=0.01, rtol=0)


def test_weight_normalised_layers_use_unit_norm_kernels_per_output_unit():
    from bench.methods.disunknown_networks import WNConv2d, WNConvTranspose2d, WNLinear

    torch.manual_seed(0)
    conv, up, linear = WNConv2d(3, 5, 4, 2, 1), WNConvTranspose2d(5, 3, 4, 2, 1), WNLinear(6, 2)
    with torch.no_grad():
        for layer in (conv, up, linear):
            layer.weight.mul_(3.0)  # the stored scale does not matter, only the direction
    assert torch.allclose(conv.unit_weight().flatten(1).norm(dim=1), torch.ones(5))
    assert torch.allclose(
        up.unit_weight().transpose(0, 1).flatten(1).norm(dim=1), torch.ones(3) * 2
    )
    assert torch.allclose(linear.unit_weight().norm(dim=1), torch.ones(2))


def test_the_throughput_benchmark_steps_each_stage_of_disunknown():
    # Not a timing: the benchmark drives the method's own step in the stage it names.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    starts = benchmark.stage_starts("disunknown")
    assert starts == {"stage1": 0, "classifier": 200000, "stage2": 220000, "lenc": 300000}
    row = benchmark.time_training(
        "disunknown", torch.device("cpu"), False, False, 4, 1, starts["stage2"]
    )
    assert row["batch_size"] == 4 and row["images_per_s"] > 0


def test_dsprites_orientation_is_folded_to_39_classes_counted_on_the_90_percent():
    # The authors' loader (data/dsprites.py): orientation 39 (= 0) left out; a square's o
    # becomes 4·o mod 39, an ellipse's 2·o mod 39, a heart's stays; classes counted on the
    # training split, 90% of the remaining images.
    cfg = resolve_config("disunknown", "dsprites-procedural", "ci", seed=0)
    data = bench.datasets.load("dsprites-procedural")
    model = build_method(cfg, data)
    assert model.config.labeled == ["shape", "scale", "orientation"]
    assert [len(f) for f in model.config.class_frequencies] == [3, 6, 39]
    values = torch.tensor([[0, 0, 10], [1, 0, 10], [2, 0, 10], [0, 5, 38], [1, 5, 20]])
    expected = [[0, 0, 1], [1, 0, 20], [2, 0, 10], [0, 5, 35], [1, 5, 1]]
    assert class_labels(values, model.config).tolist() == expected
    kept = 3 * 6 * 39 * 32 * 32
    rows = np.sort(np.random.default_rng(0).permutation(kept)[round(kept * 0.1) :])
    # The kept rows, in the dataset's order: orientation 39 dropped from each (shape, scale).
    factors = data.factors_of(np.flatnonzero(data.factors_of(np.arange(len(data)))[:, 2] < 39))
    labels = class_labels(torch.from_numpy(factors[rows][:, :3]), model.config)
    for k, frequencies in enumerate(model.config.class_frequencies):
        counts = np.bincount(labels[:, k].numpy(), minlength=len(frequencies))
        np.testing.assert_allclose(frequencies, counts / len(rows))
    assert not np.allclose(model.config.class_frequencies[2], 1 / 39)  # not the full grid's


def test_folding_without_the_shape_label_is_a_one_line_error():
    cfg = resolve_config(
        "disunknown", "dsprites-procedural", "ci", ["method.labeled=[scale,orientation]"], 0
    )
    with pytest.raises(BenchError, match=r"label both") as error:
        build_method(cfg, bench.datasets.load("dsprites-procedural"))
    assert "\n" not in str(error.value)


def test_class_frequencies_given_in_the_config_are_kept():
    # Given with the unknown factors (the parity harness, a user's own counts), they are not
    # recounted from the dataset's labels.
    given = [[0.2, 0.8], [0.5, 0.25, 0.25]]
    overrides = [
        "method.labeled=[shape,scale]",
        f"method.class_frequencies={given}",
        "method.unknown_factors=[orientation,posX,posY]",
    ]
    cfg = resolve_config("disunknown", "dsprites-procedural", "ci", overrides, 0)
    model = build_method(cfg, bench.datasets.load("dsprites-procedural"))
    assert model.config.class_frequencies == given
    for embedder, frequencies in zip(model.stage1_embedder, given, strict=True):
        torch.testing.assert_close(embedder.frequencies, torch.tensor(frequencies))
