"""Reading TOML files people write, and saying where in them a problem is.

``monitor.toml`` and ``audit --workloads FILE`` report every problem at once, each as
``file:line: key: message``, in one ``ConfigError``; these helpers find the line and spell the
key the same way for both. (``ConfigError`` lives here, not in ``monitor.config``, so that
``monitor.workloads`` can raise it without importing the settings that import it.)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

_BOM = "\ufeff"


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = [_shorten(p) for p in problems]
        head = "invalid configuration" if len(self.problems) != 1 else "invalid configuration:"
        if len(self.problems) == 1:
            super().__init__(f"{head} {self.problems[0]}")
        else:
            super().__init__(
                head
                + " ("
                + str(len(self.problems))
                + " problems):\n  - "
                + "\n  - ".join(self.problems)
            )


# A problem quotes the value at fault; a 5,000-character value must not make a 5,000-character
# line. The start (file, line, key, what is wrong) and the end (what to do) are kept.
_MAX_PROBLEM = 400


def _shorten(problem: str) -> str:
    """Return ``problem`` on one line, its middle cut out when it is too long to read."""
    problem = " ".join(problem.splitlines())
    if len(problem) <= _MAX_PROBLEM:
        return problem
    return problem[: _MAX_PROBLEM - 120] + " … " + problem[-100:]


def read(path: Path, what: str, problems: list[str]) -> tuple[dict[str, Any], str]:
    """Read and parse ``path`` (a ``what`` file); append any problem; return data and text."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot read the {what}: {exc.strerror or exc}")
        return {}, ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(
            f"{path}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}): "
            f"the {what} must be a TOML text file"
        )
        return {}, ""
    if text.startswith(_BOM):
        problems.append(
            f"{path}:1: starts with a byte-order mark: save the {what} as UTF-8 without BOM"
        )
        return {}, text
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
        return {}, text


def dotted(loc: Sequence[Any]) -> str:
    """Spell a location the way people read it: ``workloads[2].match`` (entries count from 1)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def find_line(text: str, loc: Sequence[Any]) -> int | None:
    """Return the line of the key named last in ``loc`` (best effort; None when not found).

    Inside an array of tables (``[[workloads]]``), the search starts at the header of the
    entry ``loc`` points at, so the second entry's error names the second entry's line.
    """
    keys = [p for p in loc if isinstance(p, str)]
    if not keys:
        return None
    start, end = 0, len(text)
    if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
        headers = list(re.finditer(rf"^[ \t]*\[\[[ \t]*{re.escape(loc[0])}[ \t]*\]\]", text, re.M))
        if loc[1] < len(headers):
            start = headers[loc[1]].start()
            following = re.compile(r"^[ \t]*\[", re.M).search(text, headers[loc[1]].end())
            end = following.start() if following else len(text)
            if len(keys) == 1:  # the entry as a whole: its header line
                return text.count("\n", 0, start) + 1
    pattern = re.compile(rf"^[ \t]*{re.escape(keys[-1])}[ \t]*=", re.M)
    m = pattern.search(text, start, end)
    return text.count("\n", 0, m.start()) + 1 if m else None


def pydantic_problems(
    path: Path, text: str, exc: ValidationError, prefix: Sequence[Any] = ()
) -> list[str]:
    """Turn a pydantic error into ``file:line: key: message`` lines, one per problem."""
    out = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        line = find_line(text, loc)
        at = f"{path}:{line}" if line else str(path)
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{at}: {dotted(loc)}: {msg}")
    return out
