"""One attribution rule for every record: a call-log line and a Message Batch request alike."""

from __future__ import annotations

import re

from monitor.workloads import Workload, WorkloadMap, attribute, strip_serial


def declared(name: str, match: str | None = None) -> Workload:
    return Workload(name, re.compile(match) if match else None, None, None)


def test_a_declared_name_claims_before_any_match_for_calls_and_batch_requests() -> None:
    m = WorkloadMap((declared("all", "."), declared("classify")))
    # 1. The name: a call's workload, else its endpoint; a batch request's custom_id.
    assert m.resolve("classify") == "classify"
    assert m.resolve("untagged", "classify") == "classify"
    assert m.of_custom_id("classify") == "classify"
    # 2. Else the first declaration whose match is found, in either kind of record.
    assert m.resolve("summarize") == "all"
    assert m.of_custom_id("classify-2026111503-0001") == "all"


def test_a_match_reads_the_identifier_as_written() -> None:
    # A custom_id's serial is still there for `match` (here: hourly jobs stamped YYYYMMDDHH).
    m = WorkloadMap((declared("hourly", r"-\d{10}-"), declared("chat", "^/api/chat")))
    assert m.of_custom_id("classify-2026111503-0001") == "hourly"
    assert m.resolve(None, "/api/chat/stream") == "chat"
    assert m.resolve("bot", "/api/chat") == "chat"  # found in the endpoint, not the workload


def test_unclaimed_records_keep_their_own_name() -> None:
    m = WorkloadMap((declared("chat", "^/api/chat"),))
    # A custom_id names one request: its trailing serial parts go.
    assert m.of_custom_id("classify-2026111503-0001") == "classify"
    assert m.of_custom_id("weekly_report_17_3") == "weekly_report"
    assert attribute("codereview-pr12-3") == "codereview" == strip_serial("codereview-pr12-3")
    # A call's workload (else endpoint) is a name the application chose: kept as written, and so
    # are the usage report's per-key names (ids must not fold into one another).
    assert m.resolve("summarize-v2") == "summarize-v2"
    assert m.resolve(None, "/v1/items-2") == "/v1/items-2"
    assert m.resolve("api_key:apikey_01") != m.resolve("api_key:apikey_02")
    assert m.resolve(None, None) == ""
