"""A FHIR server on a real local socket that records every request it receives (path, raw request line,
whether a bearer token came with it) and answers from a table of canned bodies by path.

``RecordingServer(pages)``: ``pages`` maps a path (query included, as sent) to a JSON body; any other path
is answered 404 with an OperationOutcome. ``received`` lists ``(path, had_token)`` in arrival order.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingServer:
    def __init__(self, pages: dict[str, Any] | None = None):
        self.pages = dict(pages or {})
        self.received: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                with owner.lock:
                    owner.received.append((self.path, "Authorization" in self.headers))
                body = owner.pages.get(self.path)
                status = 200 if body is not None else 404
                if body is None:
                    body = {"resourceType": "OperationOutcome",
                            "issue": [{"severity": "error", "code": "not-found"}]}
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> RecordingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
