"""Log every real-time call of an ``anthropic.Anthropic`` client as a call-log line.

Add two lines where the client is built, then point ``[collect] call_logs`` (or
``batch-monitor audit``) at the file::

    from anthropic import Anthropic
    from monitor.instrument import instrument, tag

    client = instrument(Anthropic(), "/var/log/myapp/claude-calls.jsonl", workload="support-bot")
    client.messages.create(...)  # appends one line: workload, model, usage, latency

    with tag(workload="nightly-digest", priority="high"):
        client.messages.create(...)  # tagged for this block (per thread / async task)

The call is never slowed down and never fails because of logging: the line is handed to a
background writer thread through a bounded queue (dropped and counted when the queue is full),
and every error of the logging itself is swallowed and logged. ``stream=True`` calls are logged
when the stream ends; a stream event the wrapper cannot read (so the line may undercount the
call's tokens, e.g. lose the final output count) is logged and counted (the writer's
``incomplete``). Not covered: ``client.messages.stream()``, ``AsyncAnthropic``, and clients
copied with ``with_options()`` after instrumenting (instrument the copy too).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import logging
import os
import queue
import threading
from collections.abc import Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from monitor import clock

log = logging.getLogger(__name__)

C = TypeVar("C")

# Lines waiting for the writer; beyond this the newest are dropped rather than block a caller.
DEFAULT_MAX_QUEUE = 10_000
# Lines written per system call at most (one append of complete lines keeps them whole).
_MAX_BATCH = 1_000

_tags: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "batch_monitor_tags", default=None
)


@contextlib.contextmanager
def tag(
    workload: str | None = None, priority: str | None = None, endpoint: str | None = None
) -> Iterator[None]:
    """Tag the calls made inside the block (``priority="high"`` marks urgent requests)."""
    current = dict(_tags.get() or {})
    for key, value in (("workload", workload), ("priority", priority), ("endpoint", endpoint)):
        if value is not None:
            current[key] = value
    token = _tags.set(current)
    try:
        yield
    finally:
        _tags.reset(token)


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class CallLogWriter:
    """Append JSON lines to a file from a background thread, so callers never wait on the disk.

    The file is opened in append mode for each batch of lines, so log rotation (rename or
    copytruncate) is followed without coordination.
    """

    def __init__(self, path: str | Path, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.path = Path(path)
        self.dropped = 0  # lines lost because the queue was full
        # Lines lost to a failed write or to a call that could not be recorded (the calls
        # themselves were not affected).
        self.errors = 0
        # Streamed calls with an event that could not be read: their lines may undercount
        # tokens (or be missing, when the first event was the unreadable one).
        self.incomplete = 0
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="batch-monitor-call-log", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; never block and never raise."""
        try:
            self._queue.put_nowait(orjson.dumps(record) + b"\n")
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("call log %s: queue full, %d line(s) dropped", self.path, self.dropped)
        except Exception:  # an unserialisable value: lose the line, never the call
            self.errors += 1
            log.warning("call log %s: cannot encode a line", self.path, exc_info=True)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line queued so far is written; return False on timeout."""
        if self._closed or not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the thread (also run at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        atexit.unregister(self.close)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = [item for item in batch if isinstance(item, bytes)]
            if lines:
                self._append(b"".join(lines), len(lines))
            for item in batch:
                if isinstance(item, _Flush):
                    item.done.set()
            if any(item is _STOP for item in batch):
                return

    def _append(self, data: bytes, count: int) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            self.written += count
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning(
                    "call log %s: cannot write (%s); %d line(s) lost",
                    self.path,
                    exc.strerror or exc,
                    count,
                )


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _usage_fields(usage: Any) -> dict[str, Any]:
    """Return the call-log token fields of an SDK ``Usage`` (or ``MessageDeltaUsage``)."""
    fields: dict[str, Any] = {
        "input_tokens": getattr(usage, "input_tokens", None) or 0,
        "output_tokens": getattr(usage, "output_tokens", None) or 0,
        "cache_read_input_tokens": getattr(usage, "cache_read_input_tokens", None) or 0,
        "cache_creation_input_tokens": getattr(usage, "cache_creation_input_tokens", None) or 0,
    }
    split = getattr(usage, "cache_creation", None)
    if split is not None:
        fields["cache_creation"] = {
            "ephemeral_5m_input_tokens": split.ephemeral_5m_input_tokens or 0,
            "ephemeral_1h_input_tokens": split.ephemeral_1h_input_tokens or 0,
        }
    tools = getattr(usage, "server_tool_use", None)
    if tools is not None and tools.web_search_requests:
        fields["web_search_requests"] = tools.web_search_requests
    for name in ("service_tier", "inference_geo"):
        value = getattr(usage, name, None)
        if value:
            fields[name] = value
    return fields


class _CallRecord:
    """What one call logs, filled in as the response (or stream) arrives."""

    def __init__(self, default_workload: str, started_at: datetime, started: float) -> None:
        tags = _tags.get() or {}
        self.fields: dict[str, Any] = {
            "timestamp": _iso(started_at),
            "workload": tags.get("workload", default_workload),
        }
        for key in ("endpoint", "priority"):
            if key in tags:
                self.fields[key] = tags[key]
        self.started = started

    def finish(self, model: str, usage_fields: dict[str, Any], request_id: str | None) -> None:
        self.fields["model"] = model
        self.fields.update(usage_fields)
        self.fields["latency_ms"] = round((clock.monotonic() - self.started) * 1000)
        if request_id:
            self.fields["request_id"] = request_id


class _TappedStream:
    """Pass a ``stream=True`` response through unchanged and log the call when it ends."""

    def __init__(self, stream: Any, record: _CallRecord, writer: CallLogWriter) -> None:
        self._stream = stream
        self._record = record
        self._writer = writer
        self._model = ""
        self._usage: dict[str, Any] = {}
        self._request_id: str | None = getattr(stream, "_request_id", None)
        self._logged = False
        self._unread = False  # an event could not be read: the record may be short
        self._events = self._watch()

    def _watch(self) -> Generator[Any, None, None]:
        try:
            for event in self._stream:
                try:
                    self._observe(event)
                except Exception:  # never the caller's problem, but never silent either
                    self._unreadable(event)
                yield event
        finally:
            self._log()

    def _unreadable(self, event: Any) -> None:
        """Count a call whose stream had an event the wrapper could not read, and say so."""
        if self._unread:
            return  # counted once per call
        self._unread = True
        writer = self._writer
        writer.incomplete += 1
        if writer.incomplete == 1 or writer.incomplete % 100 == 0:
            log.warning(
                "call log %s: cannot read a %r event of a streamed call (%d such call(s) so "
                "far); its line may undercount the call's tokens",
                writer.path,
                getattr(event, "type", type(event).__name__),
                writer.incomplete,
                exc_info=True,
            )

    def _observe(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self._model = event.message.model
            self._usage = _usage_fields(event.message.usage)
        elif kind == "message_delta":
            # Delta usage is cumulative; it carries the final output count.
            for key, value in _usage_fields(event.usage).items():
                if value or key not in self._usage:
                    self._usage[key] = value

    def _log(self) -> None:
        if self._logged or not self._model:
            return
        self._logged = True
        try:
            self._record.finish(self._model, self._usage, self._request_id)
            self._writer.write(self._record.fields)
        except Exception:
            self._writer.errors += 1  # counted like any other lost line
            log.warning("call log: cannot record a streamed call", exc_info=True)

    def __iter__(self) -> Iterator[Any]:
        return self._events

    def __next__(self) -> Any:
        return next(self._events)

    def __enter__(self) -> _TappedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying response and log what was seen."""
        self._events.close()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def instrument(
    client: C,
    log_file: str | Path | CallLogWriter,
    *,
    workload: str = "default",
) -> C:
    """Make ``client.messages.create`` append a call-log line per call; return the client.

    ``workload`` is the default tag (override per block with ``tag``). Instrumenting the same
    client twice has no further effect.
    """
    writer = log_file if isinstance(log_file, CallLogWriter) else CallLogWriter(log_file)
    messages = client.messages  # type: ignore[attr-defined]
    original = messages.create
    if getattr(original, "_batch_monitor_writer", None) is not None:
        return client

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        record = None
        try:
            record = _CallRecord(workload, clock.utcnow(), clock.monotonic())
        except Exception:
            writer.errors += 1
            log.warning("call log: cannot start a record", exc_info=True)
        result = original(*args, **kwargs)  # the SDK's own errors reach the caller untouched
        if record is None:
            return result
        try:
            if kwargs.get("stream"):
                return _TappedStream(result, record, writer)
            request_id = getattr(result, "_request_id", None)
            record.finish(result.model, _usage_fields(result.usage), request_id)
            writer.write(record.fields)
        except Exception:
            writer.errors += 1
            log.warning("call log: cannot record a call", exc_info=True)
        return result

    create._batch_monitor_writer = writer  # type: ignore[attr-defined]
    # An instance attribute shadows the method on this client's Messages resource only.
    messages.create = create
    return client


def writer_of(client: Any) -> CallLogWriter | None:
    """Return the writer an instrumented client logs to (to flush or close it)."""
    return getattr(client.messages.create, "_batch_monitor_writer", None)


__all__ = ["CallLogWriter", "instrument", "tag", "writer_of"]
