"""Rule kinds, rule entries and their checks: the static half of the rules engine.

What a ``[[rules]]`` entry may say, how its threshold reads in its kind's unit, which labels
it may group and filter by, the defaults, and every problem an entry can have (all reported at
once, each naming the entry and the key). Nothing here reads the store, so the configuration
loader (``monitor.config``) checks rule entries with it directly; ``monitor.rules`` adds the
measurements.

Defaults are active unless ``[alerting] default_rules = false``. A ``[[rules]]`` entry named like
a default replaces every default of that name; the keys it leaves out are taken from the default
of the same name (and severity, when it gives one), so ``name = "batch_failure_rate"`` with
``threshold = 0.01`` is a complete rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from monitor import fmt

if TYPE_CHECKING:
    from monitor.config import Settings

SEVERITIES = ("info", "warning", "critical")
NO_DATA_MODES = ("ok", "firing")
# Labels that say *where* an alert applies; user labels may not reuse them (or rule/severity).
SCOPE_KEYS = ("workspace", "workload", "model", "source")
RESERVED_LABELS = frozenset({"rule", "severity", *SCOPE_KEYS})
ANNOTATION_KEYS = ("summary", "description", "action", "runbook_url", "dashboard_url")
ENTRY_KEYS = frozenset(
    {
        "name",
        "kind",
        "threshold",
        "window",
        "severity",
        "for",
        "keep_firing_for",
        "repeat_interval",
        "send_resolved",
        "group_by",
        "filters",
        "enabled",
        "labels",
        "annotations",
        "no_data",
        "basis",
    }
)
# Batches expire 24 hours after creation (Message Batches API docs: "Batch expiration").
BATCH_LIFE = timedelta(hours=24)
UNASSIGNED = "unassigned"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Rule:
    """One configured rule (validated)."""

    name: str
    kind: str
    threshold: Decimal | float  # Decimal for money (usd kinds), else a ratio or seconds
    severity: str = "warning"
    window: timedelta = timedelta(hours=24)
    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    # Zero means "never remind".
    repeat_interval: timedelta = timedelta(hours=4)
    send_resolved: bool = True
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    no_data: str = "ok"
    basis: str = "requests"


def fmt_life(value: Decimal | float) -> str:
    """Format a fraction of a batch's 24 h life ("50 % (12h)")."""
    share = float(value)
    return f"{fmt.percent(share)} ({fmt.seconds(share * BATCH_LIFE.total_seconds())})"


# --- kinds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindSpec:
    """What a rule kind compares, how its threshold reads, and what it can be split by.

    The measurement itself lives in ``monitor.rules`` (it reads the store); this is the static
    part that configuration checks and messages need.
    """

    name: str
    op: str  # how the value must compare with the threshold for the condition to hold
    unit: str  # ratio | seconds | life | usd
    low: float  # threshold range
    high: float | None
    low_inclusive: bool
    group_by: frozenset[str]
    filters: frozenset[str]
    max_group_by: int
    windowed: bool
    summary: str
    action: str

    def fmt(self, value: Decimal | float) -> str:
        """Format a value or threshold in this kind's unit."""
        return {
            "ratio": fmt.percent,
            "seconds": fmt.seconds,
            "life": fmt_life,
            "usd": fmt.usd,
        }[self.unit](value)

    def holds(self, value: Decimal | float, threshold: Decimal | float) -> bool:
        """Return whether ``value`` is on the wrong side of ``threshold`` (money exactly)."""
        if isinstance(value, Decimal) or isinstance(threshold, Decimal):
            value, threshold = _decimal(value), _decimal(threshold)
        if self.op == "<":
            return value < threshold
        if self.op == ">":
            return value > threshold
        return value >= threshold

    @property
    def words(self) -> str:
        """Return the comparison in words ("above")."""
        return {"<": "below", ">": "above", ">=": "at or above"}[self.op]


def _decimal(value: Decimal | float) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


