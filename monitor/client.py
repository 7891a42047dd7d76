"""Anthropic SDK clients as the collectors need them: bounded retries, counted calls.

The SDK honours ``retry-after`` with no upper bound (SDK 2.x), so one slow upstream could stall
the whole daemon. The transport here lets the SDK wait for a short ``retry-after`` as usual, but
turns a longer one into an immediate error (``x-should-retry: false``), so the collector records
the failure, moves on to the next workspace, and tries again on its next poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    import anthropic


@dataclass
class CallCounter:
    """Count the HTTP requests a client sends (retries included)."""

    total: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: httpx2.Request) -> None:
        self.total += 1
        path = request.url.path
        self.by_path[path] = self.by_path.get(path, 0) + 1


class CappedRetryTransport(httpx2.HTTPTransport):
    """An HTTP transport that refuses to let a long ``retry-after`` stall the caller."""

    def __init__(self, max_retry_after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retry_after = max_retry_after

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        wait = retry_after_seconds(response.headers)
        if wait is not None and wait > self.max_retry_after:
            response.headers["x-should-retry"] = "false"
        return response


def retry_after_seconds(headers: httpx2.Headers) -> float | None:
    """Return the wait a response asks for (``retry-after-ms`` or ``retry-after`` seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue  # an HTTP date: treat as unknown and let the SDK's own backoff apply
    return None


def make_client(
    api_key: str | None,
    *,
    base_url: str | None,
    timeout: timedelta,
    max_retries: int,
    max_retry_after: timedelta,
    counter: CallCounter | None = None,
    default_headers: dict[str, str] | None = None,
) -> anthropic.Anthropic:
    """Build an ``anthropic.Anthropic`` client with capped retries and a request counter."""
    import anthropic  # imported here: the SDK alone takes over a second to import

    http_client = httpx2.Client(
        transport=CappedRetryTransport(max_retry_after.total_seconds()),
        timeout=httpx2.Timeout(timeout.total_seconds(), connect=min(10.0, timeout.total_seconds())),
        event_hooks={"request": [counter]} if counter is not None else None,
        follow_redirects=True,
    )
    return anthropic.Anthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=max_retries,
        http_client=http_client,
        default_headers=default_headers,
    )
