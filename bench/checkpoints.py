"""Training checkpoints that survive a damaged file.

A record's ``checkpoints/`` folder holds the newest ``keep`` checkpoints,
``step-<step>.pt``, each with ``step-<step>.json`` beside it: its step, size and SHA-256,
written after the checkpoint itself. A checkpoint is trusted only when its file matches
that digest, so a file a cluster filesystem hands back truncated is recognised before
``torch.load`` sees it. Resuming takes the newest checkpoint that verifies, with a one-line
warning for each newer one that does not; when none does, ``DamagedCheckpoints`` names the
files and the way out.

Records written before checksums hold ``last.pt`` alone: it is used, unverified, when no
newer checkpoint exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.errors import BenchError
from bench.fileio import atomic_path, atomic_write_json, damage, file_digest

LEGACY = "last.pt"


class DamagedCheckpoints(BenchError):
    """Checkpoints exist but none can be trusted."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        super().__init__(
            f"no usable checkpoint in {folder}: {'; '.join(problems)}; rerun with --force to "
            "train from step 0 (or restore a checkpoint there)"
        )
        self.folder, self.problems = folder, problems


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:09d}.pt"


def _digest_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def _step_files(folder: Path) -> list[Path]:
    """The step-*.pt files, newest first (their names sort by step)."""
    return sorted(Path(folder).glob("step-*.pt"), reverse=True)


def save_checkpoint_file(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and its digest, then delete all but the
    ``keep`` newest checkpoints."""
    path = checkpoint_path(folder, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        digest = file_digest(tmp)
    atomic_write_json(_digest_path(path), {"step": step, **digest})
    for old in _step_files(folder)[keep:]:
        old.unlink(missing_ok=True)
        _digest_path(old).unlink(missing_ok=True)
    (Path(folder) / LEGACY).unlink(missing_ok=True)
    return path


def _problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted; None when it verifies."""
    try:
        expected = json.loads(_digest_path(path).read_text())
    except (OSError, ValueError):
        return "its checksum file is missing or unreadable"
    return damage(path, expected)


def newest_usable(folder: Path) -> Path | None:
    """The newest checkpoint in ``folder`` that verifies; None when there is none at all.
    Raises ``DamagedCheckpoints`` when checkpoints exist but none verifies."""
    folder = Path(folder)
    problems = []
    for path in _step_files(folder):
        problem = _problem(path)
        if problem is None:
            if problems:
                tqdm.write(
                    f"warning: damaged checkpoint skipped: {'; '.join(problems)}; "
                    f"resuming from {path.name}",
                    file=sys.stderr,
                )
            return path
        problems.append(f"{path.name} ({problem})")
    if (folder / LEGACY).is_file():
        return folder / LEGACY
    if problems:
        raise DamagedCheckpoints(folder, problems)
    return None


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A checkpoint's contents. ``weights_only=True``: tensors and plain values, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as error:  # a legacy file, damaged
        problem = str(error).splitlines()[0]
        raise DamagedCheckpoints(path.parent, [f"{path.name} ({problem})"]) from None
