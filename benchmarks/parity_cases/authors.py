"""The authors' code, imported from the user's checkouts of their repositories.

Nothing of theirs is copied here: ``checkouts`` finds each repository a case needs among the
``--authors`` paths (by a file only that repository has, ``MARKERS``) and reads its commit;
``importable`` puts them on ``sys.path`` for the comparison. Their modules import, at the
top, packages that the compared code never calls (CLIP, kornia, transformers, torchvision,
lmdb, timm, PyTorch Lightning's module base); where one is not installed a stand-in takes its
place: an attribute of it is a class that refuses to be built, except Lightning's
``LightningModule`` (an ``nn.Module`` with what their models read of it: its device, step 0
of epoch 0) and ``rank_zero_only`` (a decorator that changes nothing).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import subprocess
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch import nn

# Packages their modules import at the top and the compared code never calls; a stand-in
# serves each (and every submodule of it) where it is not installed.
STAND_INS = (
    "clip",
    "kornia",
    "lmdb",
    "pytorch_lightning",
    "timm",
    "torchvision",
    "transformers",
)


class LightningModule(nn.Module):
    global_step = 0
    current_epoch = 0

    @property
    def device(self):
        return next(self.parameters()).device


STAND_IN_ATTRIBUTES = {
    "pytorch_lightning": {"LightningModule": LightningModule},
    "pytorch_lightning.utilities.distributed": {"rank_zero_only": lambda function: function},
}

DBRL, DISDIFF, DIS_DIS, DISUNKNOWN, DITI, TAMING = (
    "korabs-x/representation_score_based",
    "ThomasMrY/DisDiff",
    "youngjun-jun/dis-dis",
    "stormraiser/disunknown",
    "yue-zhongqi/diti",
    "CompVis/taming-transformers",
)
# Each repository the cases need (owner/name on GitHub) → a file only it has.
MARKERS = {
    DBRL: "score_sde_pytorch/models/wrn.py",
    DISDIFF: "configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml",
    DIS_DIS: "code/ldm/models/diffusion/ddpm_dyga.py",
    DISUNKNOWN: "trainers/Stage1AllUnknownTrainer.py",
    DITI: "trainer/diti_trainer.py",
    TAMING: "taming/modules/vqvae/quantize.py",
}


@dataclass(frozen=True)
class Checkout:
    repo: str  # owner/name on GitHub
    path: Path
    commit: str


def checkouts(paths: list[Path], needed: tuple[str, ...]) -> dict[str, Checkout]:
    """The checkout of each repository of ``needed``, found by its ``MARKERS`` file."""
    found = {}
    for repo in needed:
        marker = MARKERS[repo]
        matches = [path for path in paths if (path / marker).is_file()]
        if not matches:
            raise SystemExit(
                f"needs a checkout of {repo}: git clone https://github.com/{repo} and pass "
                f"its folder as --authors (looked for {marker} in {', '.join(map(str, paths))})"
            )
        found[repo] = Checkout(repo, matches[0], commit_of(matches[0]))
    return found


def commit_of(path: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{path} is not a git checkout; clone the repository so its commit is known"
        )
    return result.stdout.strip()


@contextmanager
def importable(*folders: Path, absent: tuple[str, ...] = ()):
    """``folders`` first on ``sys.path``, stand-ins for the missing ``STAND_INS`` and for
    ``absent`` (modules their code imports that their repository lacks or that cannot load
    here); afterwards every module loaded from ``folders`` is dropped, so that two
    repositories' packages of one name (``ldm``, ``model``) never meet in one process."""
    roots = {name for name in STAND_INS if _missing(name)}
    finder = StandIns(roots, set(absent))
    sys.meta_path.insert(0, finder)
    sys.path[:0] = [str(folder) for folder in folders]
    try:
        yield
    finally:
        del sys.path[: len(folders)]
        sys.meta_path.remove(finder)
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None) or ""
            if isinstance(module, StandIn) or any(where.startswith(str(f)) for f in folders):
                del sys.modules[name]


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    return importlib.util.find_spec(name) is None


class StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a ``StandIn`` for ``absent`` and for ``roots`` and every module under them."""

    def __init__(self, roots: set[str], absent: set[str]) -> None:
        self.roots, self.absent = roots, absent

    def find_spec(self, name: str, path=None, target=None):
        if name in self.absent or name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec) -> types.ModuleType:
        return StandIn(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []  # a package, so that its submodules import


class StandIn(types.ModuleType):
    """A module whose attributes are ``placeholder`` classes (or what ``STAND_IN_ATTRIBUTES``
    gives)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__.update(STAND_IN_ATTRIBUTES.get(name, {}))

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return placeholder(f"{self.__name__}.{key}")


class Placeholder(type):
    """The type of a stand-in's attributes: their attributes are placeholders too
    (``torchvision.datasets.MNIST``), so that their modules can subclass them."""

    def __getattr__(cls, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return placeholder(f"{cls.__qualname__}.{key}")


def placeholder(name: str) -> type:
    """A class that refuses to be built."""

    def refuse(self, *args, **kwargs) -> None:
        raise RuntimeError(f"{name} is a stand-in: install {name.split('.')[0]} to use it")

    return Placeholder(name.rsplit(".", 1)[-1], (), {"__init__": refuse, "__qualname__": name})
