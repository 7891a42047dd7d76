"""Workloads: what a request belongs to, and what latency it accepts.

A workload is declared in ``[[workloads]]`` (``monitor.toml``, or a file given to ``audit
--workloads``) with a name, an optional ``match`` regex, the latency it accepts and whether a
person waits for it. Every request is attributed to one workload by one rule:

1. A declared workload claims a request when its ``name`` equals one of the request's
   identifiers (a batch request's ``custom_id``; a call-log line's ``workload``, then its
   ``endpoint``), or else when its ``match`` regex is found in one of them (``re.search``;
   anchor it if needed). The first declaration that claims it wins.
2. Otherwise the request keeps its own name: the first identifier it has. A batch request's
   ``custom_id`` names one request, not a workload, so its trailing serial parts (``-``/``_``
   parts holding a digit) are dropped first: ``lead-123`` -> ``lead``,
   ``classify-2026111503-0001`` -> ``classify``. A call log's ``workload`` is a name the
   application chose, and is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator

from monitor import tomlfile
from monitor.fmt import parse_duration


@dataclass(frozen=True)
class Workload:
    """A declared workload (from ``[[workloads]]``)."""

    name: str
    match: re.Pattern[str] | None
    max_latency: timedelta | None
    user_facing: bool | None


class WorkloadEntry(BaseModel):
    """One ``[[workloads]]`` entry as written: how to recognise it, what latency it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    match: str | None = None
    max_latency: Annotated[timedelta, BeforeValidator(parse_duration)] | None = None
    user_facing: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a workload needs a name")
        return v

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from exc
        return v

    def workload(self) -> Workload:
        """Return the declared workload this entry describes."""
        return Workload(
            name=self.name,
            match=re.compile(self.match) if self.match else None,
            max_latency=self.max_latency,
            user_facing=self.user_facing,
        )


def duplicate_names(entries: Sequence[WorkloadEntry]) -> list[str]:
    """Return the names declared more than once, sorted."""
    names = [e.name for e in entries]
    return sorted({n for n in names if names.count(n) > 1})


def strip_serial(custom_id: str) -> str:
    """Drop the trailing serial parts (``-123``, ``_pr12``) of a batch request's ``custom_id``."""
    # A plain loop: this runs once per results id stem, and a backtracking regex cost 3x.
    name = custom_id
    while True:
        cut = max(name.rfind("-"), name.rfind("_"))
        if cut <= 0:
            return name
        tail = name[cut + 1 :]
        if not tail or not any(c.isdigit() for c in tail):
            return name
        name = name[:cut]


class WorkloadMap:
    """Attribute requests to workloads by the module's one rule (cached per identifier)."""

    def __init__(self, workloads: Sequence[Workload] = ()) -> None:
        self.workloads = tuple(workloads)
        self._by_name = {w.name: w for w in self.workloads}
        self._cache: dict[tuple[str | None, str | None], str] = {}

    def declared(self, name: str) -> Workload | None:
        """Return the declaration of workload ``name`` (None when it is undeclared)."""
        return self._by_name.get(name)

    def resolve(self, workload: str | None, endpoint: str | None = None) -> str:
        """Return the workload name for a call tagged ``workload`` on ``endpoint``."""
        key = (workload, endpoint)
        name = self._cache.get(key)
        if name is None:
            name = self._resolve(workload, endpoint)
            if len(self._cache) < 100_000:  # raw endpoints can be high-cardinality
                self._cache[key] = name
        return name

    def _resolve(self, workload: str | None, endpoint: str | None) -> str:
        candidates = [c for c in (workload, endpoint) if c]
        claimed = self._declared_for(candidates)
        if claimed is not None:
            return claimed
        return candidates[0] if candidates else ""

    def of_custom_id(self, custom_id: str) -> str:
        """Return the workload of a batch request, from its ``custom_id``."""
        claimed = self._declared_for((custom_id,))
        return claimed if claimed is not None else strip_serial(custom_id)

    def _declared_for(self, candidates: Sequence[str]) -> str | None:
        for candidate in candidates:
            if candidate in self._by_name:
                return candidate
        for declared in self.workloads:
            if declared.match is not None and any(declared.match.search(c) for c in candidates):
                return declared.name
        return None


def attribute(custom_id: str, workloads: Sequence[Workload] = ()) -> str:
    """Return the workload of a batch request's ``custom_id`` (see the module docstring)."""
    return WorkloadMap(workloads).of_custom_id(custom_id)


def load_file(path: str | Path) -> tuple[Workload, ...]:
    """Read ``[[workloads]]`` declarations from a TOML file; raise ConfigError naming file:line.

    The file holds only ``[[workloads]]`` entries, in the same form as in ``monitor.toml``.
    """
    path = Path(path)
    problems: list[str] = []
    data, text = tomlfile.read(path, "workloads file", problems)
    problems += [
        f"{path}: {key}: unknown key (the file holds only [[workloads]] entries)"
        for key in data
        if key != "workloads"
    ]
    raw = data.get("workloads", [])
    if not isinstance(raw, list):
        problems.append(f"{path}: workloads: must be an array of tables ([[workloads]])")
        raw = []
    entries: list[WorkloadEntry] = []
    for i, item in enumerate(raw):
        try:
            entries.append(WorkloadEntry.model_validate(item))
        except ValidationError as exc:
            problems += tomlfile.pydantic_problems(path, text, exc, ("workloads", i))
    for dup in duplicate_names(entries):
        problems.append(f"{path}: workloads: name {dup!r} is listed more than once")
    if problems:
        raise tomlfile.ConfigError(problems)
    return tuple(e.workload() for e in entries)
