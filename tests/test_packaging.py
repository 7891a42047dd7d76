"""Packaging: every package under monitor/ ships, and the migrations ship as monitor.migrations."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.relative_to(REPO).parts)
        for p in (REPO / "monitor").rglob("*")
        if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py")) | any(p.glob("*.toml"))
    } | {"monitor"}
    mapped = {"monitor.migrations", "monitor.migrations.versions"}
    assert listed == on_disk | mapped
    assert config["package-dir"] == {
        "monitor.migrations": "alembic",
        "monitor.migrations.versions": "alembic/versions",
    }
    # Our alembic/ must never shadow the alembic package: no __init__.py there.
    assert not (REPO / "alembic" / "__init__.py").exists()
    assert any((REPO / "alembic" / "versions").glob("0001_*.py"))
