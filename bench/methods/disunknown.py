"""DisUnknown (Xiang et al., ICCV 2021, "Distilling Unknown Factors for Disentanglement
Learning"), as stormraiser/disunknown @194cc01 trains it (methods-more.md §2).

Some factors are labelled (``labeled``: their class per image); every other factor is
bundled into one "unknown" code u. One run is the authors' four stages in turn, each with
its own Adam whose learning rate ramps up over its first ``lr_ramp`` steps:

1. ``stage1`` — distil the unknown factor. E(x) → q(u|x); a label embedder B gives each
   labelled factor's class a Gaussian code; G(u, labels) → image and a learned per-image σ,
   scored by the Gaussian NLL. So that u carries no label information, an adversary C
   (image classifier on a "cross" image — x's u with another image's labels — plus an MLP on
   u) learns x's true labels, and E and G's FC layers are pushed by the "negative log
   unlikelihood" −log(1 − p(true label)), weighted by 1/freq − 1; G's conv layers see no
   adversarial gradient. KL terms keep u and B's codes near N(0, I); nested dropout
   replaces dropped code dimensions by prior samples and tells G which were dropped.
2. ``classifier`` — pre-train the stage-2 classifier R (k + 1 classes per factor) on real
   images.
3. ``stage2`` — the final generator G2 (from G1), a least-squares GAN with the discriminator
   D seeing each image beside what the frozen stage-1 generator makes of the same (u,
   labels) (``unknown_mode: dis``), D's "reflect" trick, R adversarial (NLL on real, −log(1 −
   p) on fakes) while G2 minimises R's NLL of the target labels on cross images, and a
   reconstruction branch; B keeps training. u is sampled from E's (frozen) posterior.
4. ``lenc`` — the labelled encoder S(x) → a Gaussian per labelled factor, trained to match
   the embedding of x's labels: KL(B2(label) ‖ S(x)).

Every backward pass routes gradients as the authors' trainers do: detached leaves stand for
the generated images and codes, each loss is differentiated with respect to what it may
move, and the pieces meet in one backward through the generator (``train_step``).

Representation: the posterior means [E(x) ; S(x) per labelled factor]; each block is a unit
of the PCA(1) protocol (``code_units``). The labelled blocks are supervised, so the run also
scores the unknown factors on the E block alone (its ``Supervision``), and reports mark it
weakly supervised.

Not offered: the authors' other modes (``cla1_mode`` image/code, ``unknown_mode: mse``,
``use_embedding: false``, ``random_ucode``) and their all-labelled / all-unknown trainers;
u in stage 2 is E's posterior computed on the batch (the authors store it for the training
set after stage 1: the same numbers, E being frozen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import autograd, nn

from bench.datasets.labels import factor_labels, label_columns
from bench.errors import BenchError
from bench.methods.base import Method, MethodConfig, ScoreSubset, Supervision
from bench.methods.disunknown_networks import (
    CodeClassifier,
    CompoundClassifier,
    Critic,
    GaussianEncoder,
    Generator,
    LabelEmbedder,
    Layout,
)
from bench.methods.pictures import Grid, to_tensor, write_png
from bench.methods.trainer import Batch, Trainer
from bench.precision import Precision, autocast, training_precision

PHASES = ("stage1", "classifier", "stage2", "lenc")


@dataclass
class FactorCode:
    """A labelled factor's code (the authors' per-dataset ``factors`` entries)."""

    size: int = 2
    dropout: list[float] | None = None  # nested-dropout parameters; None: keep every dimension
    init: str | None = None  # linear | circle | None


@dataclass
class DisUnknownConfig(MethodConfig):
    name: str = "disunknown"
    labeled: list[str] = field(default_factory=list)
    factors: dict[str, FactorCode] = field(default_factory=dict)  # code spec per factor
    unknown_size: int | None = None  # None: the unknown factors' sizes summed
    unknown_dropout: list[float] | None = None  # None: their keep probabilities, sorted
    conv_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    fc_features: int = 512
    enc_gen_fc_layers: int = 2
    dis_cla_fc_layers: int = 0
    code_cla1_features: int = 512
    code_cla1_layers: int = 2
    steps: dict[str, int] = field(
        default_factory=lambda: {
            "stage1": 200000,
            "classifier": 100000,
            "stage2": 200000,
            "lenc": 100000,
        }
    )
    lr: float = 1e-4
    emb_lr: float = 1e-3
    stage2_lr: float = 5e-5
    lr_ramp: int = 100
    rec_weight: float = 1.0
    ucode_weight: float = 0.001
    ubatch_weight: float = 0.1
    lcode_weight: float = 0.001
    cla1_weight: float = 0.5
    enc_freeze: int = 0  # stage-1 steps before E's learning rate starts its ramp
    emb_freeze: int = 0  # likewise for B
    dis_weight: float = 1.0
    cla2_weight: float = 1.0
    cla2_fake_weight: float = 1.0
    nested_dropout: bool = True
    random_offset: bool = True
    picture_images: int = 6
    # dSprites: the authors' relabel_orientation (square 4·o mod 39, ellipse 2·o mod 39;
    # ``class_labels``), with orientation 39 left out of training (data.exclude).
    fold_orientation: bool = False
    notes: list[str] = field(default_factory=list)  # known differences from the authors' setup
    # From the dataset unless given (``configure_for``): each labelled factor's class
    # frequencies, and the factors left unlabelled.
    class_frequencies: list[list[float]] = field(default_factory=list)
    unknown_factors: list[str] = field(default_factory=list)


def keep_probabilities(size: int, dropout: list[float] | None) -> list[float]:
    """The authors' nested-dropout schedule: dimension 0 always kept, then the listed
    probabilities, the rest interpolated geometrically towards the last one."""
    if dropout is None:
        return [1.0] * size
    listed = [1.0, *dropout]
    if size <= len(listed):
        return listed[:size]
    ratio = (listed[-1] / listed[-2]) ** (1 / (size - len(listed) + 1))
    return listed[:-1] + [listed[-2] * ratio ** (k + 1) for k in range(size - len(listed) + 1)]


def gaussian_noise(n: int, dims: int, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) samples (n, dims), stratified per dimension: one uniform draw in each of n equal
    slices of (−1, 1) in random order, through √2·erfinv."""
    device = generator.device
    strata = torch.stack(
        [torch.randperm(n, generator=generator, device=device) for _ in range(dims)], 1
    ).float()
    u = (strata + torch.rand(n, dims, generator=generator, device=device)) / n
    return torch.erfinv(u * 1.99998 - 0.99999) * math.sqrt(2)


