"""The authors' code, imported from the user's checkouts of their repositories.

Nothing of theirs is copied here: ``checkouts`` finds each repository a case needs among the
``--authors`` paths (by a file only that repository has, ``MARKERS``) and reads its commit;
``importable`` puts them on ``sys.path`` for the comparison. Their modules import, at the
top, packages that the compared code never calls (CLIP, kornia, transformers, torchvision's
picture grid, PyTorch Lightning's module base); where one is not installed a stand-in takes
its place: an attribute of it is a class that refuses to be built, except Lightning's
``LightningModule`` (an ``nn.Module`` with what their models read of it: its device, step 0
of epoch 0) and ``rank_zero_only`` (a decorator that changes nothing).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch import nn

STAND_INS = (
    "clip",
    "kornia",
    "transformers",
    "torchvision",
    "torchvision.utils",
    "pytorch_lightning",
    "pytorch_lightning.utilities",
    "pytorch_lightning.utilities.distributed",
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
# The top-level packages the authors' repositories define, dropped after a comparison so
# that two repositories' ``ldm`` never meet in one process.
THEIR_PACKAGES = ("ldm", "taming")

DISDIFF, DIS_DIS, TAMING = (
    "ThomasMrY/DisDiff",
    "youngjun-jun/dis-dis",
    "CompVis/taming-transformers",
)
# Each repository the cases need (owner/name on GitHub) → a file only it has.
MARKERS = {
    DISDIFF: "configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml",
    DIS_DIS: "code/ldm/models/diffusion/ddpm_dyga.py",
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
    """``folders`` first on ``sys.path`` and stand-ins for the missing optional packages and
    for ``absent``: modules of theirs that their code imports and their repository lacks."""
    added = [name for name in STAND_INS if _missing(name)] + list(absent)
    for name in added:
        sys.modules[name] = _stand_in(name)
    sys.path[:0] = [str(folder) for folder in folders]
    try:
        yield
    finally:
        del sys.path[: len(folders)]
        for name in list(sys.modules):
            if name in added or name.split(".")[0] in THEIR_PACKAGES:
                del sys.modules[name]


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # its parent is missing too
        return True


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that its submodules' stand-ins import
    module.__dict__.update(STAND_IN_ATTRIBUTES.get(name, {}))

    def attribute(key: str):
        if key.startswith("__"):
            raise AttributeError(key)

        class Unavailable:
            def __init__(self, *args, **kwargs) -> None:
                raise RuntimeError(f"{name}.{key} is a stand-in: install {name} to use it")

        return Unavailable

    module.__getattr__ = attribute
    return module
