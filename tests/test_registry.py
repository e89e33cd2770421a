"""Registry: lazy entries, helpful errors, entry-point plugins."""

from __future__ import annotations

import sys

import pytest

from bench.errors import BenchError
from bench.registry import Registry, UnknownNameError


def test_entries_are_imported_only_when_used(tmp_path, monkeypatch):
    (tmp_path / "lazy_module.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing", "bench.test_no_such_group")
    registry.register("thing", "lazy_module:Thing", "a class")
    assert registry.names() == ["thing"]
    assert "lazy_module" not in sys.modules
    assert registry.get("thing").__name__ == "Thing"
    assert "lazy_module" in sys.modules
    monkeypatch.delitem(sys.modules, "lazy_module")


def test_unknown_name_lists_known_names_and_closest_match():
    registry = Registry("method", "bench.test_no_such_group")
    registry.register("beta_vae", "m:a", "")
    registry.register("dyga_sd", "m:b", "")
    with pytest.raises(UnknownNameError) as error:
        registry.get("dyga-sd")
    assert str(error.value) == (
        "unknown method 'dyga-sd' (did you mean 'dyga_sd'?); known methods: beta_vae, dyga_sd"
    )


def test_duplicate_names_raise():
    registry = Registry("metric", "bench.test_no_such_group")
    registry.register("mig", "m:a", "")
    with pytest.raises(BenchError, match="duplicate metric name 'mig'"):
        registry.register("mig", "m:b", "")


def write_plugin(root, group: str, name: str, target: str) -> None:
    """A distribution with one entry point, importable from ``root``."""
    info = root / "bench_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    (root / "bench_plugin_module.py").write_text("class Plugin:\n    pass\n")


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    write_plugin(tmp_path, "bench.test_plugins", "my_method", "bench_plugin_module:Plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("method", "bench.test_plugins")
    registry.register("beta_vae", "m:a", "built in")
    assert registry.names() == ["beta_vae", "my_method"]
    assert registry.entry("my_method").source == "bench-plugin"
    assert registry.get("my_method").__name__ == "Plugin"


def test_a_plugin_may_not_shadow_a_builtin(tmp_path, monkeypatch):
    write_plugin(tmp_path, "bench.test_plugins", "beta_vae", "bench_plugin_module:Plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("method", "bench.test_plugins")
    registry.register("beta_vae", "m:a", "built in")
    with pytest.raises(BenchError, match=r"registered by bench .* and by bench-plugin"):
        registry.names()
