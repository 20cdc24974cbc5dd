"""A tiny in-memory web server on 127.0.0.1 for the example and the demo (never for production traffic)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A thread per connection, daemon threads, and an accept queue deep enough for a fetch burst (also the
    tests' server's base, tests/httpserver.py)."""

    daemon_threads = True
    # socketserver's default accept queue of 5 drops the SYNs of a 32-thread fetch burst; each dropped one
    # stalls its download for the client's 1 s SYN retransmission
    request_queue_size = 128


class StaticWeb:
    """Serve registered bytes at paths on an ephemeral loopback port; unknown paths answer 404."""

    def __init__(self, port: int = 0):
        """``port`` 0 takes any free port; a fixed port (when free) keeps URLs, and so sample keys, the same
        from run to run, falling back to a free port when it is taken."""
        self._routes: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                with web._lock:
                    route = web._routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                body, content_type = route
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the terminal for our own progress
                pass

        try:
            self._server = LoopbackHTTPServer(("127.0.0.1", port), Handler)
        except OSError:  # taken: any free port will do
            self._server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="aligndata-localweb", daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, body: bytes, content_type: str = "image/jpeg") -> str:
        with self._lock:
            self._routes[path] = (body, content_type)
        return self.base + path

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
