"""Atomic file writes (a reader never sees a half-written file) and file digests (a damaged
file is recognised before it is trusted)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def make_folder(path: Path, what: str) -> None:
    """Create ``path`` (and its parents), or a one-line error naming ``what`` and the fix."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchError(
            f"cannot write {what} {path}: {error.strerror}; give a writable folder with --out"
        ) from None


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as the process umask lets a new file have it (what ``open`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto ``path`` only if the block succeeds.

    mkstemp creates the temporary file 0600; it gets the permissions the user's umask gives
    a new file before the rename, so records on a shared filesystem stay readable to a group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def file_digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file: written beside a checkpoint or a model to verify it later."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def damage(path: Path, expected: dict[str, Any]) -> str | None:
    """Why ``path`` is not the file ``expected`` (a ``file_digest``) describes; None if it is."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != expected["size"]:
        return f"{size} bytes, {expected['size']} written"
    if file_digest(path)["sha256"] != expected["sha256"]:
        return "checksum mismatch"
    return None
