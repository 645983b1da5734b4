"""Who may use the dashboard: loopback by default; another address needs the data dir's token
(or an explicit ``insecure``), and every request then shows it (a cookie, or a bearer header).

The token is a secret file in the data dir (0600 in a 0700 folder), like the CURVE keys: made
once by `porch dashboard-token`, read by the dashboard at start, never sent in an event.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Final

from actors.errors import UsageError
from store.fsutil import make_private_dir

TOKEN_FILE: Final = "token"
COOKIE: Final = "porch_dashboard"
TOKEN_BYTES: Final = 32


def token_path(data_dir: Path) -> Path:
    return data_dir / "dashboard" / TOKEN_FILE


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_token(data_dir: Path, *, renew: bool = False) -> tuple[str, bool]:
    """The data dir's token, made when there is none (or ``renew``); (token, made now)."""
    path = token_path(data_dir)
    if path.exists() and not renew:
        return read_token(data_dir) or "", False
    make_private_dir(path.parent)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    tmp.replace(path)
    return token, True


def read_token(data_dir: Path) -> str | None:
    """The token in the data dir, or None; a token others may read is refused."""
    path = token_path(data_dir)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"dashboard: cannot read the token {path}: {exc}") from None
    if mode & 0o077:
        raise UsageError(
            f"dashboard: the token {path} can be read by others (mode {mode & 0o777:o});"
            f" chmod 600 it, or make a new one with `porch dashboard-token --new`"
        )
    if len(text) < 16:
        raise UsageError(f"dashboard: the token {path} is too short; make a new one with"
                         " `porch dashboard-token --new`")  # fmt: skip
    return text


def token_for_bind(data_dir: Path, host: str, *, insecure: bool) -> str | None:
    """The token requests must show, for a server on ``host``: None on loopback or with
    ``insecure``; elsewhere the data dir's token, and a refusal when it has none."""
    if is_loopback(host) or insecure:
        return None
    token = read_token(data_dir)
    if token is None:
        raise UsageError(
            f"dashboard: binding {host!r} (not loopback) needs a token: make one with"
            f" `porch dashboard-token --data-dir {data_dir}`, or pass --insecure to serve"
            " without one"
        )
    return token


def matches(shown: str | None, token: str) -> bool:
    return shown is not None and hmac.compare_digest(shown.encode(), token.encode())
