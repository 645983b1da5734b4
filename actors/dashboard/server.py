"""``porch dashboard``: the web dashboard, served over HTTP by a client of the hub.

Every page is one HTML file and its scripts from ``static/`` (no CDN, no build step); the
pages read JSON from ``/api/...`` and hear of changes on ``/api/events`` (server-sent events)
from the one hub subscription `live.Live` follows. Buttons POST to ``/api/...``: each is one
event appended after the CLI's checks (`actions`). Bad input gets a JSON error reply, never a
crash.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import zmq

from actors.dashboard import access, actions, info, pages, stream
from actors.dashboard.live import Live
from actors.errors import ActorError, UsageError
from bus.endpoints import Endpoints
from bus.errors import BusError, EventRefusedError
from store import pidlock

log = logging.getLogger("porch.dashboard")
STATIC: Final = Path(__file__).with_name("static")
BODY_MAX_BYTES: Final = 4096
TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'"
    " 'unsafe-inline'; frame-ancestors 'none'",
}
_POST = re.compile(r"^/api/(executions|schedules|alerts)/([^/]+)/([a-z]+)$")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardConfig:
    data_dir: Path
    endpoints: Endpoints
    host: str = "127.0.0.1"
    port: int = 0
    insecure: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")


class Dashboard:
    """The HTTP server, the live fold it reads, and the run file that says where it listens."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.token = access.token_for_bind(config.data_dir, config.host, insecure=config.insecure)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.live = Live(config.endpoints, self.ctx)
        self.pages = pages.Pages(self.live, config.endpoints, self.ctx)
        self.server: ThreadingHTTPServer | None = None
        self.url = ""
        self._lock_fd: int | None = None

    def start(self) -> str:
        fd, holder = pidlock.hold(info.lock_file(self.config.data_dir))
        if fd is None:
            raise ActorError(
                f"dashboard: one runs already for data dir {self.config.data_dir} (pid {holder})"
            )
        self._lock_fd = fd
        try:
            self.server = ThreadingHTTPServer((self.config.host, self.config.port), _handler(self))
        except OSError as exc:
            raise UsageError(
                f"dashboard: cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from None
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        self.url = f"http://{shown}:{port}/"
        self.live.start()
        threading.Thread(
            target=self.server.serve_forever, name="porch-dashboard-http", daemon=True
        ).start()
        info.write_info(self.config.data_dir, self.url, token_required=self.token is not None)
        return self.url

    def stop(self) -> None:
        self.live.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        info.info_path(self.config.data_dir).unlink(missing_ok=True)
        self.ctx.destroy(linger=0)
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def allowed_hosts(self) -> set[str]:
        """Host headers a loopback dashboard answers (a page of another site that resolves its
        own name to 127.0.0.1 sends its own name, and is refused)."""
        assert self.server is not None
        port = self.server.server_address[1]
        return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}


