"""Helpers for tests that run collectors against the Anthropic simulator over HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from monitor.config import CollectSection, Settings, Workspace
from monitor.simulator import SimulatorServer


def settings_for(sim: SimulatorServer, *, admin: bool = True, **collect: Any) -> Settings:
    """Return Settings that point every source at ``sim`` (all its workspaces, its admin key).

    Retries are kept small and fast so fault tests run in seconds.
    """
    opts: dict[str, Any] = {"max_retries": 2, "max_retry_after": timedelta(seconds=2)}
    opts.update(collect)
    return Settings(
        database_url="sqlite://",
        anthropic_base_url=sim.url,
        anthropic_admin_key=SecretStr(sim.scenario.admin_key) if admin else None,
        workspaces=tuple(
            Workspace(
                id=w.id,
                name=w.name,
                api_key=SecretStr(w.api_key),
                default=w.id == sim.scenario.default_workspace.id,
            )
            for w in sim.scenario.workspaces
        ),
        collect=CollectSection(**opts),
    )
