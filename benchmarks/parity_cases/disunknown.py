"""DisUnknown against stormraiser/disunknown (``config_example.yaml``, the 3D Shapes split our
preset takes, through their ``process_config``): the nested-dropout keep probabilities, every
network's forward pass (E, G1, C, B1, R, G2, B2, D, S, built by their ``models`` with our
weights), and one stage-1 step of their ``Stage1Trainer.iter_func``: its loss terms and the
gradient it leaves on every parameter of E, G, C and B, after the same batch and the same
random draws (ours, recorded, replayed into their global-generator calls).

Their trainer is built only as far as ``iter_func`` reads it: the attributes its ``__init__``
sets from the config and the networks, without its dataset, test images and plots; its
optimizer's step is held back so that the gradients can be read. The class frequencies are a
fixed uneven set (theirs come from the dataset file, which is not read here)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from bench.authors.keymap import to_authors
from bench.methods.disunknown import DisUnknown
from parity_cases.authors import DISUNKNOWN, checkouts, importable
from parity_cases.common import (
    Comparison,
    inputs,
    layout,
    load_into,
    our_method,
    randomize,
    recording,
    replaying,
)

NEEDS = (DISUNKNOWN,)
CONFIG = "config_example.yaml"
CLASSES = {"wall_hue": 10, "object_hue": 10, "scale": 8, "shape": 4, "orientation": 15}
BATCH = 8
RANDOM = ("rand", "randint", "randperm")  # the draws of stage 1
PARTS = ("real", "fake", "reflected")  # a critic's paired call


def frequencies(classes: int, k: int) -> list[float]:
    weights = torch.arange(1, classes + 1, dtype=torch.float64).roll(k) ** 0.5
    return (weights / weights.sum()).tolist()


def our_disunknown(seed: int = 0) -> DisUnknown:
    """Ours at the paper configuration with seeded random weights; its buffers are settings
    (keep probabilities, class frequencies), not weights, and keep their values."""
    given = [frequencies(n, k) for k, n in enumerate(CLASSES.values())]
    overrides = [f"method.class_frequencies={given}", "method.unknown_factors=[floor_hue]"]
    model = our_method("disunknown", overrides=overrides, randomized=False)
    assert list(model.config.labeled) == list(CLASSES)
    settings = {k: v.clone() for k, v in model.named_buffers()}
    randomize(model, seed)
    with torch.no_grad():
        for key, value in model.named_buffers():
            value.copy_(settings[key])
    return model


def their_config(root: Path) -> dict:
    """Their stage-1 configuration from ``config_example.yaml`` (``process_config``)."""
    from process_config import process_config

    with tempfile.TemporaryDirectory() as save:
        args = argparse.Namespace(
            config_file=str(root / CONFIG), save_path=save, data_path=None, device="cpu",
            start_from=None,
        )  # fmt: skip
        meta = process_config(args)
    return {**meta["config"], **meta["stage_config"]["stage1"]}


def their_networks(config: dict, class_freq: list[torch.Tensor]) -> dict[str, nn.Module]:
    """Their networks as their trainers build them, by the names of their saved files."""
    import models

    mc = tuple(config[k] for k in ("image_size", "image_channels", "conv_channels"))
    mc += (config["conv_layers"], config["fc_features"])
    enc, dis = config["enc_gen_fc_layers"], config["dis_cla_fc_layers"]
    nclass = [len(p) for p in class_freq]
    unknown, labeled = config["unknown_size"], config["labeled_size"]
    d_config = (config["image_size"], 2 * config["image_channels"], *mc[2:])
    return {
        "E": models.Encoder(*mc, enc, [unknown], zero_init=config["zero_init"]),
        "G1": models.Generator(*mc, enc, [unknown, *labeled]),
        "C": models.Stage1CompoundClassifier(
            *mc, dis, unknown, config["code_cla1_features"], config["code_cla1_layers"], nclass
        ),
        "B1": models.MultiLabelEmbedder(nclass, labeled, class_freq, config["labeled_init"]),
        "R": models.Stage2Classifier(*mc, dis, nclass),
        "G2": models.Generator(*mc, enc, [unknown, *labeled]),
        "B2": models.MultiLabelEmbedder(nclass, labeled, class_freq),
        "D": models.Discriminator(*d_config, dis),
        "S": models.Encoder(*mc, enc, labeled, zero_init=True),
    }


def compare(paths: list[Path]) -> Comparison:
    found = checkouts(paths, NEEDS)
    root = found[DISUNKNOWN].path
    comparison = Comparison(found, configs={DISUNKNOWN: CONFIG})
    comparison.notes.append(
        "class frequencies: a fixed uneven set (theirs come from the dataset file); "
        "their trainer built only as far as iter_func reads it"
    )
    ours = our_disunknown()
    with importable(root):
        config = their_config(root)
        compare_settings(comparison, ours, config)
        class_freq = [embedder.frequencies.float() for embedder in ours.stage1_embedder]
        theirs = their_networks(config, class_freq)
        for name, network in theirs.items():
            manifest = f"disunknown-{name}"
            state = load_into(network, ours, layout("disunknown", manifest))
            comparison.manifests[manifest] = (DISUNKNOWN, f"{name}: models.models, {CONFIG}", state)
        compare_networks(comparison, ours, theirs)
        compare_stage1(comparison, ours, theirs, config, class_freq)
    return comparison


def compare_settings(comparison: Comparison, ours: DisUnknown, config: dict) -> None:
    keep = torch.tensor(config["unknown_keep_prob"])
    comparison.add("unknown keep probabilities", ours.unknown_keep, keep)
    for k, probs in enumerate(config["labeled_keep_prob"]):
        keep = getattr(ours, f"keep_{k}")
        comparison.add(f"{ours.config.labeled[k]} keep probabilities", keep, torch.tensor(probs))
    sizes = torch.tensor([config["unknown_size"], *config["labeled_size"]])
    comparison.add("code sizes", torch.tensor(ours.code_units), sizes)


def compare_networks(comparison: Comparison, ours: DisUnknown, theirs: dict) -> None:
    x = inputs((BATCH, 3, 64, 64), seed=1).tanh()
    y = inputs((BATCH, 3, 64, 64), seed=2).tanh()
    labels = labels_of(BATCH, seed=3)
    codes = [inputs((BATCH, n), seed=4 + i) for i, n in enumerate(ours.code_units)]
    keeps = [(inputs((BATCH, n), seed=10 + i) > 0).float() for i, n in enumerate(ours.code_units)]
    unknown = codes[0], keeps[0]  # C's code input: the unknown code and its keep mask
    with torch.no_grad():
        for name, encoder in (("E", ours.unknown_encoder), ("S", ours.labeled_encoder)):
            for i, (a, b) in enumerate(zip(encoder(x), theirs[name](x), strict=True)):
                comparison.add(f"{name}(x) block {i} mean", a[0], b[0])
                comparison.add(f"{name}(x) block {i} std", a[1], b[1])
        for name, generator in (("G1", ours.stage1_generator), ("G2", ours.generator)):
            image, std = generator(codes, keeps)
            their_image, their_std = theirs[name](*codes, *keeps)
            comparison.add(f"{name} image", image, their_image)
            comparison.add(f"{name} σ", std, their_std)
        pairs = zip(ours.stage1_classifier(y, *unknown), theirs["C"](y, *unknown), strict=True)
        for i, (a, b) in enumerate(pairs):
            comparison.add(f"C log p, factor {i}", a, b)
        for name, embedders in (("B1", ours.stage1_embedder), ("B2", ours.embedder)):
            pairs = zip(ours._embed(embedders, labels), theirs[name](labels), strict=True)
            for i, (a, b) in enumerate(pairs):
                comparison.add(f"{name} factor {i} (mean, std)", torch.stack(a), torch.stack(b))
            losses = torch.cat([b.code_loss() for b in embedders])
            comparison.add(f"{name} code loss", losses, torch.cat(theirs[name].code_loss()))
        compare_critics(comparison, ours, theirs, x, y)


def compare_critics(comparison: Comparison, ours: DisUnknown, theirs: dict, x, y) -> None:
    real_classes = [F.log_softmax(t[:, :-1], 1) for t in ours.label_classifier(x)]
    for i, (a, b) in enumerate(zip(real_classes, theirs["R"](x), strict=True)):
        comparison.add(f"R log p (real classes), factor {i}", a, b)
    paired = ours.label_classifier.paired(x, y, None, reflect=True)
    their_paired = theirs["R"](x, y, reflect=True)
    for part, mine, their in zip(PARTS, paired, their_paired, strict=True):
        for i, (a, b) in enumerate(zip(mine, their, strict=True)):
            comparison.add(f"R paired {part}, factor {i}", F.log_softmax(a, 1)[:, :-1], b)
    x6, y6 = torch.cat([x, y], 1), torch.cat([y, x], 1)
    comparison.add("D(x)", ours.discriminator(x6)[0].squeeze(1), theirs["D"](x6))
    paired = ours.discriminator.paired(x6, y6, None, reflect=True)
    for part, a, b in zip(PARTS, paired, theirs["D"](x6, y6, reflect=True), strict=True):
        comparison.add(f"D paired {part}", a[0].squeeze(1), b)


def labels_of(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(c, (n,), generator=generator) for c in CLASSES.values()], 1)


def compare_stage1(comparison: Comparison, ours: DisUnknown, theirs: dict, config, class_freq):
    x = inputs((BATCH, 3, 64, 64), seed=20).tanh()
    labels = labels_of(BATCH, seed=21)
    records: list[tuple[str, torch.Tensor]] = []
    with recording(records, RANDOM):
        _, logs = ours._stage1(x, labels, torch.Generator().manual_seed(22))
    # Their offsets: one per image, of which the first k are used (ours draws k).
    kind, offsets = records[0]
    unused = torch.ones(BATCH - len(offsets), dtype=offsets.dtype)
    records[0] = (kind, torch.cat([offsets, unused]))

    E, G, C, B = (theirs[k] for k in ("E", "G1", "C", "B1"))
    logged: dict[str, float] = {}
    trainer = their_stage1(config, E, G, C, B, class_freq)
    trainer.next_batch = lambda: (x, labels)
    trainer.log = lambda **values: logged.update(values)
    with replaying(records, RANDOM), mock.patch.object(trainer.optimizer, "step", lambda: None):
        trainer.iter_func()
    # Their KL logs are unweighted sums (the loss weighs each dimension by its keep
    # probability); the two logs that are the loss's own terms are compared.
    for name in ("rec", "cla1"):
        comparison.add(f"stage 1 {name}", logs[name], torch.tensor(logged[name]))
    ours_grads = gradients(ours)
    for manifest, network in (("E", E), ("G1", G), ("C", C), ("B1", B)):
        entry = layout("disunknown", f"disunknown-{manifest}")
        keymap = [piece for piece in entry.keymap(ours) if piece.ours[0] in ours_grads]
        mapped = to_authors({p.ours[0]: ours_grads[p.ours[0]] for p in keymap}, keymap)
        theirs_grads = gradients(network)
        keys = sorted(theirs_grads)
        comparison.add(
            f"stage 1 gradient of {manifest}",
            torch.cat([mapped[k].flatten() for k in keys]),
            torch.cat([theirs_grads[k].flatten() for k in keys]),
        )


def their_stage1(config: dict, E, G, C, B, class_freq: list[torch.Tensor]):
    """Their ``Stage1Trainer`` with what ``iter_func`` reads: the config, the networks, the
    optimizer its ``__init__`` builds, the keep probabilities, at full learning rate."""
    from trainers.Stage1Trainer import Stage1Trainer
    from trainers.utils import cla1_adv_nlu

    trainer = Stage1Trainer.__new__(Stage1Trainer)
    trainer.__dict__.update(config)
    groups = [{"params": m.parameters()} for m in (E, G, C)]
    groups.append({"params": B.parameters(), "lr": config["emb_lr"]})
    trainer.__dict__.update(
        E=E,
        G=G,
        C=C,
        B=B,
        optimizer=torch.optim.Adam(groups, lr=config["lr"], eps=1e-8),
        batch_size=BATCH,
        current_iter=config["lr_ramp"],
        class_freq=class_freq,
        cla1_adv_func=cla1_adv_nlu,
        uprob=torch.tensor(config["unknown_keep_prob"]),
        lprob=[torch.tensor(p) for p in config["labeled_keep_prob"]],
    )
    return trainer


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient (zeros where none reached it)."""
    return {
        key: torch.zeros_like(p) if p.grad is None else p.grad
        for key, p in module.named_parameters()
    }
