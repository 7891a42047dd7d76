"""A small YAML writer for the generated configuration files (no PyYAML needed).

It writes block-style YAML from dicts, lists, strings, numbers, booleans and None. Strings are
written plain when that cannot be misread, as a literal block (``|-``) when they span lines (so
PromQL and SQL stay readable), else single-quoted, or double-quoted (JSON escapes) when they
hold control characters. Key order
is kept, so the files diff cleanly. Strings that cannot be plain are single-quoted (only ``'``
is escaped, by doubling it), so PromQL with label matchers reads as written.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_ ./:@=-]*$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def scalar(value: Any) -> str:
    """Return one scalar as YAML text (strings quoted when a plain scalar could be misread)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _DURATION.match(text) or (
        _PLAIN.match(text)
        and text.lower() not in _RESERVED
        and not text.endswith((" ", ":"))
        and ": " not in text
        and " #" not in text
    ):
        return text
    if text.isprintable():  # single quotes: only ' needs escaping (doubled)
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text, ensure_ascii=False)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        for key, item in value.items():
            out.extend(_entry(pad + scalar(key) + ":", item, indent))
        return out
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        for item in value:
            if isinstance(item, dict) and item:
                inner = _lines(item, indent + 2)
                out.append(pad + "- " + inner[0][indent + 2 :])
                out.extend(inner[1:])
            else:
                out.extend(_entry(pad + "-", item, indent))
        return out
    return [pad + scalar(value)]


def _entry(head: str, item: Any, indent: int) -> list[str]:
    """Return ``head`` followed by ``item``: inline for scalars, on the next lines for blocks."""
    if isinstance(item, str) and "\n" in item:
        body = item.rstrip("\n")
        return [head + " |-", *[(" " * (indent + 2) + ln).rstrip() for ln in body.split("\n")]]
    if isinstance(item, dict | list) and item:
        return [head, *_lines(item, indent + 2)]
    if isinstance(item, dict | list):
        return [head + (" {}" if isinstance(item, dict) else " []")]
    return [head + " " + scalar(item)]


def dump(value: Any, header: str = "") -> str:
    """Return ``value`` as a YAML document, with ``header`` as leading ``#`` comment lines."""
    lines = [f"# {ln}".rstrip() for ln in header.splitlines()] if header else []
    return "\n".join([*lines, *_lines(value, 0)]) + "\n"
