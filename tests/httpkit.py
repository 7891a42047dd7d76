"""A one-route JSON HTTP server on 127.0.0.1 for tests that need an upstream to misbehave."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[BaseHTTPRequestHandler], tuple[int, Any]]


@contextmanager
def json_server(answer: Answer) -> Iterator[str]:
    """Serve ``answer(request) -> (status, JSON body)`` for every GET and POST; yield the URL.

    The server is stopped and its thread joined when the block ends.
    """

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            status, payload = answer(self)
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
