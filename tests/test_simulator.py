"""The Anthropic API simulator, exercised over HTTP with the real ``anthropic`` SDK.

Every server a test starts is stopped by the test (the ``sim`` fixture closes it), and
everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import random
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from monitor import clock
from monitor.pricing import Usage, cost_of
from monitor.simulator import (
    TOKEN_TYPES,
    UNKNOWN_MODEL,
    Pricer,
    Scenario,
    SimulatorServer,
    Totals,
    analytics_refused,
    build_scenario,
    connection_reset,
    cut_stream,
    floor_time,
    late_revision,
    malformed_line,
    overloaded,
    parse_fault,
    price_drift,
    rate_limit,
    repeat_page,
    server_error,
    skip_page,
    slow,
    workload_of,
)

START = datetime(2026, 11, 15, tzinfo=UTC)
END = START + timedelta(days=2)


@pytest.fixture
def scenario() -> Scenario:
    return build_scenario("small")


@pytest.fixture
def sim(scenario: Scenario) -> Iterator[SimulatorServer]:
    server = SimulatorServer(scenario).start()
    try:
        yield server
    finally:
        server.close()


def client(sim: SimulatorServer, key: str, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.Anthropic(api_key=key, base_url=sim.url, **kwargs)


def ws_client(sim: SimulatorServer, index: int = 0, **kwargs: Any) -> anthropic.Anthropic:
    return client(sim, sim.scenario.workspaces[index].api_key, **kwargs)


def admin(sim: SimulatorServer, **kwargs: Any) -> anthropic.Anthropic:
    return client(sim, sim.scenario.admin_key, **kwargs)


def legacy(sim: SimulatorServer, path: str, params: dict[str, Any]) -> Any:
    return admin(sim).get(path, cast_to=object, options={"params": params})


def totals_of(results: list[Any]) -> dict[str, Totals]:
    """Sum succeeded SDK results per model, the way a collector would."""
    out: dict[str, Totals] = {}
    for r in results:
        if r.result.type != "succeeded":
            continue
        m = r.result.message
        u = m.usage
        part = Totals(
            requests=1,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_5m_tokens=u.cache_creation.ephemeral_5m_input_tokens,
            cache_write_1h_tokens=u.cache_creation.ephemeral_1h_input_tokens,
            web_searches=u.server_tool_use.web_search_requests if u.server_tool_use else 0,
        )
        out[m.model] = out.get(m.model, Totals()) + part
    return out


def token_view(t: Totals) -> tuple[int, ...]:
    return (
        t.requests,
        t.input_tokens,
        t.output_tokens,
        t.cache_read_tokens,
        t.cache_write_5m_tokens,
        t.cache_write_1h_tokens,
        t.web_searches,
    )


# --- scenarios ----------------------------------------------------------------------------


def test_scenarios_are_deterministic_and_seeded() -> None:
    a, b, c = build_scenario("org"), build_scenario("org"), build_scenario("org", seed=1)
    assert [x.id for x in a.batches] == [x.id for x in b.batches]
    assert a.calls == b.calls
    assert [x.id for x in a.batches] != [x.id for x in c.batches]
    spec_a, spec_b = a.batches[5], b.batches[5]
    assert list(a.result_lines(spec_a)) == list(b.result_lines(spec_b))
    # Scale: enough to page through, generated lazily.
    assert len(a.batches) >= 150
    assert sum(x.n for x in a.batches) >= 5_000
    assert len(a.calls) >= 1_000


def test_small_scenario_covers_every_case(scenario: Scenario) -> None:
    truth = scenario.truth(END)
    counts = truth.result_counts()
    for kind in ("succeeded", "errored", "canceled", "expired", "processing"):
        assert counts[kind] > 0, kind
    errors: Counter[str] = Counter()
    for b in truth.batches.values():
        errors.update(b.errors)
    assert {"invalid_request_error", "overloaded_error", "rate_limit_error"} <= set(errors)
    statuses = Counter(b.processing_status for b in truth.batches.values())
    assert statuses["ended"] and statuses["in_progress"]
    assert any(b.archived_at and not b.results_available for b in truth.batches.values())
    assert UNKNOWN_MODEL in truth.unpriced_models()
    priorities = Counter(c.service_tier for c in scenario.calls)
    assert priorities["priority"] and priorities["standard"]
    # Majority workload of a batch with a few requests of another workload mixed in.
    mixed = next(b for b in truth.batches.values() if b.workload == "contentgen" and b.errors)
    assert mixed.workload == "contentgen"


def test_org_scenario_has_the_named_workloads_and_odd_batches() -> None:
    org = build_scenario("org")
    truth = org.truth()
    assert {"contentgen", "classify", "weekly_report", "codereview"} <= set(truth.workloads)
    assert {"chat", "codereview", "research"} <= {c.workload for c in org.calls}
    ended = [b for b in truth.batches.values() if b.ended_at]
    assert any(b.counts["expired"] for b in ended)
    assert any(b.counts["canceled"] for b in ended)
    assert any(b.turnaround_seconds and b.turnaround_seconds > 4 * 3600 for b in ended)
    near = [b for b in truth.batches.values() if b.processing_status == "in_progress"]
    assert any(truth.now - b.created_at > timedelta(hours=20) for b in near)
    geos = {org.batches[3].source.request(i).inference_geo for i in range(50)}
    assert geos  # requests carry geo (None for pre-4.6 models)
    assert workload_of("weekly_report_47_3") == "weekly_report"
    assert workload_of("classify-2026111503-0042") == "classify"


def test_pricer_matches_the_pricing_engine_exactly() -> None:
    pricer = Pricer()
    rng = random.Random(7)
    models = ["claude-haiku-5-5", "claude-sonnet-4-6", "claude-opus-4-7", "claude-sonnet-5-5"]
    for _ in range(400):
        model = rng.choice(models)
        tokens = tuple(rng.choice([0, rng.randint(1, 250_000)]) for _ in range(5))
        searches = rng.choice([0, 2])
        geo = rng.choice([None, "us", "global"])
        at = START + timedelta(minutes=rng.randint(0, 60 * 24 * 60))
        got = pricer.price(model, tokens, searches, geo, at)  # type: ignore[arg-type]
        want = cost_of(
            model,
            Usage(
                input_tokens=tokens[0],
                cache_write_5m_tokens=tokens[1],
                cache_write_1h_tokens=tokens[2],
                cache_read_tokens=tokens[3],
                output_tokens=tokens[4],
                web_searches=searches,
                inference_geo=geo,
            ),
            at,
        )
        assert (got.standard, got.batch) == (want.standard_usd, want.batch_usd)
        assert sum(got.billed_batch, Decimal(0)) == want.batch_usd


# --- Message Batches ----------------------------------------------------------------------


def test_list_auto_paginates_newest_first(sim: SimulatorServer) -> None:
    ws = sim.scenario.workspaces[0]
    truth = sim.scenario.truth(sim.now())
    expected = [b.id for b in truth.batches_in(ws.id)]
    assert len(expected) > 6
    seen = [b.id for b in ws_client(sim).messages.batches.list(limit=3)]
    assert seen == expected
    assert sim.request_counts["batches.list"] == -(-len(expected) // 3)


def test_list_after_and_before_id(sim: SimulatorServer) -> None:
    c = ws_client(sim)
    page1 = c.messages.batches.list(limit=2)
    assert page1.has_more and page1.first_id == page1.data[0].id
    page2 = c.messages.batches.list(limit=2, after_id=page1.last_id)
    back = c.messages.batches.list(limit=2, before_id=page2.first_id)
    assert [b.id for b in back.data] == [b.id for b in page1.data]
    assert back.has_more is False
    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError):
            c.messages.batches.list(limit=bad)


def test_batch_lifecycle_follows_simulated_time(sim: SimulatorServer) -> None:
    ws = sim.scenario.workspaces[0]
    spec = next(
        b for b in sim.scenario.batches if b.workspace_id == ws.id and b.workload == "contentgen"
    )
    c = ws_client(sim)
    sim.set_now(spec.created_at - timedelta(seconds=1))
    with pytest.raises(anthropic.NotFoundError):
        c.messages.batches.retrieve(spec.id)
    sim.advance(timedelta(minutes=5))
    b = c.messages.batches.retrieve(spec.id)
    assert b.processing_status == "in_progress"
    assert b.request_counts.processing == spec.n
    assert b.request_counts.succeeded == 0 and b.ended_at is None and b.results_url is None
    assert b.expires_at - b.created_at == timedelta(hours=24)
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        list(c.messages.batches.results(spec.id))
    sim.set_now(spec.created_at + spec.duration + timedelta(seconds=1))
    b = c.messages.batches.retrieve(spec.id)
    truth = sim.scenario.truth(sim.now()).batch(spec.id)
    assert b.processing_status == "ended"
    assert b.request_counts.model_dump() == truth.counts
    assert b.ended_at == truth.ended_at
    assert b.results_url == f"{sim.url}/v1/messages/batches/{spec.id}/results"
    assert b.archived_at is None


def test_results_stream_every_type_and_match_truth(sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    kinds: Counter[str] = Counter()
    checked = 0
    for index, ws in enumerate(sim.scenario.workspaces):
        c = ws_client(sim, index)
        for bt in truth.batches_in(ws.id):
            if not bt.results_available:
                continue
            results = list(c.messages.batches.results(bt.id))
            ids = [r.custom_id for r in results]
            assert len(ids) == len(set(ids)) == bt.request_count
            by_type = Counter(r.result.type for r in results)
            assert {k: by_type.get(k, 0) for k in bt.counts if k != "processing"} == {
                k: v for k, v in bt.counts.items() if k != "processing"
            }
            got = totals_of(results)
            assert {m: token_view(t) for m, t in got.items()} == {
                m: token_view(t) for m, t in bt.by_model.items()
            }
            errors = Counter(
                r.result.error.error.type for r in results if r.result.type == "errored"
            )
            assert dict(errors) == bt.errors
            for r in results:
                if r.result.type == "errored":
                    assert r.result.error.request_id.startswith("req_")
                    assert r.result.error.error.message
                if r.result.type == "succeeded":
                    assert r.result.message.usage.service_tier == "batch"
            kinds.update(by_type)
            checked += 1
    assert checked >= 6
    assert set(kinds) == {"succeeded", "errored", "canceled", "expired"}


def test_results_lines_are_newline_terminated_and_unsorted(sim: SimulatorServer) -> None:
    ws = sim.scenario.workspaces[0]
    spec = max(
        (b for b in sim.scenario.batches if b.workspace_id == ws.id and b.created_at > START),
        key=lambda b: b.n,
    )
    url = f"{sim.url}/v1/messages/batches/{spec.id}/results"
    resp = httpx2.get(url, headers={"x-api-key": ws.api_key})
    assert resp.status_code == 200
    assert resp.headers["transfer-encoding"] == "chunked"
    assert b"\r" not in resp.content and resp.content.endswith(b"\n")
    ids = [orjson.loads(line)["custom_id"] for line in resp.content.splitlines()]
    assert ids != sorted(ids)


def test_archived_batch_is_listed_but_has_no_results(sim: SimulatorServer) -> None:
    ws = sim.scenario.workspaces[0]
    spec = min(
        (b for b in sim.scenario.batches if b.workspace_id == ws.id), key=lambda b: b.created_at
    )
    c = ws_client(sim)
    b = c.messages.batches.retrieve(spec.id)
    assert b.archived_at == spec.created_at + timedelta(days=29)
    assert b.processing_status == "ended" and b.results_url
    with pytest.raises(anthropic.NotFoundError):
        list(c.messages.batches.results(spec.id))


def test_cancel_then_ends_with_canceled_requests(sim: SimulatorServer) -> None:
    ws = sim.scenario.workspaces[0]
    spec = next(
        b
        for b in sim.scenario.batches
        if b.workspace_id == ws.id and b.duration > timedelta(minutes=30)
    )
    sim.set_now(spec.created_at + spec.duration / 4)
    c = ws_client(sim)
    b = c.messages.batches.cancel(spec.id)
    assert b.processing_status == "canceling"
    assert b.cancel_initiated_at == sim.now()
    sim.advance(timedelta(minutes=5))
    b = c.messages.batches.retrieve(spec.id)
    assert b.processing_status == "ended"
    assert b.request_counts.canceled > 0
    assert sum(b.request_counts.model_dump().values()) == spec.n
    truth = sim.scenario.truth(sim.now()).batch(spec.id)
    assert truth.counts == b.request_counts.model_dump()
    results = list(c.messages.batches.results(spec.id))
    assert Counter(r.result.type for r in results)["canceled"] == truth.counts["canceled"]


def test_create_runs_and_derives_results_from_params(sim: SimulatorServer) -> None:
    c = ws_client(sim)
    created = c.messages.batches.create(
        requests=[
            {
                "custom_id": "adhoc-1",
                "params": {
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "Hello " * 100}],
                },
            },
            {
                "custom_id": "adhoc-2",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 1000,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                },
            },
            {
                "custom_id": "adhoc-3",
                "params": {  # no max_tokens: errored, like the reference example
                    "model": "claude-sonnet-4-6",
                    "messages": [{"role": "user", "content": "x"}],
                },
            },
        ]
    )
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert c.messages.batches.list(limit=1).data[0].id == created.id
    sim.advance(timedelta(minutes=10))
    done = c.messages.batches.retrieve(created.id)
    assert done.processing_status == "ended"
    assert (done.request_counts.succeeded, done.request_counts.errored) == (2, 1)
    results = {r.custom_id: r.result for r in c.messages.batches.results(created.id)}
    assert results["adhoc-1"].message.model == "claude-sonnet-4-6"
    assert results["adhoc-1"].message.usage.output_tokens == 50  # capped by max_tokens
    assert results["adhoc-1"].message.stop_reason == "max_tokens"
    assert results["adhoc-2"].message.usage.input_tokens < 20
    error = results["adhoc-3"].error.error
    assert (error.type, error.message) == ("invalid_request_error", "max_tokens: Field required")
    # Its usage shows up in the reports in the hour it ended, as batch usage.
    truth = sim.scenario.truth(sim.now())
    hour = floor_time(done.ended_at, "1h")
    rows = list(
        admin(sim).beta.organization.analytics.usage.list(
            starting_at=hour,
            ending_at=hour + timedelta(hours=1),
            time_bucket_width="1h",
            group_by=["product"],
            products=["message_batches_api"],
        )
    )
    expected = truth.usage(hour, hour + timedelta(hours=1), product="message_batches_api")
    assert expected.requests >= 2
    assert sum(r.usage.requests for r in rows) == expected.requests


def test_create_validates_custom_ids(sim: SimulatorServer) -> None:
    c = ws_client(sim)
    params = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []}
    for bad in (
        [{"custom_id": "has space", "params": params}],
        [{"custom_id": "x" * 65, "params": params}],
        [{"custom_id": "dup", "params": params}, {"custom_id": "dup", "params": params}],
    ):
        with pytest.raises(anthropic.BadRequestError, match="custom_id"):
            c.messages.batches.create(requests=bad)  # type: ignore[arg-type]


def test_delete_needs_an_ended_batch(sim: SimulatorServer) -> None:
    ws = sim.scenario.workspaces[0]
    truth = sim.scenario.truth(sim.now())
    ended = next(b for b in truth.batches_in(ws.id) if b.processing_status == "ended")
    running = next(b for b in truth.batches_in(ws.id) if b.processing_status == "in_progress")
    c = ws_client(sim)
    with pytest.raises(anthropic.BadRequestError):
        c.messages.batches.delete(running.id)
    assert c.messages.batches.delete(ended.id).type == "message_batch_deleted"
    assert ended.id not in {b.id for b in c.messages.batches.list(limit=100)}


# --- auth and workspaces ------------------------------------------------------------------


def test_wrong_key_is_401_with_both_header_styles(sim: SimulatorServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        client(sim, "sk-ant-api03-wrong").messages.batches.list()
    assert info.value.request_id and info.value.request_id.startswith("req_")
    url = f"{sim.url}/v1/messages/batches"
    resp = httpx2.get(url, headers={"x-api-key": "sk-ant-nope"})
    assert resp.status_code == 401
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert body["request_id"] == resp.headers["request-id"]
    assert httpx2.get(url).status_code == 401
    good = httpx2.get(url, headers={"x-api-key": sim.scenario.workspaces[0].api_key})
    assert good.status_code == 200
    assert good.headers["anthropic-workspace-id"] == sim.scenario.workspaces[0].id


def test_workspace_isolation(sim: SimulatorServer) -> None:
    a, b = sim.scenario.workspaces[:2]
    theirs = next(x for x in sim.scenario.batches if x.workspace_id == b.id)
    ca = ws_client(sim, 0)
    with pytest.raises(anthropic.NotFoundError):
        ca.messages.batches.retrieve(theirs.id)
    listed = {x.id for x in ca.messages.batches.list(limit=1000)}
    assert listed and all(sim.scenario.batch_spec(i).workspace_id == a.id for i in listed)  # type: ignore[union-attr]
    ca.messages.batches.list(workspace_id=a.id)  # a matching header is fine
    with pytest.raises(anthropic.PermissionDeniedError):
        ca.messages.batches.list(workspace_id=b.id)


def test_reports_need_the_admin_key_and_batches_a_workspace_key(sim: SimulatorServer) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        ws_client(sim).beta.organization.analytics.usage.list(starting_at=START)
    with pytest.raises(anthropic.AuthenticationError):
        ws_client(sim).get(
            "/v1/organizations/cost_report",
            cast_to=object,
            options={"params": {"starting_at": START}},
        )
    with pytest.raises(anthropic.PermissionDeniedError):
        admin(sim).messages.batches.list()


# --- faults -------------------------------------------------------------------------------


def test_sdk_retries_429_honouring_retry_after(sim: SimulatorServer) -> None:
    fault = sim.add_fault(rate_limit(retry_after=0.3, times=1, endpoint="batches.list"))
    c = ws_client(sim, max_retries=2)
    before = sim.now()
    import time as _time

    t0 = _time.perf_counter()
    assert c.messages.batches.list(limit=1).data
    assert _time.perf_counter() - t0 >= 0.3
    assert fault.fired == 1 and sim.request_counts["batches.list"] == 2
    assert sim.now() == before  # the simulated clock does not move by itself
    sim.faults = [rate_limit(retry_after=None, retry_after_ms=50, times=1)]
    assert c.messages.batches.list(limit=1).data
    sim.faults = [rate_limit(retry_after=0, times=5)]
    with pytest.raises(anthropic.RateLimitError) as info:
        ws_client(sim).messages.batches.list()
    assert info.value.response.headers["retry-after"] == "0"


def test_529_and_500_are_retried_then_raised(sim: SimulatorServer) -> None:
    sim.faults = [overloaded(times=1, retry_after=0.05)]
    assert ws_client(sim, max_retries=1).messages.batches.list(limit=1).data
    sim.faults = [overloaded(times=1)]
    with pytest.raises(anthropic.InternalServerError) as info:
        ws_client(sim).messages.batches.list()
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    sim.faults = [server_error(times=1)]
    with pytest.raises(anthropic.InternalServerError) as info:
        ws_client(sim).messages.batches.list()
    assert info.value.status_code == 500
    assert ws_client(sim).messages.batches.list(limit=1).data  # exhausted: healthy again


def test_slow_responses_time_out(sim: SimulatorServer) -> None:
    sim.faults = [slow(0.5, times=1)]
    with pytest.raises(anthropic.APITimeoutError):
        ws_client(sim, timeout=0.1).messages.batches.list()
    assert ws_client(sim, timeout=5).messages.batches.list(limit=1).data


def _batch_with_results(sim: SimulatorServer, at_least: int = 20) -> str:
    truth = sim.scenario.truth(sim.now())
    ws = sim.scenario.workspaces[0]
    return next(
        b.id for b in truth.batches_in(ws.id) if b.results_available and b.request_count >= at_least
    )


def test_cut_stream_raises_on_the_client_then_recovers(sim: SimulatorServer) -> None:
    batch_id = _batch_with_results(sim)
    fault = sim.add_fault(cut_stream(5, batch_id=batch_id, times=1))
    c = ws_client(sim)
    got = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for r in c.messages.batches.results(batch_id):
            got.append(r)
    assert len(got) <= 5 and fault.fired == 1
    assert len(list(c.messages.batches.results(batch_id))) >= 20


def test_malformed_line_then_recovers(sim: SimulatorServer) -> None:
    batch_id = _batch_with_results(sim)
    sim.add_fault(malformed_line(3, batch_id=batch_id, times=1))
    c = ws_client(sim)
    got = []
    with pytest.raises(json.JSONDecodeError):
        for r in c.messages.batches.results(batch_id):
            got.append(r)
    assert len(got) == 2
    assert len(list(c.messages.batches.results(batch_id))) >= 20


def test_connection_reset_gives_no_answer_and_the_sdk_retries(sim: SimulatorServer) -> None:
    fault = sim.add_fault(connection_reset(times=1, endpoint="batches.list"))
    with pytest.raises(anthropic.APIConnectionError):
        ws_client(sim).messages.batches.list(limit=1)
    assert fault.fired == 1
    sim.add_fault(connection_reset(times=2))
    assert ws_client(sim, max_retries=2).messages.batches.list(limit=1).data


def _read_results(sim: SimulatorServer, batch_id: str) -> list[bytes]:
    lines: list[bytes] = []
    with ws_client(sim).messages.batches.with_streaming_response.results(batch_id) as response:
        for line in response.iter_bytes():
            lines.append(line)
    return b"".join(lines).splitlines()


def test_cut_stream_at_a_fraction_cuts_anywhere_even_mid_line(sim: SimulatorServer) -> None:
    batch_id = _batch_with_results(sim)
    whole = b"\n".join(_read_results(sim, batch_id)) + b"\n"
    for at in (0.0, 0.37, 0.999, 1.0):  # 1.0 still cuts: one byte short
        got: list[bytes] = []
        sim.add_fault(cut_stream(at=at, batch_id=batch_id))
        with (
            pytest.raises(httpx2.RemoteProtocolError),
            ws_client(sim).messages.batches.with_streaming_response.results(batch_id) as r,
        ):
            got.extend(r.iter_bytes())
        body = b"".join(got)
        assert whole.startswith(body)
        assert len(body) == max(1, min(len(whole) - 1, int(at * len(whole))))
    assert b"\n".join(_read_results(sim, batch_id)) + b"\n" == whole  # healthy again


def test_malformed_line_at_a_fraction(sim: SimulatorServer) -> None:
    batch_id = _batch_with_results(sim)
    n = len(_read_results(sim, batch_id))
    sim.add_fault(malformed_line(at=0.5, batch_id=batch_id))
    lines = _read_results(sim, batch_id)
    bad = [i for i, line in enumerate(lines, 1) if not _parses(line)]
    assert bad == [1 + n // 2] and len(lines) == n


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _usage_pages(sim: SimulatorServer, limit: int = 20) -> list[Any]:
    first = admin(sim).beta.organization.analytics.usage.list(
        starting_at=START,
        ending_at=START + timedelta(days=1),
        time_bucket_width="1h",
        group_by=["model"],
        limit=limit,
    )
    pages = []
    for page in first.iter_pages():
        pages.append(page)
        if len(pages) > 10:
            break
    return pages


def test_repeat_page_points_the_cursor_back(sim: SimulatorServer) -> None:
    healthy = _usage_pages(sim)
    assert len(healthy) >= 2
    rows = [(d.starting_at, d.group.model) for p in healthy for d in p.data]
    # On the first page: the same page comes again under a new cursor, then the rest.
    fault = sim.add_fault(repeat_page(endpoint="analytics.usage"))
    pages = _usage_pages(sim)
    assert fault.fired == 1 and len(pages) == len(healthy) + 1
    assert [d.starting_at for d in pages[0].data] == [d.starting_at for d in pages[1].data]
    assert [(d.starting_at, d.group.model) for p in pages[1:] for d in p.data] == rows
    # On a later page: the page before again, its next_page the cursor just sent.
    sim.add_fault(repeat_page(endpoint="analytics.usage"))
    again = _usage_pages(sim)[0].get_next_page()
    assert again.next_page == healthy[0].next_page and again.has_more is True
    assert [d.starting_at for d in again.data] == [d.starting_at for d in healthy[0].data]


def test_skip_page_says_more_without_a_cursor(sim: SimulatorServer) -> None:
    fault = sim.add_fault(skip_page(endpoint="analytics"))
    pages = _usage_pages(sim)
    # The SDK stops at the missing cursor: what a client must not take as the whole range.
    assert len(pages) == 1 and pages[0].has_more is True and pages[0].next_page is None
    assert fault.fired == 1 and len(_usage_pages(sim)) >= 2
    sim.add_fault(skip_page(endpoint="usage_report.messages"))
    params = {"starting_at": START.isoformat(), "bucket_width": "1h", "limit": 24}
    body = legacy(sim, "/v1/organizations/usage_report/messages", params)
    assert body["has_more"] is True and body["next_page"] is None


def test_late_revision_counts_the_rows_it_served_provisional(sim: SimulatorServer) -> None:
    sim.set_now(START + timedelta(hours=12, minutes=5))
    fault = sim.add_fault(late_revision("0.5", lag=timedelta(minutes=30)))
    items = list(_usage_pages(sim, limit=1000)[0].data)
    last = [d for d in items if d.ending_at == START + timedelta(hours=12)]
    assert last and fault.fired == len(last)


def test_parse_fault_specs() -> None:
    f = parse_fault("rate_limit:times=3,retry_after=2,endpoint=batches.list")
    assert (f.kind, f.times, f.retry_after, f.endpoint) == ("rate_limit", 3, 2.0, "batches.list")
    assert f.matches("batches.list") and not f.matches("batches.retrieve")
    assert parse_fault("rate_limit").retry_after == 1
    d = parse_fault("price_drift:claude-sonnet-4-6=1.05")
    assert d.drift == {"claude-sonnet-4-6": Decimal("1.05")}
    r = parse_fault("late_revision:fraction=0.5,lag=300")
    assert (r.fraction, r.lag) == (Decimal("0.5"), timedelta(minutes=5))
    c = parse_fault("cut_stream:line=10")
    assert (c.endpoint, c.times, c.line) == ("batches.results", 1, 10)
    c = parse_fault("cut_stream:at=0.37")
    assert (c.endpoint, c.times, c.at) == ("batches.results", 1, 0.37)
    m = parse_fault("malformed_line:at=0.5,times=2")
    assert (m.endpoint, m.times, m.at) == ("batches.results", 2, 0.5)
    assert parse_fault("connection_reset:times=2").times == 2
    p = parse_fault("repeat_page:endpoint=analytics.cost")
    assert (p.kind, p.times, p.endpoint) == ("repeat_page", 1, "analytics.cost")
    assert parse_fault("skip_page").times == 1
    assert parse_fault("analytics_refused:status=404").matches("analytics.cost")
    for bad in ("nope", "slow:delay", "rate_limit:colour=red", "cut_stream:at=1.5"):
        with pytest.raises(ValueError):
            parse_fault(bad)


# --- reports ------------------------------------------------------------------------------


def test_analytics_usage_via_sdk_pages_and_matches_truth(sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    rows = admin(sim).beta.organization.analytics.usage.list(
        starting_at=START,
        ending_at=END,
        time_bucket_width="1h",
        group_by=["product", "service_tier", "model", "workspace_id"],
        limit=7,
    )
    items = list(rows)
    assert sim.request_counts["analytics.usage"] > 2  # auto-paginated
    assert rows.data_refreshed_at == sim.now()
    for product in ("messages_api", "message_batches_api"):
        want = truth.usage(START, END, product=product)
        mine = [r for r in items if r.group.product == product]
        assert sum(r.usage.requests or 0 for r in mine) == want.requests
        assert sum(r.usage.total_tokens for r in mine) == want.total_tokens
        assert sum(r.usage.output_tokens for r in mine) == want.output_tokens
        assert sum(r.usage.server_tool_use.web_search_requests for r in mine) == want.web_searches
    tiers = {(r.group.product, r.group.service_tier) for r in items}
    assert ("message_batches_api", "batch") in tiers
    assert ("messages_api", "priority") in tiers
    default = sim.scenario.default_workspace.id
    assert default in {r.group.workspace_id for r in items}  # analytics tags the default ws
    for r in items:
        assert r.ending_at - r.starting_at == timedelta(hours=1)
        assert r.group.api_key_id is None  # not grouped by it


def test_analytics_cost_via_sdk_in_cents(sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    billed = sum(truth.billed_by_day(START, END).values(), Decimal(0))
    c = admin(sim).beta.organization.analytics.cost
    whole = list(c.list(starting_at=START, ending_at=END))
    assert len(whole) == 1 and whole[0].cost.currency == "USD"
    assert Decimal(whole[0].cost.amount) / 100 == billed
    assert whole[0].cost.requests == truth.usage(START, END).requests - sum(
        1 for x in sim.scenario.calls if x.service_tier == "priority" and x.at < END
    )
    split = list(
        c.list(
            starting_at=START,
            ending_at=END,
            time_bucket_width="1d",
            group_by=["model", "cost_type", "token_type"],
            limit=2,
        )
    )
    assert sum(Decimal(r.cost.amount) for r in split) / 100 == billed
    assert {r.group.token_type for r in split} >= set(TOKEN_TYPES) - {None}
    assert all(r.cost.requests is None for r in split)
    assert any(r.group.cost_type == "web_search" for r in split)


def test_analytics_rejects_history_before_2026_and_bad_params(sim: SimulatorServer) -> None:
    usage = admin(sim).beta.organization.analytics.usage
    with pytest.raises(anthropic.BadRequestError, match="2026-01-01"):
        usage.list(starting_at="2025-12-31T00:00:00Z", ending_at="2026-01-02T00:00:00Z")
    with pytest.raises(anthropic.BadRequestError):
        usage.list(starting_at=START, time_bucket_width="1h")  # needs ending_at
    with pytest.raises(anthropic.BadRequestError):
        usage.list(starting_at=START, ending_at=END, limit=1001)
    with pytest.raises(anthropic.BadRequestError):
        usage.list(starting_at=START, ending_at=END, time_bucket_width="1m")  # > 24 h
    # The beta header is required, as documented.
    resp = httpx2.get(
        f"{sim.url}/v1/organizations/analytics/usage",
        params={"starting_at": "2026-11-15T00:00:00Z"},
        headers={"x-api-key": sim.scenario.admin_key},
    )
    assert resp.status_code == 400


def test_analytics_refused_forces_fallback(sim: SimulatorServer) -> None:
    sim.faults = [analytics_refused(403)]
    with pytest.raises(anthropic.PermissionDeniedError):
        admin(sim).beta.organization.analytics.usage.list(starting_at=START)
    sim.faults = [analytics_refused(404)]
    with pytest.raises(anthropic.NotFoundError):
        admin(sim).beta.organization.analytics.cost.list(starting_at=START)
    # The legacy endpoints still answer.
    assert legacy(sim, "/v1/organizations/cost_report", {"starting_at": START})["data"]


def test_legacy_usage_report_pages_and_matches_truth(sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    params: dict[str, Any] = {
        "starting_at": START,
        "ending_at": END,
        "bucket_width": "1h",
        "limit": 24,
        "group_by": ["model", "service_tier", "workspace_id"],
    }
    buckets = []
    page = legacy(sim, "/v1/organizations/usage_report/messages", params)
    buckets.extend(page["data"])
    assert page["has_more"] is True and page["next_page"]
    while page["has_more"]:
        page = legacy(
            sim, "/v1/organizations/usage_report/messages", {**params, "page": page["next_page"]}
        )
        buckets.extend(page["data"])
    assert len(buckets) == 48  # every bucket, empty ones included
    rows = [r for b in buckets for r in b["results"]]
    assert all("requests" not in r for r in rows)
    want = truth.usage(START, END)
    assert sum(r["output_tokens"] for r in rows) == want.output_tokens
    assert sum(r["uncached_input_tokens"] for r in rows) == want.input_tokens
    assert sum(r["cache_creation"]["ephemeral_1h_input_tokens"] for r in rows) == (
        want.cache_write_1h_tokens
    )
    assert None in {r["workspace_id"] for r in rows}  # the default workspace is null
    assert all(r["api_key_id"] is None and r["context_window"] is None for r in rows)
    assert {r["service_tier"] for r in rows} == {"batch", "standard", "priority"}
    with pytest.raises(anthropic.BadRequestError):
        legacy(sim, "/v1/organizations/usage_report/messages", {**params, "limit": 169})


def test_legacy_cost_report_is_in_cents_per_day(sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    billed = truth.billed_by_day(START, END)
    plain = legacy(sim, "/v1/organizations/cost_report", {"starting_at": START, "ending_at": END})
    assert [b["starting_at"] for b in plain["data"]] == [
        "2026-11-15T00:00:00Z",
        "2026-11-16T00:00:00Z",
    ]
    for bucket in plain["data"]:
        day = datetime.fromisoformat(bucket["starting_at"]).date()
        (row,) = bucket["results"]
        assert Decimal(row["amount"]) / 100 == billed[day]
        assert row["currency"] == "USD" and row["model"] is None and row["token_type"] is None
    detailed = legacy(
        sim,
        "/v1/organizations/cost_report",
        {"starting_at": START, "ending_at": END, "group_by": ["description", "workspace_id"]},
    )
    rows = [r for b in detailed["data"] for r in b["results"]]
    assert {r["service_tier"] for r in rows} == {"batch", "standard"}  # never priority
    assert all(r["model"] and r["description"] and r["cost_type"] for r in rows)
    assert UNKNOWN_MODEL in {r["model"] for r in rows}  # billed though unpriced for us
    assert sum(Decimal(r["amount"]) for r in rows) / 100 == sum(billed.values(), Decimal(0))
    with pytest.raises(anthropic.BadRequestError):
        legacy(sim, "/v1/organizations/cost_report", {"starting_at": START, "bucket_width": "1h"})


def test_price_drift_multiplies_billed_amounts(sim: SimulatorServer) -> None:
    model = "claude-sonnet-4-6"
    events = sim.scenario.usage_events(sim.now())
    day = START.date()
    base = sum(
        (e.billed_usd for e in events if e.at.date() == day and e.service_tier != "priority"),
        Decimal(0),
    )
    part = sum(
        (
            e.billed_usd
            for e in events
            if e.at.date() == day and e.model == model and e.service_tier != "priority"
        ),
        Decimal(0),
    )
    assert part > 0
    sim.faults = [price_drift({model: "1.05"})]
    report = legacy(
        sim,
        "/v1/organizations/cost_report",
        {"starting_at": START, "ending_at": START + timedelta(days=1)},
    )
    amount = Decimal(report["data"][0]["results"][0]["amount"]) / 100
    assert amount == base + part * Decimal("0.05")
    rows = admin(sim).beta.organization.analytics.cost.list(
        starting_at=START, ending_at=START + timedelta(days=1)
    )
    assert Decimal(next(iter(rows)).cost.amount) / 100 == amount


def test_late_revision_shows_a_fraction_until_the_lag_passes(sim: SimulatorServer) -> None:
    spec = next(
        b for b in sim.scenario.batches if b.workload == "contentgen" and b.created_at > START
    )
    ended = spec.end()[0]
    hour = floor_time(ended, "1h")
    sim.set_now(ended + timedelta(minutes=1))
    sim.faults = [late_revision("0.8", timedelta(minutes=10))]
    truth = sim.scenario.truth(sim.now()).usage(hour, hour + timedelta(hours=1))

    def hour_tokens() -> int:
        rows = admin(sim).beta.organization.analytics.usage.list(
            starting_at=hour, ending_at=hour + timedelta(hours=1), time_bucket_width="1h"
        )
        return sum(r.usage.output_tokens for r in rows)

    assert hour_tokens() == int(truth.output_tokens * Decimal("0.8"))
    sim.set_now(hour + timedelta(hours=1, minutes=11))
    final = sim.scenario.truth(sim.now()).usage(hour, hour + timedelta(hours=1))
    assert hour_tokens() == final.output_tokens


def test_call_logs_agree_with_the_usage_report(sim: SimulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    written = sim.scenario.write_call_logs(path, end=END)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert written == len(lines) > 10
    assert {"timestamp", "endpoint", "model", "latency_ms", "service_tier", "priority"} <= set(
        lines[0]
    )
    assert any(x["priority"] == "high" for x in lines)
    per_hour: Counter[datetime] = Counter()
    for x in lines:
        at = datetime.fromisoformat(x["timestamp"].replace("Z", "+00:00"))
        per_hour[floor_time(at, "1h")] += x["input_tokens"] + x["output_tokens"]
    rows = admin(sim).beta.organization.analytics.usage.list(
        starting_at=START,
        ending_at=START + timedelta(days=1),
        time_bucket_width="1h",
        products=["messages_api"],
        limit=1000,
    )
    reported = {r.starting_at: r.usage.uncached_input_tokens + r.usage.output_tokens for r in rows}
    assert reported == dict(per_hour)


# --- server mechanics ---------------------------------------------------------------------


def test_large_batch_streams_with_flat_memory() -> None:
    n = 10_000
    scenario = build_scenario("large", batch_requests=n)
    spec = scenario.batches[0]
    key = scenario.workspaces[0].api_key
    with SimulatorServer(scenario) as server:
        url = f"{server.url}/v1/messages/batches/{spec.id}/results"
        tracemalloc.start()
        try:
            lines = total = 0
            with httpx2.stream("GET", url, headers={"x-api-key": key}) as resp:
                for line in resp.iter_lines():
                    lines += 1
                    total += len(line)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert lines == n
    assert peak < total / 4  # never the whole file in memory (about 6 MB here)


def test_close_stops_the_thread_and_frees_the_port(scenario: Scenario) -> None:
    server = SimulatorServer(scenario).start()
    port = server.port
    assert httpx2.get(f"{server.url}/v1/messages/batches").status_code == 401
    server.close()
    assert not any(t.name == f"anthropic-simulator:{port}" for t in threading.enumerate())
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{port}/v1/messages/batches", timeout=1)
    again = SimulatorServer(scenario, port=port).start()
    again.close()


def test_speed_mode_runs_simulated_time(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = [1000.0]
    monkeypatch.setattr(clock, "monotonic", lambda: wall[0])
    server = SimulatorServer(scenario, speed=60)
    try:
        assert server.now() == scenario.start
        wall[0] += 30
        assert server.now() == scenario.start + timedelta(minutes=30)
        server.set_now(END)
        wall[0] += 1
        assert server.now() == END + timedelta(minutes=1)
    finally:
        server.close()


def test_unknown_path_is_404(sim: SimulatorServer) -> None:
    resp = httpx2.get(f"{sim.url}/v1/nothing", headers={"x-api-key": sim.scenario.admin_key})
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found_error"
    assert sim.request_counts["not_found"] == 1


def test_analytics_ordering_and_actor_dimension(sim: SimulatorServer) -> None:
    usage = admin(sim).beta.organization.analytics.usage
    by_time = usage.list(
        starting_at=START,
        ending_at=END,
        time_bucket_width="1h",
        order_by="time",
        order="asc",
        limit=1000,
    ).data
    starts = [r.starting_at for r in by_time]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    ranked = usage.list(
        starting_at=START, ending_at=END, group_by=["model"], order_by="requests", limit=1000
    ).data
    counts = [r.usage.requests or 0 for r in ranked]
    assert counts == sorted(counts, reverse=True)
    actors = usage.list(starting_at=START, ending_at=END, group_by=["actor"], limit=1000).data
    keys = {k.id for k in sim.scenario.api_keys}
    for r in actors:
        assert r.group.actor is not None and r.group.actor.type == "api_actor"
        assert r.group.actor.api_key_id in keys  # type: ignore[union-attr]
    filtered = usage.list(
        starting_at=START, ending_at=END, models=[UNKNOWN_MODEL], group_by=["model"]
    ).data
    assert [r.group.model for r in filtered] == [UNKNOWN_MODEL]
    assert not usage.list(starting_at=START, ending_at=END, session_ids=["sesn_x"]).data
