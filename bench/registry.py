"""Name -> object registries for methods, metrics and datasets.

Entries are lazy: a registration stores a ``"module:attr"`` string and a one-line
description, and the module is imported only when the entry is first used. So
``bench ls methods`` lists every method without importing torch.

Other packages add entries without forking through entry points in the groups
``bench.methods``, ``bench.metrics`` and ``bench.datasets``::

    [project.entry-points."bench.methods"]
    my_method = "my_package.my_method:MyMethod"
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from bench.errors import BenchError


class UnknownNameError(BenchError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attr"
    description: str
    source: str = "bench"  # "bench" or the distribution that provides the entry point

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


class Registry:
    """A registry of one kind of thing ("method", "metric", "dataset")."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._plugins_scanned = False

    def register(self, name: str, target: str, description: str, source: str = "bench") -> None:
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        if name in self._entries:
            other = self._entries[name]
            raise BenchError(
                f"duplicate {self.kind} name {name!r}: registered by {other.source} "
                f"({other.target}) and by {source} ({target})"
            )
        self._entries[name] = Entry(name, target, description, source)

    def _scan_plugins(self) -> None:
        if self._plugins_scanned:
            return
        self._plugins_scanned = True
        for ep in entry_points(group=self.entry_point_group):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            self.register(ep.name, ep.value, f"plugin from {dist} ({ep.value})", source=dist)

    def entries(self) -> dict[str, Entry]:
        self._scan_plugins()
        return dict(sorted(self._entries.items()))

    def names(self) -> list[str]:
        return list(self.entries())

    def __contains__(self, name: str) -> bool:
        self._scan_plugins()  # a lookup, not a sorted copy: the report asks once per row
        return name in self._entries

    def entry(self, name: str) -> Entry:
        entries = self.entries()
        if name not in entries:
            raise UnknownNameError(self.unknown_message(name))
        return entries[name]

    def get(self, name: str) -> Any:
        """The registered object, imported on first use."""
        if name not in self._loaded:
            self._loaded[name] = self.entry(name).load()
        return self._loaded[name]

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known {self.kind}s: {', '.join(known)}"
