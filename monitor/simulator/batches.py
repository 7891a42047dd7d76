"""Message Batches: a batch's spec (how its processing goes) and its view at one instant.

A :class:`BatchSpec` fixes when a batch was created, how long processing takes and where a
cancel or the 24 h expiry cuts it off; :class:`BatchView` is the MessageBatch object the API
shows at a given ``now``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.simulator.formats import iso
from monitor.simulator.requests import RequestSource
from monitor.simulator.seeded import affine

EXPIRY = timedelta(hours=24)
ARCHIVE_AFTER = timedelta(days=29)
# A cancel takes a little while to wind down: the batch shows `canceling` in between.
CANCEL_LAG = timedelta(seconds=90)
RESULT_TYPES: tuple[str, ...] = ("succeeded", "errored", "canceled", "expired")


@dataclass
class BatchSpec:
    """One Message Batch: when and where it was created and how its processing goes.

    ``duration`` is how long processing all requests would take; request of rank ``r``
    completes at ``created_at + duration * (r + 1) / n``. A cancel or the 24 h expiry cuts
    processing off: requests not done by then become ``canceled`` / ``expired``.
    """

    id: str
    key: int
    workspace_id: str
    api_key_id: str
    workload: str
    created_at: datetime
    duration: timedelta
    source: RequestSource
    cancel_initiated_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def n(self) -> int:
        """Return the number of requests."""
        return self.source.n

    @property
    def expires_at(self) -> datetime:
        """Return created_at + 24 h."""
        return self.created_at + EXPIRY

    @property
    def archived_from(self) -> datetime:
        """Return when the results stop being available (created_at + 29 days)."""
        return self.created_at + ARCHIVE_AFTER

    def end(self) -> tuple[datetime, int, str]:
        """Return ``(ended_at, processed, fate_of_the_rest)`` of this batch.

        The rest (``n - processed`` requests, by rank) are ``canceled`` or ``expired``.
        """
        n = self.n
        natural = self.created_at + self.duration
        cancel = self.cancel_initiated_at
        if cancel is not None and cancel < min(natural, self.expires_at):
            done = _processed(n, cancel - self.created_at, self.duration)
            return min(cancel + CANCEL_LAG, natural, self.expires_at), done, "canceled"
        if natural > self.expires_at:
            return self.expires_at, _processed(n, EXPIRY, self.duration), "expired"
        return natural, n, "canceled"

    def rank_to_index(self, rank: int) -> int:
        """Return the index of the request processed ``rank``-th."""
        _, b, a_inv = affine(self.n, self.key)
        return ((rank - b) * a_inv) % self.n if self.n > 1 else 0

    def ranks(self) -> Iterator[int]:
        """Yield request indexes in processing order (the order the results file uses)."""
        n = self.n
        _, b, a_inv = affine(n, self.key)
        if n <= 1:
            yield from range(n)
            return
        for rank in range(n):
            yield ((rank - b) * a_inv) % n

    def outcome_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Return ``(final counts by result type, errored counts by error type)``."""
        _, processed, rest = self.end()
        errors = self.source.errors_before(processed, self.rank_to_index)
        errored = sum(errors.values())
        counts = dict.fromkeys(RESULT_TYPES, 0)
        counts["succeeded"] = processed - errored
        counts["errored"] = errored
        counts[rest] += self.n - processed
        return counts, errors


def _processed(n: int, elapsed: timedelta, duration: timedelta) -> int:
    if duration.total_seconds() <= 0:
        return n
    return max(0, min(n, int(n * (elapsed / duration))))


@dataclass(frozen=True)
class BatchView:
    """A batch as the API shows it at one instant (the MessageBatch object's fields)."""

    id: str
    workspace_id: str
    processing_status: str
    counts: dict[str, int]  # processing, succeeded, errored, canceled, expired
    created_at: datetime
    ended_at: datetime | None
    expires_at: datetime
    cancel_initiated_at: datetime | None
    archived_at: datetime | None

    def to_api(self, base_url: str) -> dict[str, Any]:
        """Return the MessageBatch JSON object (``results_url`` points at ``base_url``)."""
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.counts,
            "created_at": iso(self.created_at),
            "ended_at": iso(self.ended_at) if self.ended_at else None,
            "expires_at": iso(self.expires_at),
            "cancel_initiated_at": (
                iso(self.cancel_initiated_at) if self.cancel_initiated_at else None
            ),
            "archived_at": iso(self.archived_at) if self.archived_at else None,
            "results_url": (
                f"{base_url}/v1/messages/batches/{self.id}/results" if self.ended_at else None
            ),
        }
