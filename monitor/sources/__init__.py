"""Upstream sources, one module each, and the registry that builds them from Settings.

Each source module exposes ``from_settings(settings) -> Source | None`` (None when the source is
not configured, e.g. no admin key for the usage reports). Modules are imported only when used,
so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.collect import Source
    from monitor.config import Settings

# name -> (module, what it needs when it is not configured)
REGISTRY: dict[str, tuple[str, str]] = {
    "batches": ("monitor.sources.batches", "ANTHROPIC_API_KEY or [[workspaces]]"),
    "usage": ("monitor.sources.usage", "ANTHROPIC_ADMIN_KEY"),
    "cost": ("monitor.sources.usage", "ANTHROPIC_ADMIN_KEY"),
    "logs": ("monitor.sources.call_logs", "[collect] call_logs = [...] in monitor.toml"),
}


def available() -> list[str]:
    """Return the names of the sources whose modules exist in this version."""
    names = []
    for name, (module, _) in REGISTRY.items():
        try:
            importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def build(name: str, settings: Settings) -> Source | None:
    """Build the source called ``name`` from ``settings`` (None when it is not configured)."""
    module_name, _ = REGISTRY[name]
    module = importlib.import_module(module_name)
    source: Source | None = module.from_settings(name, settings)
    return source


def requirement(name: str) -> str:
    """Say what configuration the source ``name`` needs."""
    return REGISTRY[name][1]
