"""A record's trained weights (model.safetensors): written with their size and checksum, and
verified against them before they are trusted."""

from __future__ import annotations

from typing import Any

from safetensors.torch import save_model
from torch import nn

from bench.fileio import atomic_path, damage, file_digest
from bench.store import RunRecord


def save_weights(model: nn.Module, record: RunRecord) -> dict[str, Any]:
    """Write the trained weights (model.safetensors); returns their size and checksum, which
    the complete status keeps so that a damaged file is never loaded."""
    with atomic_path(record.weights_file) as tmp:
        save_model(model, str(tmp))
        digest = file_digest(tmp)
    return digest


def weights_problem(record: RunRecord) -> str | None:
    """Why a complete record's model.safetensors cannot be trusted; None when it verifies."""
    expected = (record.status() or {}).get("weights")
    if expected is None:  # written before checksums: nothing to verify it against
        return None if record.weights_file.is_file() else "missing"
    return damage(record.weights_file, expected)