def drop_and_sample(
    mean: torch.Tensor, std: torch.Tensor, keep: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nested dropout, then a sample: per image a level ~ U(0, 1) drops every dimension whose
    keep probability is below it; dropped dimensions are drawn from the prior N(0, 1).
    Returns (keep mask as floats, sample)."""
    level = torch.rand(len(mean), generator=generator, device=mean.device)
    kept = keep[None, :] >= level[:, None]
    mean = torch.where(kept, mean, torch.zeros_like(mean))
    std = torch.where(kept, std, torch.ones_like(std))
    return kept.float(), mean + std * gaussian_noise(*std.shape, generator).to(std)


def gaussian_nll(images: torch.Tensor, target: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """−log N(target; images, σ²) per pixel, σ one per image, averaged: mse/(2σ²) + log σ +
    ½ log 2π."""
    mse = (images - target).pow(2).mean((1, 2, 3))
    return (mse / std.pow(2) / 2 + std.log() + math.log(2 * math.pi) / 2).mean()


def code_kl(
    mean: torch.Tensor, std: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(q(u|x) ‖ N(0, I)) averaged over the batch, KL of the batch's moment-matched
    Gaussian to N(0, I)), both summed over dimensions weighted by their keep probability."""
    kl = ((mean.pow(2) + std.pow(2)) * 0.5 - std.log() - 0.5).mean(0)
    n = len(mean)
    batch_mean = mean.mean(0)
    batch_var = (mean.pow(2).mean(0) - batch_mean.pow(2)) * (n / (n - 1)) + std.pow(2).mean(0)
    batch_kl = (batch_mean.pow(2) + batch_var - batch_var.log() - 1) * 0.5
    return kl.mul(keep).sum(), batch_kl.mul(keep).sum()


def nll(log_probs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    return sum(F.nll_loss(p, t) for p, t in zip(log_probs, labels.t(), strict=True))


def unlikelihood(
    log_probs: list[torch.Tensor],
    labels: torch.Tensor,
    frequencies: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """−log(1 − p(true label)), averaged and summed over factors; with ``frequencies`` each
    image weighted by 1/freq(label) − 1 (stage 1's ``cla1_adv_nlu``)."""
    total = 0
    for k, (p, t) in enumerate(zip(log_probs, labels.t(), strict=True)):
        loss = -(1 - p.gather(1, t[:, None]).squeeze(1).exp()).clamp(min=1e-8).log()
        if frequencies is not None:
            loss = loss * (frequencies[k][t].clamp(min=1e-8).reciprocal() - 1)
        total = total + loss.mean()
    return total


def kl_to(target: tuple[torch.Tensor, torch.Tensor], q: tuple[torch.Tensor, torch.Tensor]):
    """KL(N(target) ‖ N(q)) summed over dimensions, averaged over the batch (``normal_kld``)."""
    (p_mean, p_std), (q_mean, q_std) = target, q
    ratio = (p_std.pow(2) + (p_mean - q_mean).pow(2)) / q_std.pow(2)
    return (ratio * 0.5 - 0.5 + q_std.log() - p_std.log()).sum(1).mean()


def roll(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The batch rotated by k (a device scalar, never read back): row i gets row i + k (the
    authors' label shuffling)."""
    return t[(torch.arange(len(t), device=t.device) + k) % len(t)]


def class_labels(values: torch.Tensor, config: DisUnknownConfig) -> torch.Tensor:
    """The classes (B, k) the networks learn for the labelled factors' value indices
    ``values``: the values themselves, but with ``fold_orientation`` dSprites' orientation
    as the authors' loader relabels it (data/dsprites.py): a square's o → 4·o mod 39, an
    ellipse's → 2·o mod 39, a heart's kept (shapes 0, 1, 2)."""
    if not config.fold_orientation:
        return values
    shape = values[:, config.labeled.index("shape")]
    k = config.labeled.index("orientation")
    o = values[:, k]
    folded = torch.where(shape == 0, 4 * o % 39, torch.where(shape == 1, 2 * o % 39, o))
    return torch.cat([values[:, :k], folded[:, None], values[:, k + 1 :]], 1)


class DisUnknown(Method):
    config_class = DisUnknownConfig

    def __init__(self, config: DisUnknownConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        if not config.labeled:
            raise BenchError(
                "disunknown needs labelled factors: name them with method.labeled=[...] "
                "(the others form the unknown code)"
            )
        if len(config.class_frequencies) != len(config.labeled):
            raise BenchError(
                "disunknown: the class frequencies of its labelled factors come from the "
                "dataset (build it with bench.build.build_method)"
            )
        if not config.unknown_factors:
            raise BenchError(
                "disunknown with every factor labelled is the authors' all-labelled variant, "
                "not offered here: leave at least one factor out of method.labeled"
            )
        size, _, channels = image_shape
        c = config
        self.labeled_sizes = [self._code(f).size for f in c.labeled]
        unknown = c.unknown_factors
        self.unknown_size = c.unknown_size or sum(self._code(f).size for f in unknown)
        if c.unknown_size is None and c.unknown_dropout is None:
            keep = sorted((p for f in unknown for p in self._keep(self._code(f))), reverse=True)
        else:
            keep = keep_probabilities(self.unknown_size, c.unknown_dropout)
        ones = not c.nested_dropout
        self.register_buffer("unknown_keep", torch.tensor([1.0] * len(keep) if ones else keep))
        for k, factor in enumerate(c.labeled):
            probs = self._keep(self._code(factor))
            self.register_buffer(f"keep_{k}", torch.tensor([1.0] * len(probs) if ones else probs))
        frequencies = [torch.tensor(f) for f in c.class_frequencies]
        classes = [len(f) for f in frequencies]
        layout = Layout(size, channels, tuple(c.conv_channels), c.fc_features)
        codes = [self.unknown_size, *self.labeled_sizes]

        def embedder() -> nn.ModuleList:
            return nn.ModuleList(
                LabelEmbedder(f, s, self._code(n).init)
                for f, s, n in zip(frequencies, self.labeled_sizes, c.labeled, strict=True)
            )

        # Stage 1.
        self.unknown_encoder = GaussianEncoder(layout, c.enc_gen_fc_layers, [self.unknown_size])
        self.stage1_generator = Generator(layout, c.enc_gen_fc_layers, codes)
        self.stage1_classifier = CompoundClassifier(
            Critic(layout, c.dis_cla_fc_layers, classes),
            CodeClassifier(self.unknown_size, c.code_cla1_features, c.code_cla1_layers, classes),
        )
        self.stage1_embedder = embedder()
        # Classifier pre-training and stage 2; the discriminator sees 2·C channels (dis mode).
        self.label_classifier = Critic(layout, c.dis_cla_fc_layers, [m + 1 for m in classes])
        self.generator = Generator(layout, c.enc_gen_fc_layers, codes)
        self.embedder = embedder()
        paired = replace(layout, channels=2 * channels)
        self.discriminator = Critic(paired, c.dis_cla_fc_layers, [1])
        # The labelled encoder.
        self.labeled_encoder = GaussianEncoder(
            layout, c.enc_gen_fc_layers, self.labeled_sizes, zero_init=True
        )
        self.code_units = codes
        self.supervision = Supervision(
            tuple(c.labeled),
            {
                "unknown": ScoreSubset(
                    dims=(0, self.unknown_size),
                    excluded_factors=list(c.labeled),
                    description="the factors not labelled, scored on the unknown code E(x) alone",
                ),
                # PCA(1) per block folds a 2-d circle code (a hue) onto one axis, which lowers
                # that factor's score whatever the model learned: the raw view shows by how
                # much.
                "raw": ScoreSubset(
                    dims=(0, sum(codes)),
                    excluded_factors=[],
                    description="every factor on every code dimension as it is (eval.reduce=none)",
                ),
            },
        )

    # --- configuration -------------------------------------------------------------------

    @classmethod
    def configure_for(
        cls, config: DisUnknownConfig, dataset, rows: np.ndarray | None = None
    ) -> DisUnknownConfig:
        """The labelled factors' classes and their frequencies over the training ``rows``
        (the authors' ``class_freq`` of the training labels): each factor's classes run up to
        the largest label training sees (39 dSprites orientations once the 40th is left out).
        Frequencies and unknown factors given in the config are kept as they are."""
        if config.class_frequencies and config.unknown_factors:
            return config

        unknown = [f for f in dataset.factor_names if f not in config.labeled]
        if not config.labeled:
            return replace(config, unknown_factors=unknown)
        if config.fold_orientation and not {"shape", "orientation"} <= set(config.labeled):
            raise BenchError(
                "disunknown: method.fold_orientation folds dSprites' orientation by its shape; "
                "label both (method.labeled=[shape,...,orientation])"
            )
        columns = label_columns(dataset, list(config.labeled))
        rows = np.arange(len(dataset)) if rows is None else rows
        values = torch.from_numpy(factor_labels(dataset, rows, columns))
        labels = class_labels(values, config)
        frequencies = [
            (torch.bincount(t, minlength=int(t.max()) + 1).double() / len(t)).tolist()
            for t in labels.t()
        ]
        return replace(config, class_frequencies=frequencies, unknown_factors=unknown)

    def _code(self, factor: str) -> FactorCode:
        return self.config.factors.get(factor) or FactorCode()

    def _keep(self, code: FactorCode) -> list[float]:
        return keep_probabilities(code.size, code.dropout)

    def deviations(self) -> list[str]:
        c = self.config
        # The unknown factors' sizes matter only when they make up the unknown code's.
        sized = c.labeled if c.unknown_size is not None else [*c.labeled, *c.unknown_factors]
        unspecified = [f for f in sized if f not in c.factors]
        found = list(c.notes)
        if unspecified:
            found.append(
                f"no code size from the authors for {', '.join(unspecified)}: "
                "2 dimensions without nested dropout (ours)"
            )
        return found

    @staticmethod
    def stage_steps(config: DisUnknownConfig) -> dict[str, int]:
        """Each stage's steps, in order."""
        return {p: int(config.steps[p]) for p in PHASES}

    def phase_steps(self) -> dict[str, int]:
        return self.stage_steps(self.config)

    def phase_of(self, step: int) -> tuple[str, int]:
        """(phase, its 1-based step) of run step ``step`` (0-based)."""
        for phase, steps in self.phase_steps().items():
            if step < steps:
                return phase, step + 1
            step -= steps
        raise BenchError(f"disunknown: step {step} is past its last stage")

    # --- training ------------------------------------------------------------------------

    def trainer(self, train: DictConfig, device: torch.device) -> DisUnknownTrainer:
        return DisUnknownTrainer(self, train, device)

    def stage_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam per stage, as the authors' trainers build them (eps 1e-8); the ramps set
        each group's learning rate at every step."""
        c = self.config

        def adam(groups: list[dict]) -> torch.optim.Optimizer:
            return torch.optim.Adam(groups, lr=c.lr, eps=1e-8)

        def params(*modules: nn.Module) -> dict:
            return {"params": [p for m in modules for p in m.parameters()]}

        return {
            "stage1": adam(
                [
                    params(self.unknown_encoder),
                    params(self.stage1_generator),
                    params(self.stage1_classifier),
                    params(self.stage1_embedder),
                ]
            ),
            "classifier": adam([params(self.label_classifier)]),
            "stage2": adam(
                [
                    params(self.generator),
                    params(self.discriminator),
                    params(self.embedder),
                    params(self.label_classifier),
                ]
            ),
            "lenc": adam([params(self.labeled_encoder)]),
        }

    def train_step(
        self,
        batch: Batch,
        generator: torch.Generator,
        step: int,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run step ``step`` (0-based): its stage's losses, backward passes and optimizer
        step, with the stage's learning-rate ramps."""
        phase, it = self.phase_of(step)
        if phase == "stage2" and it == 1:
            self._begin_stage2()
        optimizer = optimizers[phase]
        self._ramp(phase, it, optimizer)
        optimizer.zero_grad(set_to_none=True)
        x = batch.images * 2 - 1  # the authors' Normalize(0.5, 0.5)
        labels = class_labels(batch.labels, self.config)
        step_fn = {
            "stage1": self._stage1,
            "classifier": self._classifier,
            "stage2": self._stage2,
            "lenc": self._lenc,
        }[phase]
        loss, logs = step_fn(x, labels, generator)
        optimizer.step()
        return loss, {**logs, "stage": torch.tensor(float(PHASES.index(phase) + 1))}

    def _ramp(self, phase: str, it: int, optimizer: torch.optim.Optimizer) -> None:
        c = self.config

        def ramp(start: int = 0) -> float:
            return min(max((it - start) / c.lr_ramp, 0.0), 1.0)

        groups = optimizer.param_groups
        if phase == "stage1":  # E, G, C, B
            rates = [
                c.lr * ramp(c.enc_freeze),
                c.lr * ramp(),
                c.lr * ramp(),
                c.emb_lr * ramp(c.emb_freeze),
            ]
        elif phase == "stage2":  # G, D, B, R
            rates = [
                c.stage2_lr * ramp(),
                c.stage2_lr * ramp(),
                c.emb_lr * ramp(),
                c.stage2_lr * ramp(),
            ]
        else:
            rates = [c.lr * ramp()]
        for group, rate in zip(groups, rates, strict=True):
            group["lr"] = rate

    def _begin_stage2(self) -> None:
        """G2 and B2 start from stage 1's G and B, which stay as they are (the frozen G1 and
        B1 of the discriminator's ``dis`` input)."""
        with torch.no_grad():
            for new, old in (
                (self.generator, self.stage1_generator),
                (self.embedder, self.stage1_embedder),
            ):
                for p, q in zip(new.parameters(), old.parameters(), strict=True):
                    p.copy_(q)

    def _label_keeps(self) -> list[torch.Tensor]:
        return [getattr(self, f"keep_{k}") for k in range(len(self.config.labeled))]

    def _embed(
        self, embedder: nn.ModuleList, labels: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [b(t) for b, t in zip(embedder, labels.t(), strict=True)]

    def _embedding_kl(self, embedder: nn.ModuleList) -> torch.Tensor:
        keeps = self._label_keeps()
        return sum(b.code_loss().mul(p).sum() for b, p in zip(embedder, keeps, strict=True))

    def _sample_labels(
        self, params: list[tuple[torch.Tensor, torch.Tensor]], generator: torch.Generator
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pairs = [
            drop_and_sample(m, s, p, generator)
            for (m, s), p in zip(params, self._label_keeps(), strict=True)
        ]
        return [k for k, _ in pairs], [code for _, code in pairs]

    def _offsets(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Per labelled factor, a rotation 1 ≤ k < B of the batch: the "other image" whose
        label a cross image takes."""
        k = len(self.config.labeled)
        return torch.randint(1, batch, (k,), generator=generator, device=generator.device)

    def _stage1(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        G, C = self.stage1_generator, self.stage1_classifier
        freqs = [b.frequencies for b in self.stage1_embedder]
        offsets = self._offsets(len(x), generator)
        other = torch.stack([roll(t, k) for t, k in zip(labels.t(), offsets, strict=True)], 1)

        ((umean, ustd),) = self.unknown_encoder(x)
        ukeep, ucode = drop_and_sample(umean, ustd, self.unknown_keep, generator)
        ukl, ubatch = code_kl(umean, ustd, self.unknown_keep)
        u = ucode.detach().requires_grad_()  # gathers G's gradients for E

        lkeep, lcode = self._sample_labels(self._embed(self.stage1_embedder, labels), generator)
        lkl = self._embedding_kl(self.stage1_embedder)
        rec, rec_std = G([u, *lcode], [ukeep, *lkeep])
        rec_loss = gaussian_nll(rec, x, rec_std)
        (rec_loss * c.rec_weight).backward()

        # The cross image (x's u, others' labels): no adversarial gradient for G's convs.
        okeep, ocode = self._sample_labels(self._embed(self.stage1_embedder, other), generator)
        for p in G.conv.parameters():
            p.requires_grad_(False)
        cross = G([u, *ocode], [ukeep, *okeep])[0]
        for p in G.conv.parameters():
            p.requires_grad_(True)
        cross_leaf = cross.detach().requires_grad_()
        u_leaf = ucode.detach().requires_grad_()
        log_probs = C(cross_leaf, u_leaf, ukeep)
        cla1_loss = nll(log_probs, labels)  # C learns the true labels
        cla1_loss.backward(retain_graph=True)
        adversarial = unlikelihood(log_probs, labels, freqs) * c.cla1_weight
        cross_grad, u_grad = autograd.grad(adversarial, [cross_leaf, u_leaf])
        cross.backward(cross_grad)  # G's FC layers, B and (through u) E
        kl = ukl * c.ucode_weight + ubatch * c.ubatch_weight + lkl * c.lcode_weight
        autograd.backward([ucode, kl], [u.grad + u_grad, None])
        return rec_loss.detach(), {
            "rec": rec_loss.detach(),
            "ucode": ukl.detach(),
            "ubatch": ubatch.detach(),
            "lcode": lkl.detach(),
            "cla1": cla1_loss.detach(),
        }

    def _classifier(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.label_classifier(x, self._shift(generator))
        loss = nll([F.log_softmax(t[:, :-1], 1) for t in logits], labels)  # real classes only
        loss.backward()
        return loss.detach(), {"cla2": loss.detach()}

    def _shift(self, generator: torch.Generator) -> torch.Generator | None:
        return generator if self.config.random_offset else None

    def _stage2(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        G, D, R = self.generator, self.discriminator, self.label_classifier
        shift = self._shift(generator)
        half = 0.5  # the authors' branch_factor with the reconstruction branch on
        offsets = self._offsets(len(x), generator)
        other = torch.stack([roll(t, k) for t, k in zip(labels.t(), offsets, strict=True)], 1)

        def with_fake(log_probs: list[torch.Tensor]) -> list[torch.Tensor]:
            return [F.log_softmax(t, 1)[:, :-1] for t in log_probs]  # k + 1 classes

        with torch.no_grad():
            ((umean, ustd),) = self.unknown_encoder(x)
        ucode = umean + ustd * gaussian_noise(*ustd.shape, generator).to(ustd)
        lkl = self._embedding_kl(self.embedder)
        lkeep, lcode = self._sample_labels(self._embed(self.embedder, labels), generator)
        lcode_leaf = [t.detach().requires_grad_() for t in lcode]
        with torch.no_grad():  # stage 1's view of the same codes: D's second input
            fixed_codes = [m for m, _ in self._embed(self.stage1_embedder, labels)]
            fixed = self.stage1_generator([ucode, *fixed_codes], [None] * len(self.code_units))[0]

        # Reconstruction branch.
        rec, rec_std = G([ucode, *lcode_leaf], [None, *lkeep])
        rec_leaf = rec.detach().requires_grad_()
        rec_loss = gaussian_nll(rec_leaf, x, rec_std)
        rec_grad = autograd.grad(rec_loss * c.rec_weight, rec_leaf)[0]
        real_out, rec_out, mirror_out = D.paired(
            torch.cat((x, fixed), 1), torch.cat((rec_leaf, fixed), 1), shift, reflect=True
        )
        d_real = (real_out[0] - 1).pow(2).mean()
        d_rec = ((rec_out[0] + 1).pow(2).mean() + (mirror_out[0] + 1).pow(2).mean()) / 2
        g_rec = rec_out[0].pow(2).mean()
        (d_real + d_rec * half).backward(retain_graph=True)
        rec_dis_grad = autograd.grad(g_rec * c.dis_weight * half, rec_leaf)[0]
        r_real, r_rec, r_mirror = R.paired(x, rec_leaf, shift, reflect=True)
        r_real, r_rec, r_mirror = with_fake(r_real), with_fake(r_rec), with_fake(r_mirror)
        c_real = nll(r_real, labels)
        c_rec = (unlikelihood(r_rec, labels) + unlikelihood(r_mirror, labels)) / 2
        (c_real + c_rec * c.cla2_fake_weight * half).backward(retain_graph=True)
        g_cla_rec = nll(r_rec, labels)
        rec_cla_grad = autograd.grad(g_cla_rec * c.cla2_weight * half, rec_leaf)[0]
        rec.backward(rec_grad + rec_dis_grad + rec_cla_grad)

        # Cross branch: u with the other images' labels.
        ocode = [roll(t, k) for t, k in zip(lcode_leaf, offsets, strict=True)]
        okeep = [roll(t, k) for t, k in zip(lkeep, offsets, strict=True)]
        cross = G([ucode, *ocode], [None, *okeep])[0]
        cross_leaf = cross.detach().requires_grad_()
        with torch.no_grad():
            ofixed = [roll(t, k) for t, k in zip(fixed_codes, offsets, strict=True)]
            cross_fixed = self.stage1_generator([ucode, *ofixed], [None] * len(self.code_units))[0]
        cross_out = D(torch.cat((cross_leaf, cross_fixed), 1), shift)[0].squeeze(1)
        d_cross = (cross_out + 1).pow(2).mean()
        g_cross = cross_out.pow(2).mean()
        (d_cross * half).backward(retain_graph=True)
        cross_dis_grad = autograd.grad(g_cross * c.dis_weight * half, cross_leaf)[0]
        r_cross = with_fake(R(cross_leaf, shift))
        c_cross = unlikelihood(r_cross, other)
        (c_cross * c.cla2_fake_weight * half).backward(retain_graph=True)
        g_cla_cross = nll(r_cross, other)
        cross_cla_grad = autograd.grad(g_cla_cross * c.cla2_weight * half, cross_leaf)[0]
        cross.backward(cross_dis_grad + cross_cla_grad)

        autograd.backward([*lcode, lkl * c.lcode_weight], [t.grad for t in lcode_leaf] + [None])
        g_dis = (g_rec + g_cross).detach() / 2
        return g_dis, {
            "rec": rec_loss.detach(),
            "lcode": lkl.detach(),
            "dreal": d_real.detach(),
            "dfake": (d_rec + d_cross).detach() / 2,
            "gdis": g_dis,
            "creal": c_real.detach(),
            "cfake": (c_rec + c_cross).detach() / 2,
            "gcla": (g_cla_rec + g_cla_cross).detach() / 2,
        }

    def _lenc(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            targets = self._embed(self.embedder, labels)
        loss = sum(kl_to(t, q) for t, q in zip(targets, self.labeled_encoder(x), strict=True))
        loss.backward()
        return loss.detach(), {"lenc": loss.detach()}

    # --- using the trained model ---------------------------------------------------------

    @property
    def representation_dim(self) -> int:
        return sum(self.code_units)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 2 - 1
        ((umean, _),) = self.unknown_encoder(x)
        return torch.cat([umean, *[m for m, _ in self.labeled_encoder(x)]], 1)

    @torch.no_grad()
    def decode(self, unknown: torch.Tensor, label_codes: list[torch.Tensor]) -> torch.Tensor:
        """The final generator's image in [0, 1] for codes (every dimension kept)."""
        image = self.generator([unknown, *label_codes], [None] * len(self.code_units))[0]
        return image.add(1).div(2).clamp(0, 1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        """Reconstructions through the final generator from the scored code: E(x)'s mean and
        S(x)'s means (deterministic; ``seed`` and ``steps`` unused)."""
        del seed, steps
        code = self.encode(images)
        blocks = list(code.split(self.code_units, 1))
        return self.decode(blocks[0], blocks[1:])

    @torch.no_grad()
    def pictures(self, dataset, folder: Path, device: torch.device) -> list[Path]:
        """``swap.png``: the authors' grid — column j takes image j's unknown code (top row),
        row i image i's labels (left column). ``classes.png``: the first image with each
        labelled factor (a row) set to each of its classes, its unknown code kept."""
        self.eval()
        n = self.config.picture_images
        # Images whose labels are classes the run learnt (not an orientation left out).
        columns = label_columns(dataset, list(self.config.labeled))
        values = factor_labels(dataset, np.arange(len(dataset)), columns)
        labels = class_labels(torch.from_numpy(values), self.config)
        learnt = (labels < torch.tensor([len(f) for f in self.config.class_frequencies])).all(1)
        rows = np.random.default_rng(0).choice(np.flatnonzero(learnt.numpy()), n, replace=False)
        images = to_tensor(dataset.images(rows), device)
        labels = labels[rows].to(device)
        ((umean, _),) = self.unknown_encoder(images * 2 - 1)
        means = [m for m, _ in self._embed(self.embedder, labels)]
        blank = torch.ones_like(images[0])
        swap = [[blank, *images]]
        for i in range(n):
            codes = [m[i : i + 1].expand(n, -1) for m in means]
            swap.append([images[i], *self.decode(umean, codes)])
        classes = [b.normalised()[0] for b in self.embedder]
        width = max(len(m) for m in classes)
        sweep = []
        for k, table in enumerate(classes):
            codes = [m[:1].expand(len(table), -1) for m in means]
            codes[k] = table
            row = list(self.decode(umean[:1].expand(len(table), -1), codes))
            sweep.append([images[0], *row, *[blank] * (width - len(table))])
        return [
            write_png(
                folder / "swap.png",
                Grid(
                    torch.stack([torch.stack(r) for r in swap]),
                    "Swap: the labels of the row's image with the unknown code of the "
                    "column's image",
                    ["", *[f"labels of {i}" for i in range(n)]],
                    ["", *[f"unknown of {i}" for i in range(n)]],
                ),
            ),
            write_png(
                folder / "classes.png",
                Grid(
                    torch.stack([torch.stack(r) for r in sweep]),
                    "Classes: image 0 with one labelled factor (a row) set to each of its "
                    "classes, its unknown code kept",
                    list(self.config.labeled),
                    ["image 0", *[f"class {c}" for c in range(width)]],
                ),
            ),
        ]

    def training_summary(self) -> dict[str, object]:
        return {"stages": self.phase_steps(), "supervision": self.supervision.description}


class DisUnknownTrainer(Trainer):
    """DisUnknown's regime: its four stages one after another, each with its own Adam
    (``stage_optimizers``) and its gradients routed by hand (``DisUnknown.train_step``).
    ``train.steps`` must be the stages' sum (or 0, the untrained baseline); the run's
    optimizer settings do not apply."""

    def __init__(self, method: DisUnknown, train: DictConfig, device: torch.device) -> None:
        stages = method.phase_steps()
        if sum(stages.values()) != train.steps and train.steps != 0:  # 0: the untrained row
            raise BenchError(
                f"{method.config.name}'s stages take {sum(stages.values())} steps in all and "
                f"train.steps is {train.steps}; set train.steps={sum(stages.values())}"
            )
        if Precision(train.precision) is Precision.fp16:
            raise BenchError(
                f"train.precision=fp16 scales the loop's losses, and {method.config.name} runs "
                "its own backward passes; use train.precision=bf16 or fp32"
            )
        self.method, self.device = method, device
        self.precision = training_precision(train.precision, device)
        self.optimizers = method.stage_optimizers()

    def step(
        self, batch: Batch, step: int, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        with autocast(self.precision, self.device):
            loss, logs = self.method.train_step(batch, generator, step, self.optimizers)
        return {"loss": loss}, logs