SPECS: dict[str, KindSpec] = {
    k.name: k
    for k in (
        KindSpec(
            name="batch_share",
            op="<",
            unit="ratio",
            low=0.0,
            high=1.0,
            low_inclusive=True,
            group_by=frozenset({"workspace"}),
            filters=frozenset({"workspace"}),
            max_group_by=1,
            windowed=True,
            summary=(
                "Less of the traffic goes through the Message Batches API (50 % cheaper) than the"
                " target."
            ),
            action=(
                "Find real-time workloads that can wait (the advisor's batch candidates) and send"
                " them through the Message Batches API."
            ),
        ),
        KindSpec(
            name="batch_turnaround_p95",
            op=">",
            unit="seconds",
            low=0.0,
            high=BATCH_LIFE.total_seconds(),
            low_inclusive=False,
            group_by=frozenset({"workload", "workspace"}),
            filters=frozenset({"workload", "workspace"}),
            max_group_by=1,
            windowed=True,
            summary="Message Batches take longer than usual to finish.",
            action=(
                "Check status.anthropic.com and the sizes of recent batches; split very large "
                "batches and submit earlier, since unfinished requests expire after 24 h."
            ),
        ),
        KindSpec(
            name="batch_failure_rate",
            op=">",
            unit="ratio",
            low=0.0,
            high=1.0,
            low_inclusive=True,
            group_by=frozenset({"workload", "workspace"}),
            filters=frozenset({"workload", "workspace"}),
            max_group_by=1,
            windowed=True,
            summary="Too many batch requests errored or expired.",
            action=(
                "Look at the batch errors by type: invalid requests need fixing at the source; "
                "expired ones need smaller or earlier batches. Failed requests are not retried."
            ),
        ),
        KindSpec(
            name="batch_expiry_risk",
            op=">=",
            unit="life",
            low=0.0,
            high=1.0,
            low_inclusive=False,
            group_by=frozenset({"workload", "workspace"}),
            filters=frozenset({"workload", "workspace"}),
            max_group_by=2,
            windowed=False,
            summary=("A batch is still running late in its 24 h life and may expire unfinished."),
            action=(
                "If its results are needed soon, cancel it and send the unfinished requests in "
                "real time or in smaller batches; expired requests are not billed but are lost."
            ),
        ),
        KindSpec(
            name="cost_drift",
            op=">",
            unit="ratio",
            low=0.0,
            high=1.0,
            low_inclusive=True,
            group_by=frozenset({"model"}),
            filters=frozenset({"model"}),
            max_group_by=1,
            windowed=True,
            summary="The cost computed from usage differs from what Anthropic billed.",
            action=(
                "Compare the price table with the bill: a new model, a price change or a modifier"
                " (data residency, long context) is missing. Add a [[prices]] entry if so."
            ),
        ),
        KindSpec(
            name="spend_increase",
            op=">",
            unit="ratio",
            low=0.0,
            high=1000.0,
            low_inclusive=False,
            group_by=frozenset({"workspace"}),
            filters=frozenset({"workspace"}),
            max_group_by=1,
            windowed=True,
            summary="Spend grew faster than expected compared with the previous window.",
            action=(
                "Find which workspace and model grew on the cost dashboard, and whether it was "
                "planned."
            ),
        ),
        KindSpec(
            name="batch_candidate",
            op=">=",
            unit="usd",
            low=0.0,
            high=None,
            low_inclusive=True,
            group_by=frozenset({"workload"}),
            filters=frozenset({"workload"}),
            max_group_by=1,
            windowed=True,
            summary=("A real-time workload could move to the Message Batches API and save money."),
            action=(
                "If the workload can wait up to 24 h for answers, submit it as Message Batches "
                "(50 % off every token)."
            ),
        ),
        KindSpec(
            name="collector_stale",
            op=">",
            unit="seconds",
            low=0.0,
            high=None,
            low_inclusive=False,
            group_by=frozenset(),
            filters=frozenset({"source"}),
            max_group_by=0,
            windowed=False,
            summary=(
                "A data source has not been collected successfully for a while; figures and "
                "alerts built on it are stale."
            ),
            action=(
                "Check the daemon's log for collect errors (API key, network, rate limits) and "
                "run `batch-monitor collect` by hand to see the error."
            ),
        ),
    )
}


