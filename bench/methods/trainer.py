"""How a method's parameters are stepped: one ``Trainer`` per optimizer regime.

The training loop builds a method's trainer once (``Method.trainer``), calls
``trainer.step(batch, step, generator)`` once per training step, and checkpoints
``trainer.optimizers`` (and ``trainer.scaler``) with the run. It never steps an optimizer
itself, so a method that needs another regime brings its own trainer and the loop stays
as it is.

``LossTrainer``, the default, covers the methods that give a loss for a batch
(``Method.training_loss``): the run's optimizer (``train.*``: Adam or AdamW, linear
learning-rate warm-up, gradient clipping, fp16 loss scaling) over every trainable
parameter, plus optional optimizers of the method's own over some parameters (FactorVAE's
discriminator), each stepped on its own loss alone. DisUnknown, whose four stages route
gradients by hand, has its own (``bench/methods/disunknown.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import nn

from bench.errors import BenchError
from bench.precision import Precision, autocast, training_precision

if TYPE_CHECKING:
    from bench.methods.base import Method


@dataclass
class Batch:
    """One training batch, on the run's device."""

    images: torch.Tensor  # float (B, C, H, W) in [0, 1]
    # int64 (B, k): each labelled factor's value index, in ``Supervision.labeled_factors``
    # order; None for an unsupervised method, which never sees a label.
    labels: torch.Tensor | None = None


@dataclass
class OwnOptimizer:
    """Adam over some of a method's parameters, beside the run's optimizer (``train.*``):
    FactorVAE's discriminator, a GAN's critic. Its loss is differentiated with respect to
    these parameters alone, and no other loss ever reaches them."""

    parameters: list[nn.Parameter]
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


# The run's optimizer's name, and its loss's key when a method returns one loss per optimizer.
RUN = "run"


class Trainer(ABC):
    """Owns a method's optimizers and takes its training steps.

    ``optimizers`` (by name) and ``scaler`` are what the loop saves in a checkpoint and
    restores before the first step of a resumed run."""

    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler | None = None

    @abstractmethod
    def step(
        self, batch: Batch, step: int, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Training step ``step`` (0-based) in full: forward, backward, optimizer steps. Every
        random draw comes from ``generator``. Returns the losses, detached — ``"loss"``, the
        one the log and the progress bar show, and any others under their log names; the
        loop checks each for finiteness — and other named scalars to log."""


def fused(parameters: list[nn.Parameter]) -> dict[str, bool]:
    """Adam's one-kernel update where every parameter is on CUDA (torch's fused Adam(W));
    elsewhere torch's default, which keeps CPU numbers as they were."""
    on_cuda = bool(parameters) and all(p.is_cuda for p in parameters)
    return {"fused": True} if on_cuda else {}


def run_optimizer(parameters: list[nn.Parameter], train: DictConfig) -> torch.optim.Optimizer:
    """The run's optimizer as ``train.*`` sets it."""
    optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[train.optimizer.value]
    return optimizer_cls(
        parameters,
        lr=train.lr,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_eps,
        weight_decay=train.weight_decay,
        **fused(parameters),
    )


def own_optimizer(spec: OwnOptimizer) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        spec.parameters, lr=spec.lr, betas=spec.betas, eps=spec.eps, **fused(spec.parameters)
    )


def warmup_factor(step: int, train: DictConfig) -> float:
    """LDM's LambdaLinearScheduler: the learning rate ramps linearly from ``warmup_start``× to
    1× over ``warmup_steps`` steps, then stays."""
    if step >= train.warmup_steps:
        return 1.0
    return train.warmup_start + (1.0 - train.warmup_start) * step / train.warmup_steps


def backward(
    losses: dict[str, torch.Tensor],
    parameters: dict[str, list[nn.Parameter]],
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Gradients for every optimizer: one loss, the usual backward pass; several, each loss
    differentiated with respect to its optimizer's parameters alone, so that no loss moves
    another optimizer's parameters (FactorVAE: the VAE never gets the discriminator's loss,
    the discriminator never the VAE's). Under fp16 each loss is scaled first."""
    if scaler is not None:
        losses = {name: scaler.scale(loss) for name, loss in losses.items()}
    if list(losses) == [RUN]:
        losses[RUN].backward()
        return
    for name, loss in losses.items():
        params = parameters[name]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad


class LossTrainer(Trainer):
    """The default regime: ``method.training_loss`` under autocast, then a backward pass and
    an optimizer step per optimizer. The run's optimizer (``RUN``) trains every trainable
    parameter that ``own`` does not claim, with warm-up and clipping; each of ``own`` steps
    on the gradient of its own loss, unclipped. With fp16 a GradScaler scales the losses,
    unscales before clipping, and skips a step whose gradients overflowed."""

    def __init__(
        self,
        method: Method,
        train: DictConfig,
        device: torch.device,
        own: dict[str, OwnOptimizer] | None = None,
    ) -> None:
        own = own or {}
        claimed = {id(p) for spec in own.values() for p in spec.parameters}
        run = [p for p in method.parameters() if p.requires_grad and id(p) not in claimed]
        self.method, self.train, self.device = method, train, device
        self.precision = training_precision(train.precision, device)
        self.parameters = {RUN: run, **{name: spec.parameters for name, spec in own.items()}}
        self.optimizers = {RUN: run_optimizer(run, train)}
        self.optimizers.update({name: own_optimizer(spec) for name, spec in own.items()})
        # fp16 scales the losses so that small gradients survive; bf16 has fp32's range.
        fp16 = self.precision is Precision.fp16
        self.scaler = torch.amp.GradScaler(device.type) if fp16 else None

    def losses(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The method's loss per optimizer (under autocast) and its values to log."""
        with autocast(self.precision, self.device):
            loss, logs = self.method.training_loss(batch, generator)
        losses = loss if isinstance(loss, dict) else {RUN: loss}
        if set(losses) != set(self.optimizers):
            raise BenchError(
                f"training_loss returned losses for {sorted(losses)}, and the optimizers are "
                f"{sorted(self.optimizers)}: one loss per optimizer"
            )
        return losses, logs

    def step(
        self, batch: Batch, step: int, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        losses, logs = self.losses(batch, generator)
        self.apply(losses, step)
        shown = {"loss": losses[RUN].detach()}
        shown.update({f"{n}_loss": loss.detach() for n, loss in losses.items() if n != RUN})
        return shown, logs

    def apply(self, losses: dict[str, torch.Tensor], step: int) -> None:
        """Backward passes and optimizer steps for one loss per optimizer."""
        train, run, scaler = self.train, self.optimizers[RUN], self.scaler
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        backward(losses, self.parameters, scaler)
        for group in run.param_groups:
            group["lr"] = train.lr * warmup_factor(step, train)
        if train.grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(run)
            torch.nn.utils.clip_grad_norm_(self.parameters[RUN], train.grad_clip)
        for optimizer in self.optimizers.values():
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
        if scaler is not None:
            scaler.update()