def _json_bytes(data: Any) -> bytes:
    try:
        return json.dumps(data, default=str, allow_nan=False).encode()
    except ValueError:  # a NaN or an infinity somewhere: null in JSON
        return json.dumps(_finite(data), default=str).encode()


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def _handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    static = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}

    class Handler(BaseHTTPRequestHandler):
        server_version = "porch-dashboard"
        # a page's requests reuse its connection (no connection and no thread per request); an
        # idle one is closed after a minute
        protocol_version = "HTTP/1.1"
        timeout = 60

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._error(405, "the dashboard takes GET and POST only")

        def do_DELETE(self) -> None:
            self.do_PUT()

        def do_PATCH(self) -> None:
            self.do_PUT()

        def _serve(self, method: str) -> None:
            try:
                url = urllib.parse.urlsplit(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                if not self._admitted(method, url.path, query):
                    return
                if method == "POST":
                    self._post(url.path)
                else:
                    self._get(url.path, query)
            except HttpError as exc:
                self._error(exc.status, str(exc))
            except (UsageError, ActorError, EventRefusedError) as exc:
                self._error(getattr(exc, "status", 400), str(exc))
            except BusError as exc:
                self._error(503, f"the hub did not answer: {exc}")
            except (BrokenPipeError, ConnectionResetError):
                return
            except Exception as exc:  # a bug must not take the server down: say it, go on
                log.exception("dashboard: %s %s failed", method, self.path)
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")

        # --- who may ask ------------------------------------------------------------------

        def _admitted(self, method: str, path: str, query: dict[str, str]) -> bool:
            token = dashboard.token
            if token is None:
                if access.is_loopback(dashboard.config.host):
                    host = self.headers.get("Host", "")
                    if host not in dashboard.allowed_hosts():
                        raise HttpError(403, f"host {host!r} is not this dashboard's address")
            else:
                shown = self._cookie(access.COOKIE)
                bearer = self.headers.get("Authorization", "")
                if bearer.startswith("Bearer "):
                    shown = bearer[len("Bearer ") :].strip()
                if not access.matches(shown, token):
                    if (
                        method == "GET"
                        and path == "/"
                        and access.matches(query.get("token"), token)
                    ):
                        self.send_response(303)
                        self.send_header(
                            "Set-Cookie",
                            f"{access.COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict",
                        )
                        self.send_header("Location", "/")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return False
                    raise HttpError(
                        401,
                        "this dashboard needs its token: open it as /?token=TOKEN"
                        " (`porch dashboard-token` prints it on the dashboard's host)",
                    )
            if method == "POST":
                kind = self.headers.get("Content-Type", "").split(";")[0].strip()
                if kind != "application/json":
                    raise HttpError(415, "a POST must be application/json")
                origin = self.headers.get("Origin")
                if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
                    raise HttpError(403, f"origin {origin!r} may not act on this dashboard")
            return True

        def _cookie(self, name: str) -> str | None:
            for part in self.headers.get("Cookie", "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return value
            return None

        # --- routes ---------------------------------------------------------------------

        def _get(self, path: str, query: dict[str, str]) -> None:
            if path == "/":
                self._file(static["index.html"])
            elif path.startswith("/static/"):
                name = path[len("/static/") :]
                if name not in static:
                    raise HttpError(404, f"no file {name!r}")
                self._file(static[name])
            elif path == "/api/events":
                follow = query.get("execution")
                self._events(None if follow is None else pages.identifier(follow, "execution"))
            elif path.startswith("/api/"):
                self._json(200, dashboard.pages.get(path[len("/api/") :], query))
            else:
                raise HttpError(404, f"no page {path!r}; the dashboard is at /")

        def _post(self, path: str) -> None:
            found = _POST.match(path)
            if found is None:
                raise HttpError(404, f"no action at {path!r}")
            length = self.headers.get("Content-Length", "0")
            if not length.isdigit() or int(length) > BODY_MAX_BYTES:
                raise HttpError(413, f"a POST body must be at most {BODY_MAX_BYTES} bytes")
            self.rfile.read(int(length))  # the action is all in the path
            kind, name, action = found.groups()
            ident = pages.identifier(urllib.parse.unquote(name), kind[:-1])
            with dashboard.pages.client() as client:
                if kind == "executions":
                    done = actions.control_execution(client, ident, action)
                elif kind == "schedules":
                    done = actions.control_schedule(client, ident, action)
                else:
                    done = actions.control_alert(client, ident, action)
            self._json(200, {"ok": True, **done})

        # --- replies --------------------------------------------------------------------

        def _events(self, follow: str | None) -> None:
            """Server-sent events: `stream.notices`, on this connection until either side ends."""
            listener = dashboard.live.listen()
            self.close_connection = True  # the stream has no length: it ends with its connection
            try:
                self.send_response(200)
                self._headers("text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(b"retry: 1000\n\n")
                for notice in stream.notices(dashboard.live, dashboard.pages, listener, follow):
                    if notice is None:
                        self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
                    else:
                        self._notice(notice)
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                dashboard.live.drop(listener)

        def _notice(self, notice: dict[str, Any]) -> None:
            self.wfile.write(b"data: " + _json_bytes(notice) + b"\n\n")
            self.wfile.flush()

        def _file(self, path: Path) -> None:
            body = path.read_bytes()
            self.send_response(200)
            self._headers(TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            if isinstance(data, pages.Text):
                body, kind = data.text.encode(), "text/plain; charset=utf-8"
            else:
                body, kind = _json_bytes(data), "application/json"
            self.send_response(status)
            self._headers(kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self.close_connection = True  # a refused request's body may be left unread
            try:
                self._json(status, {"error": message})
            except (BrokenPipeError, ConnectionResetError):
                return

        def _headers(self, kind: str) -> None:
            self.send_header("Content-Type", kind)
            for name, value in HEADERS.items():
                self.send_header(name, value)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    return Handler