# --- defaults and configuration -----------------------------------------------------------


def default_entries(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Return the default rules as ``[[rules]]`` entries (the candidate rule follows [advisor])."""
    min_savings = settings.advisor.min_monthly_savings if settings is not None else Decimal(10)
    advisor_window = fmt.duration(settings.advisor.window) if settings is not None else "30d"
    return [
        {"name": "batch_share_requests", "kind": "batch_share", "basis": "requests",
         "threshold": 0.50, "window": "24h", "for": "30m", "severity": "warning"},
        {"name": "batch_share_spend", "kind": "batch_share", "basis": "spend",
         "threshold": 0.40, "window": "24h", "for": "30m", "severity": "warning"},
        {"name": "batch_turnaround_p95", "kind": "batch_turnaround_p95", "threshold": "90m",
         "window": "24h", "severity": "warning"},
        {"name": "batch_turnaround_p95", "kind": "batch_turnaround_p95", "threshold": "2h",
         "window": "24h", "severity": "critical"},
        {"name": "batch_failure_rate", "kind": "batch_failure_rate", "threshold": 0.005,
         "window": "24h", "severity": "critical"},
        {"name": "batch_expiry_risk", "kind": "batch_expiry_risk", "threshold": "12h",
         "severity": "warning"},
        {"name": "cost_drift", "kind": "cost_drift", "threshold": 0.02, "window": "3d",
         "severity": "warning", "repeat_interval": "24h"},
        {"name": "spend_increase", "kind": "spend_increase", "threshold": 0.25, "window": "7d",
         "severity": "warning", "repeat_interval": "24h"},
        {"name": "batch_candidate", "kind": "batch_candidate", "threshold": min_savings,
         "window": advisor_window, "severity": "info", "repeat_interval": "0s",
         "send_resolved": False, "keep_firing_for": "7d"},
        {"name": "collector_stale", "kind": "collector_stale", "threshold": "30m",
         "severity": "critical", "repeat_interval": "1h"},
    ]  # fmt: skip


def _threshold(kind: KindSpec, raw: Any) -> Decimal | float:
    """Parse a threshold in ``kind``'s unit, exactly; raise ValueError with a readable reason."""
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, got {raw!r}")
    value: Decimal | float
    if kind.unit in ("seconds", "life") and isinstance(raw, str):
        seconds = fmt.parse_duration(raw).total_seconds()
        value = seconds / BATCH_LIFE.total_seconds() if kind.unit == "life" else seconds
    elif isinstance(raw, int | float | Decimal) and kind.unit == "usd":
        # Money is exact: through str, a TOML float like 10.1 means 10.1, not its neighbour.
        value = Decimal(str(raw))
    elif isinstance(raw, int | float | Decimal):
        value = float(raw)
    else:
        unit = {
            "ratio": "a ratio such as 0.05",
            "seconds": 'a duration such as "90m" (or seconds)',
            "life": 'a fraction of the 24 h batch life such as 0.5, or a duration such as "12h"',
            "usd": "an amount in USD such as 25",
        }[kind.unit]
        raise ValueError(f"must be {unit}, got {raw!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {raw!r}")
    low_ok = value >= kind.low if kind.low_inclusive else value > kind.low
    high_ok = kind.high is None or value <= kind.high
    if not (low_ok and high_ok):
        low = f"{'>=' if kind.low_inclusive else '>'} {kind.fmt(kind.low)}"
        high = f" and <= {kind.fmt(kind.high)}" if kind.high is not None else ""
        raise ValueError(f"out of range: must be {low}{high}, got {raw!r}")
    return value


def _string_table(raw: Any, what: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f'must be a table of strings, like {what} = {{ key = "value" }}')
    bad = [k for k, v in raw.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"values must be strings (not for {', '.join(map(str, bad))})")
    return {str(k): v for k, v in raw.items()}


def _build(entry: Mapping[str, Any], problem: Callable[[str, str], None]) -> Rule | None:
    """Build a Rule from a merged entry, reporting each bad field through ``problem``."""
    ok = True

    def bad(key: str, message: str) -> None:
        nonlocal ok
        ok = False
        problem(key, message)

    for key in sorted(set(map(str, entry)) - ENTRY_KEYS):
        bad(key, "unknown key (known: " + ", ".join(sorted(ENTRY_KEYS)) + ")")

    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        bad(
            "name",
            f"required: letters, digits, '_', '.', '-', starting with a letter; got {name!r}",
        )
    kind_name = entry.get("kind")
    kind = SPECS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        if kind_name is None:
            bad("kind", "required (one of " + ", ".join(SPECS) + ")")
        else:
            bad("kind", f"unknown kind {kind_name!r} (known: " + ", ".join(SPECS) + ")")

    threshold: Decimal | float = 0.0
    if "threshold" not in entry:
        bad("threshold", "required")
    elif kind is not None:
        try:
            threshold = _threshold(kind, entry["threshold"])
        except ValueError as exc:
            bad("threshold", str(exc))

    durations: dict[str, timedelta] = {}
    for key, default in (
        ("window", timedelta(hours=24)),
        ("for", timedelta(0)),
        ("keep_firing_for", timedelta(0)),
        ("repeat_interval", timedelta(hours=4)),
    ):
        durations[key] = default
        if key in entry:
            try:
                durations[key] = fmt.parse_duration(entry[key])
            except ValueError as exc:
                bad(key, str(exc))
    if durations["window"] <= timedelta(0):
        bad("window", "must be longer than 0s")

    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        bad("severity", f"must be one of {', '.join(SEVERITIES)}, got {severity!r}")

    flags: dict[str, bool] = {}
    for key in ("send_resolved", "enabled"):
        flags[key] = entry.get(key, True)
        if not isinstance(flags[key], bool):
            bad(key, f"must be true or false, got {flags[key]!r}")

    group_by: tuple[str, ...] = ()
    raw_group = entry.get("group_by", [])
    if isinstance(raw_group, str):
        raw_group = [raw_group]
    if not isinstance(raw_group, list) or not all(isinstance(g, str) for g in raw_group):
        bad("group_by", f"must be a list of label names, got {raw_group!r}")
    else:
        group_by = tuple(dict.fromkeys(raw_group))
        if kind is not None:
            unknown = [g for g in group_by if g not in kind.group_by]
            allowed = ", ".join(sorted(kind.group_by)) or "nothing"
            if unknown:
                bad(
                    "group_by", f"{kind.name} can be grouped by {allowed}, not {', '.join(unknown)}"
                )
            elif len(group_by) > kind.max_group_by:
                bad("group_by", f"{kind.name} can be grouped by one of {allowed} at a time")

    filters: dict[str, str] = {}
    if "filters" in entry:
        try:
            filters = _string_table(entry["filters"], "filters")
        except ValueError as exc:
            bad("filters", str(exc))
        if kind is not None:
            unknown = sorted(set(filters) - kind.filters)
            if unknown:
                allowed = ", ".join(sorted(kind.filters)) or "nothing"
                bad(
                    "filters", f"{kind.name} can be filtered by {allowed}, not {', '.join(unknown)}"
                )
            both = sorted(set(filters) & set(group_by))
            if both:
                bad("filters", f"{', '.join(both)} is both a filter and in group_by")

    labels: dict[str, str] = {}
    if "labels" in entry:
        try:
            labels = _string_table(entry["labels"], "labels")
        except ValueError as exc:
            bad("labels", str(exc))
        reserved = sorted(set(labels) & RESERVED_LABELS)
        if reserved:
            bad("labels", f"{', '.join(reserved)} is set by the rule itself and cannot be a label")

    annotations: dict[str, str] = {}
    if "annotations" in entry:
        try:
            annotations = _string_table(entry["annotations"], "annotations")
        except ValueError as exc:
            bad("annotations", str(exc))
        unknown = sorted(set(annotations) - set(ANNOTATION_KEYS))
        if unknown:
            bad(
                "annotations", f"unknown {', '.join(unknown)} (known: {', '.join(ANNOTATION_KEYS)})"
            )
        for key in ("runbook_url", "dashboard_url"):
            url = annotations.get(key)
            if url is not None and not re.match(r"^https?://\S+$", url):
                bad(f"annotations.{key}", f"must be an http(s) URL, got {url!r}")

    no_data = entry.get("no_data", "ok")
    if no_data not in NO_DATA_MODES:
        bad("no_data", f'must be "ok" or "firing", got {no_data!r}')

    basis = entry.get("basis", "requests")
    if "basis" in entry and kind is not None and kind.name != "batch_share":
        bad("basis", "only batch_share rules have a basis")
    elif basis not in ("requests", "spend"):
        bad("basis", f'must be "requests" or "spend", got {basis!r}')

    if not ok or kind is None:
        return None
    return Rule(
        name=str(name),
        kind=kind.name,
        threshold=threshold,
        severity=str(severity),
        window=durations["window"],
        for_=durations["for"],
        keep_firing_for=durations["keep_firing_for"],
        repeat_interval=durations["repeat_interval"],
        send_resolved=flags["send_resolved"],
        group_by=group_by,
        filters=filters,
        enabled=flags["enabled"],
        labels=labels,
        annotations=annotations,
        no_data=str(no_data),
        basis=str(basis),
    )


def _merge(entry: Mapping[str, Any], defaults: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fill the keys ``entry`` leaves out from the default of the same name (and severity)."""
    same = [d for d in defaults if d["name"] == entry.get("name")]
    if "severity" in entry:
        same = [d for d in same if d.get("severity", "warning") == entry["severity"]] or same
    if not same:
        return dict(entry)
    base = same[0]
    if "kind" in entry and entry["kind"] != base["kind"]:
        return dict(entry)  # a different kind shares nothing but the name
    return {**base, **entry}


def _build_all(
    entries: Sequence[Mapping[str, Any]],
    where: str,
    settings: Settings | None,
    *,
    with_defaults: bool,
) -> tuple[list[Rule], list[str]]:
    problems: list[str] = []
    defaults = default_entries(settings)
    rules: list[Rule] = []
    seen: dict[tuple[str, str], int] = {}
    for n, entry in enumerate(entries, start=1):
        label = f"{where} #{n}"
        if not isinstance(entry, Mapping):
            problems.append(f"{label}: must be a table with name, kind and threshold")
            continue
        if isinstance(entry.get("name"), str):
            label += f" ({entry['name']})"

        def problem(key: str, message: str, label: str = label) -> None:
            problems.append(f"{label}: {key}: {message}")

        rule = _build(_merge(entry, defaults), problem)
        if rule is None:
            continue
        key = (rule.name, rule.severity)
        if key in seen:
            problem("name", f"a {rule.severity} rule named {rule.name!r} is already #{seen[key]}")
            continue
        seen[key] = n
        rules.append(rule)
    if with_defaults:
        replaced = {str(e.get("name")) for e in entries if isinstance(e, Mapping)}
        kept = []
        for entry in defaults:
            if entry["name"] in replaced:
                continue
            rule = _build(entry, lambda k, m: problems.append(f"default rule: {k}: {m}"))
            if rule is not None:
                kept.append(rule)
        rules = kept + rules
    return rules, problems


def build_rules(
    entries: Sequence[Mapping[str, Any]],
    where: str,
    settings: Settings | None,
    *,
    with_defaults: bool,
) -> tuple[list[Rule], list[str]]:
    """Return the effective rules of ``entries`` (and the defaults) and every problem found."""
    return _build_all(entries, where, settings, with_defaults=with_defaults)


def validate_rule_entries(entries: Sequence[Mapping[str, Any]], where: str) -> list[str]:
    """Check ``[[rules]]`` entries and return every problem (empty when valid).

    Each message starts with ``where``, the entry's 1-based position and its name, then the
    field: ``"monitor.toml [[rules]] #2 (slow): window: invalid duration '5 min' ..."``.
    """
    return _build_all(entries, where, None, with_defaults=False)[1]
