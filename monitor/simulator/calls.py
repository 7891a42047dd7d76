"""Real-time Messages API calls, as an application's call log records them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.simulator.formats import context_window_of


@dataclass(frozen=True, slots=True)
class RealtimeCall:
    """One real-time Messages API call, as the application's call log records it."""

    at: datetime
    workload: str
    endpoint: str
    model: str
    workspace_id: str
    api_key_id: str
    service_tier: str  # standard | priority
    priority: str  # high | normal
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    web_searches: int
    inference_geo: str | None
    latency_ms: int
    request_id: str

    @property
    def tokens(self) -> tuple[int, int, int, int, int]:
        """Return the usage in :data:`TOKEN_TYPES` order."""
        return (
            self.input_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.cache_read_tokens,
            self.output_tokens,
        )

    @property
    def context_window(self) -> str:
        """Return the report's context-window tier of this call."""
        return context_window_of(
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    def to_log(self) -> dict[str, Any]:
        """Return the call-log JSON object of this call."""
        return {
            "timestamp": self.at.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{self.at.microsecond // 1000:03d}Z",
            "endpoint": self.endpoint,
            "workload": self.workload,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": self.cache_write_5m_tokens + self.cache_write_1h_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m_tokens,
                "ephemeral_1h_input_tokens": self.cache_write_1h_tokens,
            },
            "web_search_requests": self.web_searches,
            "latency_ms": self.latency_ms,
            "service_tier": self.service_tier,
            "priority": self.priority,
            "inference_geo": self.inference_geo,
            "workspace_id": self.workspace_id,
            "api_key_id": self.api_key_id,
            "request_id": self.request_id,
            "status": 200,
        }
