"""Helpers for tests that run collectors against the Anthropic simulator over HTTP: settings that
point every source at a simulator, and the check of stored batches against its ground truth."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import Session, col

from monitor.config import CollectSection, Settings, Workspace
from monitor.models import Batch, BatchError, BatchUsage
from monitor.simulator import SimulatorServer, Truth


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


def assert_matches_truth(session: Session, truth: Truth, *, archived_ok: bool = True) -> None:
    """Check every stored batch, usage row and error row against the scenario's truth."""
    stored = {b.id: b for b in session.execute(select(Batch)).scalars()}
    assert set(stored) == set(truth.batches)
    for bid, t in truth.batches.items():
        b = stored[bid]
        assert b.workspace_id == t.workspace_id, bid
        assert b.processing_status == t.processing_status, bid
        assert b.requests == t.request_count, bid
        got_counts = {k: getattr(b, k) for k in t.counts}
        assert got_counts == t.counts, bid
        assert b.created_at == t.created_at and b.ended_at == t.ended_at, bid
        assert b.turnaround_seconds == t.turnaround_seconds, bid
        assert (b.archived_at is not None) == (t.archived_at is not None), bid
        if t.ended_at is None:
            assert b.results_state == "pending" and b.workload is None
            continue
        if not t.results_available:
            # Results gone: recorded as having no token data, never as zero cost.
            assert b.results_state == "unavailable", bid
            assert b.cost_usd is None and b.workload is None, bid
            continue
        assert b.results_state == "ingested", (bid, b.results_error)
        assert b.workload == t.workload, bid
        assert b.cost_usd == t.cost_usd, bid
        assert b.standard_cost_usd == t.standard_cost_usd, bid
        tot = t.totals
        assert (b.input_tokens, b.output_tokens, b.cache_read_tokens) == (
            tot.input_tokens, tot.output_tokens, tot.cache_read_tokens,
        ), bid  # fmt: skip
        assert (b.cache_write_5m_tokens, b.cache_write_1h_tokens, b.web_searches) == (
            tot.cache_write_5m_tokens, tot.cache_write_1h_tokens, tot.web_searches,
        ), bid  # fmt: skip
        assert b.unpriced_requests == tot.unpriced_requests, bid
        usage = {
            u.model: u
            for u in session.execute(
                select(BatchUsage).where(col(BatchUsage.batch_id) == bid)
            ).scalars()
        }
        assert set(usage) == set(t.by_model), bid
        for model, mt in t.by_model.items():
            u = usage[model]
            assert u.requests == mt.requests and u.output_tokens == mt.output_tokens
            assert u.priced == mt.priced, (bid, model)
            if mt.priced:
                assert u.cost_usd == mt.cost_usd and u.standard_cost_usd == mt.standard_cost_usd
            else:
                assert u.cost_usd is None
        errors = {
            e.error_type: e
            for e in session.execute(
                select(BatchError).where(col(BatchError.batch_id) == bid)
            ).scalars()
        }
        assert {k: e.count for k, e in errors.items()} == t.errors, bid
        for k, e in errors.items():
            assert e.sample_message == t.error_samples[k]
