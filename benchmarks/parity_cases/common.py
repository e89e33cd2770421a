"""What every parity case does: build our method at its paper configuration with seeded
random weights, load them into the authors' module through our key map, and collect the
pairs of quantities to compare."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from unittest import mock

import torch
from torch import nn

from bench.authors.layouts import LAYOUTS, Layout
from bench.build import build_method
from bench.config import resolve_config
from bench.datasets import DATASETS
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
    method: str,
    dataset: str = "shapes3d",
    seed: int = 0,
    overrides: list[str] = (),
    randomized: bool = True,
) -> nn.Module:
    """Our ``method`` at its paper configuration (with ``overrides``) on ``dataset``'s image
    shape, with seeded random weights everywhere (``randomize``) unless not ``randomized``."""
    cfg = resolve_config(method, dataset, "paper", overrides)
    model = build_method(cfg, DATASETS.get(dataset))
    if randomized:
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
    """Our weights in their module (every key of theirs filled but those the layout names
    unused), and their module's state dict."""
    result = theirs.load_state_dict(layout.authors_state(ours), strict=False)
    unfilled = [key for key in result.missing_keys if not layout.is_unused(key)]
    if unfilled or result.unexpected_keys:
        raise ValueError(
            f"{layout.manifest}: their keys left unfilled {unfilled[:3]}, ours without a place "
            f"{result.unexpected_keys[:3]}"
        )
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


@contextmanager
def recording(records: list[tuple[str, torch.Tensor]], names: tuple[str, ...]):
    """Every draw of the named torch functions (``rand``, ``randperm``, …) made inside, in
    order, appended to ``records`` as (name, value)."""
    with ExitStack() as stack:
        for name in names:
            original = getattr(torch, name)

            def record(*args, _name=name, _original=original, **kwargs):
                out = _original(*args, **kwargs)
                records.append((_name, out.clone()))
                return out

            stack.enter_context(mock.patch.object(torch, name, record))
        yield


@contextmanager
def replaying(records: list[tuple[str, torch.Tensor]], names: tuple[str, ...] = ()):
    """Each call of the named torch functions inside (by default those ``records`` name) gets
    the next of ``records``, which must be of its kind; every record must be used. So our
    explicit generator's draws are replayed into code that draws from torch's global one."""
    queue = list(records)
    names = names or tuple(dict.fromkeys(kind for kind, _ in records))

    def replay(name: str):
        def draw(*args, **kwargs):
            kind, value = queue.pop(0)
            if kind != name:
                raise AssertionError(f"their code drew {name} where ours drew {kind}")
            return value.clone()

        return draw

    with ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(torch, name, replay(name)))
        yield
    if queue:
        raise AssertionError(f"their code drew {len(records) - len(queue)} of {len(records)}")
