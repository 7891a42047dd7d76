"""A fake Slack Web API and incoming webhook, served over HTTP on 127.0.0.1 for tests.

The real ``slack_sdk`` clients talk to it exactly as they would to slack.com. It answers
``chat.postMessage``, ``chat.update`` and ``auth.test`` (checking the bot token and the channel),
the file upload v2 flow of ``files_upload_v2`` (``files.getUploadURLExternal``, the upload URL
it hands out, ``files.completeUploadExternal``, which shares the file in a thread),
``conversations.history`` and ``conversations.replies`` (with message metadata), and one
incoming-webhook path. It records every request it receives (failed ones included), and can be
told to fail: a 429 with ``Retry-After``, a 500, an ``ok: false`` error such as
``invalid_auth``, ``channel_not_found`` or ``not_in_channel``, a webhook 404, or an outage during
which every request gets a 503; ``delays`` makes one method slow (a client that times out while
Slack still accepts the call).

Use it as a context manager; each test starts and stops its own::

    with FakeSlack() as slack:
        client = WebClient(token=slack.token, base_url=slack.base_url)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class Recorded:
    """One request the fake received, and the status it answered."""

    method: str  # chat.postMessage | chat.update | auth.test | webhook | the path when unknown
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    error: str | None  # the Slack error code answered, if any

    @property
    def channel(self) -> str | None:
        """Return the channel the request named."""
        value = self.body.get("channel")
        return None if value is None else str(value)

    @property
    def title(self) -> str:
        """Return the text of the first header block (the message's title), else the text."""
        for block in self.body.get("blocks") or []:
            if isinstance(block, dict) and block.get("type") == "header":
                return str(block["text"]["text"])
        return str(self.body.get("text", ""))

    def texts(self) -> list[str]:
        """Return every piece of text in the request (fallback text and all block texts)."""
        out = [str(self.body.get("text", ""))]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("text"), str):
                    out.append(node["text"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.body.get("blocks") or [])
        return out


@dataclass
class _Fault:
    method: str  # a method name, "webhook", or "*"
    status: int
    error: str | None
    retry_after: int | None
    times: int


@dataclass
class FakeSlack:
    """The fake server. Channels map names (and ids) to ids; ``members_of`` the bot joined."""

    token: str = "xoxb-fake-0000-secret-token"
    channels: dict[str, str] = field(
        default_factory=lambda: {
            "#alerts": "C0ALERTS",
            "#critical": "C0CRIT",
            "#info": "C0INFO",
            "#private": "C0PRIV",
        }
    )
    not_member: set[str] = field(default_factory=lambda: {"C0PRIV"})
    webhook_path: str = "/services/T0000/B0000/webhooksecretXYZ"
    # Seconds each request takes (to make concurrent callers overlap in tests).
    delay: float = 0.0
    # Seconds one method takes (the answer comes after the work is done, as a slow Slack's).
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Uploads by file id: filename, length announced, bytes received, where it was shared.
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._outage: int | None = None
        self._ts = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeSlack:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms wait

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (further requests get "connection refused")."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the port the server listens on."""
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """Return the Web API base URL (what MONITOR_SLACK_BASE_URL is set to)."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        """Return the incoming-webhook URL (a secret, like the real one)."""
        return f"http://127.0.0.1:{self.port}{self.webhook_path}"

    # --- fault injection ---------------------------------------------------------------

    def fail(
        self,
        method: str = "*",
        *,
        error: str | None = None,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests to ``method`` with a failure.

        ``error="ratelimited"`` answers HTTP 429 with ``Retry-After: retry_after``; ``status=500``
        an HTML error page; any other ``error`` an ``ok: false`` body (HTTP ``status``). For the
        webhook, ``status=404`` answers ``no_service`` as Slack does for a deleted webhook.
        """
        if error == "ratelimited" and status == 200:
            status = 429
        with self._lock:
            self._faults.append(_Fault(method, status, error, retry_after, times))

    def clear_faults(self) -> None:
        """Drop every failure queued by ``fail`` that has not been answered yet."""
        with self._lock:
            self._faults.clear()

    def answered(self, error: str | None = None, *, status: int | None = None) -> int:
        """Return how many requests got the Slack error ``error`` (and/or HTTP ``status``)."""
        return sum(
            1
            for r in list(self.requests)
            if (error is None or r.error == error) and (status is None or r.status == status)
        )

    def start_outage(self, status: int = 503) -> None:
        """Answer every request with ``status`` until ``end_outage``."""
        self._outage = status

    def end_outage(self) -> None:
        """End the outage started by ``start_outage``."""
        self._outage = None

    # --- what was received -------------------------------------------------------------

    def calls(self, *, ok_only: bool = False) -> list[tuple[str, str | None, str | None, str]]:
        """Return ``(method, channel, thread_ts or ts, title)`` per request, in order."""
        out = []
        for r in list(self.requests):
            if (ok_only and r.status != 200) or (ok_only and r.error):
                continue
            ref = r.body.get("thread_ts") or r.body.get("ts")
            out.append((r.method, r.channel, None if ref is None else str(ref), r.title))
        return out

    def posts(self) -> list[Recorded]:
        """Return the requests that delivered a message (accepted postMessage or webhook)."""
        return [
            r
            for r in self.requests
            if r.method in ("chat.postMessage", "webhook") and r.status == 200 and not r.error
        ]

    def shared_files(self) -> list[dict[str, Any]]:
        """Return the uploads that were completed (shared), in the order they were shared."""
        done = [f for f in self.files.values() if f.get("shared_ts")]
        return sorted(done, key=lambda f: float(f["shared_ts"]))

    # --- the server --------------------------------------------------------------------

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if self.delay:
            time.sleep(self.delay)
        length = int(h.headers.get("Content-Length") or 0)
        data_in = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        headers = {k: v for k, v in h.headers.items()}
        body: dict[str, Any]
        if path.startswith("/upload/"):
            # The upload URL of files.getUploadURLExternal: raw bytes, as slack_sdk sends them.
            method = "upload"
            body = {"file_id": path.rsplit("/", 1)[-1], "_bytes": len(data_in)}
        else:
            raw = data_in.decode("utf-8")
            ctype = h.headers.get("Content-Type", "")
            try:
                body = json.loads(raw) if "json" in ctype else dict(parse_qsl(raw))
            except ValueError:
                body = {"_raw": raw}
            # Some SDK methods (files.*, conversations.*) send their arguments in the query.
            body = {**dict(parse_qsl(query)), **body}
            if path.startswith("/api/"):
                method = path[len("/api/") :]
            elif path.startswith("/services/"):
                method = "webhook"
            else:
                method = path
        if self.delays.get(method):
            time.sleep(self.delays[method])

        status, payload, extra, error = self._answer(method, path, headers, body, data_in)
        with self._lock:
            self.requests.append(Recorded(method, headers, body, status, error))
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        h.send_response(status)
        if not isinstance(payload, str):
            ctype = "application/json; charset=utf-8"
        else:
            ctype = "text/plain" if method == "webhook" else "text/html"
        h.send_header("Content-Type", ctype)
        for key, value in extra.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        data: bytes = b"",
    ) -> tuple[int, Any, dict[str, str], str | None]:
        if self._outage is not None:
            return self._outage, "<html><body>Service Unavailable</body></html>", {}, None
        fault = self._take_fault(method)
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            if method in ("webhook", "upload"):
                text = fault.error or {404: "no_service", 429: "rate_limited"}.get(
                    fault.status, "internal_error"
                )
                return fault.status, text, extra, text
            if fault.status >= 500 and fault.error is None:
                return fault.status, "<html><body>Internal Server Error</body></html>", extra, None
            return fault.status, {"ok": False, "error": fault.error}, extra, fault.error

        if method == "webhook":
            if path != self.webhook_path:
                return 404, "no_service", {}, "no_service"
            if not body.get("text") and not body.get("blocks"):
                return 400, "no_text", {}, "no_text"
            return 200, "ok", {}, None
        if method == "upload":
            with self._lock:
                upload = self.files.get(str(body["file_id"]))
                if upload is None:
                    return 404, "unknown upload", {}, "not_found"
                upload["data"] = data
            return 200, f"OK - {len(data)}", {}, None

        auth = headers.get("Authorization", "")
        if not auth:
            return 200, {"ok": False, "error": "not_authed"}, {}, "not_authed"
        if auth != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}, "invalid_auth"
        if method == "auth.test":
            return (
                200,
                {"ok": True, "team": "Fake Team", "user": "batch-monitor", "team_id": "T0000"},
                {},
                None,
            )
        if method == "files.getUploadURLExternal":
            return self._upload_url(body)
        if method not in (
            "chat.postMessage",
            "chat.update",
            "files.completeUploadExternal",
            "conversations.history",
            "conversations.replies",
        ):
            return 200, {"ok": False, "error": "unknown_method"}, {}, "unknown_method"
        if method == "files.completeUploadExternal":
            return self._complete_upload(body)
        if method.startswith("conversations."):
            return self._conversation(method, body)

        channel_id = self._channel_id(body.get("channel"))
        if channel_id is None:
            return 200, {"ok": False, "error": "channel_not_found"}, {}, "channel_not_found"
        if channel_id in self.not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, {}, "not_in_channel"
        if not body.get("text") and not body.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}, {}, "no_text"

        with self._lock:
            if method == "chat.update":
                key = (channel_id, str(body.get("ts")))
                if key not in self.messages:
                    return 200, {"ok": False, "error": "message_not_found"}, {}, "message_not_found"
                self.messages[key] = {**self.messages[key], **body, "edited": True}
                return 200, {"ok": True, "channel": channel_id, "ts": key[1]}, {}, None
            thread = body.get("thread_ts")
            if thread is not None and (channel_id, str(thread)) not in self.messages:
                return 200, {"ok": False, "error": "thread_not_found"}, {}, "thread_not_found"
            self._ts += 1
            ts = f"{1_800_000_000 + self._ts}.{self._ts:06d}"
            self.messages[(channel_id, ts)] = dict(body)
        return 200, {"ok": True, "channel": channel_id, "ts": ts, "message": body}, {}, None

    def _upload_url(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str], str | None]:
        filename, length = body.get("filename"), body.get("length")
        if not filename or not str(length or "").isdigit():
            return 200, {"ok": False, "error": "invalid_arguments"}, {}, "invalid_arguments"
        with self._lock:
            file_id = f"F{len(self.files) + 1:08d}"
            self.files[file_id] = {
                "id": file_id,
                "filename": str(filename),
                "length": int(str(length)),
                "title": None,
                "data": None,
                "channel": None,
                "thread_ts": None,
                "shared_ts": None,
            }
        url = f"http://127.0.0.1:{self.port}/upload/v1/{file_id}"
        return 200, {"ok": True, "upload_url": url, "file_id": file_id}, {}, None

    def _complete_upload(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str], str | None]:
        try:
            items = json.loads(str(body.get("files") or "[]"))
        except ValueError:
            return 200, {"ok": False, "error": "invalid_arguments"}, {}, "invalid_arguments"
        channel = body.get("channel_id")
        channel_id = self._channel_id(channel) if channel else None
        if channel and channel_id is None:
            return 200, {"ok": False, "error": "channel_not_found"}, {}, "channel_not_found"
        if channel_id in self.not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, {}, "not_in_channel"
        thread = body.get("thread_ts")
        with self._lock:
            shared = []
            for item in items:
                upload = self.files.get(str(item.get("id")))
                if upload is None or upload["data"] is None:
                    return 200, {"ok": False, "error": "file_not_found"}, {}, "file_not_found"
                if len(upload["data"]) != upload["length"]:
                    return 200, {"ok": False, "error": "file_size_mismatch"}, {}, "upload_failed"
                shared.append(upload)
            if thread is not None and (channel_id, str(thread)) not in self.messages:
                return 200, {"ok": False, "error": "thread_not_found"}, {}, "thread_not_found"
            out = []
            if channel_id is not None:
                self._ts += 1
                ts = f"{1_800_000_000 + self._ts}.{self._ts:06d}"
                names = [
                    {"id": u["id"], "name": u["filename"], "title": item.get("title")}
                    for u, item in zip(shared, items, strict=True)
                ]
                self.messages[(channel_id, ts)] = {
                    "text": body.get("initial_comment") or "",
                    "thread_ts": thread,
                    "files": names,
                }
                for u, item in zip(shared, items, strict=True):
                    u.update(
                        channel=channel_id, thread_ts=thread, shared_ts=ts, title=item.get("title")
                    )
            for u in shared:
                out.append({"id": u["id"], "name": u["filename"], "title": u["title"]})
        return 200, {"ok": True, "files": out}, {}, None

    def _conversation(
        self, method: str, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str], str | None]:
        channel_id = self._channel_id(body.get("channel"))
        if channel_id is None:
            return 200, {"ok": False, "error": "channel_not_found"}, {}, "channel_not_found"
        if channel_id in self.not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, {}, "not_in_channel"
        with_meta = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
        with self._lock:
            items = sorted(
                ((ts, m) for (c, ts), m in self.messages.items() if c == channel_id),
                key=lambda kv: float(kv[0]),
            )
        if method == "conversations.history":
            oldest = float(body.get("oldest") or 0)
            chosen = [(ts, m) for ts, m in items if not m.get("thread_ts") and float(ts) > oldest]
            chosen.reverse()  # newest first, as Slack lists history
        else:
            parent = str(body.get("ts"))
            chosen = [(ts, m) for ts, m in items if ts == parent or m.get("thread_ts") == parent]
        messages = []
        for ts, m in chosen:
            message: dict[str, Any] = {"type": "message", "ts": ts, "text": m.get("text", "")}
            if m.get("thread_ts"):
                message["thread_ts"] = m["thread_ts"]
            if m.get("files"):
                message["files"] = m["files"]
            if with_meta and m.get("metadata"):
                message["metadata"] = m["metadata"]
            messages.append(message)
        return 200, {"ok": True, "messages": messages, "has_more": False}, {}, None

    def _channel_id(self, name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        if name in self.channels:
            return self.channels[name]
        if name in self.channels.values():
            return name
        return None

    def __iter__(self) -> Iterator[Recorded]:
        return iter(list(self.requests))
