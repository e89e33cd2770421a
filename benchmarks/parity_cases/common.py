"""What every parity case does: build our method at its paper configuration with seeded
random weights, load them into the authors' module through our key map, and collect the
pairs of quantities to compare."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bench.authors.layouts import LAYOUTS, Layout
from bench.config import resolve_config
from bench.datasets import DATASETS
from bench.runner import build_method
from parity_cases.authors import Checkout


@dataclass
class Comparison:
    checkouts: dict[str, Checkout]
    configs: dict[str, str] = field(default_factory=dict)  # repo → the config file used
    quantities: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # manifest name → (repository, the module and its settings, the module's state dict)
    manifests: dict[str, tuple[str, str, dict[str, torch.Tensor]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
        self.quantities[name] = (ours.detach().cpu(), theirs.detach().cpu())


def our_method(
    method: str, dataset: str = "shapes3d", seed: int = 0, overrides: list[str] = ()
) -> nn.Module:
    """Our ``method`` at its paper configuration (with ``overrides``) on ``dataset``'s image
    shape, with seeded random weights everywhere (``randomize``)."""
    cfg = resolve_config(method, dataset, "paper", overrides)
    model = build_method(cfg, DATASETS.get(dataset))
    randomize(model, seed)
    return model


def randomize(module: nn.Module, seed: int) -> None:
    """Every floating tensor of ``module`` drawn from ``seed``: weights N(0, 0.25/fan-in) (so
    activations keep their scale and no zero-initialised layer hides a difference), vectors
    (biases, norm scales) their value plus N(0, 0.1²), batch-norm variances in [0.5, 1.5]."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or tensor.dim() == 0:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.dim() >= 2:
                tensor.copy_(0.5 * noise / tensor[0].numel() ** 0.5)
            else:
                tensor.add_(0.1 * noise)


def load_into(theirs: nn.Module, ours: nn.Module, layout: Layout) -> dict[str, torch.Tensor]:
    """Our weights in their module (every key matched), and their module's state dict."""
    theirs.load_state_dict(layout.authors_state(ours), strict=True)
    return theirs.state_dict()


def layout(method: str, manifest: str) -> Layout:
    return next(entry for entry in LAYOUTS[method] if entry.manifest == manifest)


def inputs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def replayed(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Two generators in the same state: one for our training loss, one to replay its draws
    (time steps, noise, sampled units) for theirs."""
    generator = torch.Generator().manual_seed(seed)
    return generator, torch.Generator().set_state(generator.get_state())
