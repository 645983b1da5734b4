"""CURVE encryption and client authentication for TCP sockets (ZeroMQ's own ``zmq.auth``).

A key folder made by ``porch keys generate DIR`` holds::

    server.key  server.key_secret     the servers' pair (hub and orchestrator bind with it)
    client.key  client.key_secret     a client pair (workers and other actors connect with it)
    NAME.key    NAME.key_secret       more client pairs, one per host if you like
    authorized/NAME.key               the client public keys the servers accept

A host that only connects needs ``server.key`` and its own client pair; a host that binds
needs ``server.key_secret`` and ``authorized/``. Every socket on ``tcp://`` is secured when a
folder is configured; ``ipc://`` sockets rely on the data dir's 0700 mode instead.

A CURVE server socket without a running ZAP handler accepts any client key, so every process
that binds TCP starts an `Authenticator` before binding, reading ``authorized/``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq
import zmq.auth

from bus.errors import ConfigError

SERVER: Final = "server"
DEFAULT_CLIENT: Final = "client"
AUTHORIZED: Final = "authorized"
ZAP_DOMAIN: Final = b"porch"


@dataclass(frozen=True, slots=True)
class Curve:
    """A key folder and the name of the client pair this process connects with."""

    folder: Path
    client: str = DEFAULT_CLIENT

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder).expanduser().absolute())
        if not zmq.has("curve"):
            raise ConfigError("this libzmq was built without CURVE; TCP needs --insecure")
        if not self.folder.is_dir():
            raise ConfigError(
                f"curve: key folder {self.folder} does not exist; make it with"
                f" `porch keys generate {self.folder}`"
            )
        _check_name(self.client)

    def server_public(self) -> bytes:
        return _load(self.folder / f"{SERVER}.key", secret=False)[0]

    def server_pair(self) -> tuple[bytes, bytes]:
        return _load(self.folder / f"{SERVER}.key_secret", secret=True)

    def client_pair(self) -> tuple[bytes, bytes]:
        return _load(self.folder / f"{self.client}.key_secret", secret=True)

    def authorized(self) -> Path:
        return self.folder / AUTHORIZED


def _check_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name == SERVER:
        raise ConfigError(f"curve: key name {name!r} must be letters, digits, - or _, not 'server'")


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes]:
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except OSError:
        raise ConfigError(f"curve: {path} is missing; see `porch keys generate`") from None
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"curve: {path} is not a key file ({exc})") from None
    if public is None or (secret and not secret_key):
        raise ConfigError(f"curve: {path} holds no {'secret' if secret else 'public'} key")
    return public, secret_key or b""


def secure(sock: zmq.Socket[Any], address: str, curve: Curve | None, *, server: bool) -> None:
    """Make a socket for ``address`` a CURVE server or client when it is TCP and keys are set."""
    if curve is None or not address.startswith("tcp://"):
        return
    if server:
        public, secret = curve.server_pair()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.zap_domain = ZAP_DOMAIN
        sock.curve_server = True
    else:
        public, secret = curve.client_pair()
        sock.curve_serverkey = curve.server_public()
        sock.curve_publickey = public
        sock.curve_secretkey = secret


def _counting_authenticator(context: zmq.Context[Any]) -> Any:
    """pyzmq's threaded ZAP handler, counting the handshakes it refuses. Imported here, not at
    the top: it brings asyncio (50 ms), which a command that never binds TCP does not need."""
    from zmq.auth.thread import ThreadAuthenticator

    class CountingAuthenticator(ThreadAuthenticator):
        denied = 0

        def _send_zap_reply(
            self,
            request_id: bytes,
            status_code: bytes,
            status_text: bytes,
            user_id: str = "anonymous",
        ) -> None:
            if status_code != b"200":
                self.denied += 1
                self.log.warning("refused a client: %s", status_text.decode(errors="replace"))
            super()._send_zap_reply(request_id, status_code, status_text, user_id)

    return CountingAuthenticator(context, log=logging.getLogger("porch.zap"))


class Authenticator:
    """The ZAP handler of one context: accepts only the client keys in ``authorized/``.

    Keys are read at start; restart the process to trust a key added later. ``denied``
    counts the clients refused so far.
    """

    def __init__(self, context: zmq.Context[Any], curve: Curve) -> None:
        folder = curve.authorized()
        keys = sorted(folder.glob("*.key")) if folder.is_dir() else []
        if not keys:
            raise ConfigError(
                f"curve: no trusted client keys in {folder}; add one with"
                f" `porch keys generate {curve.folder} --client NAME`"
            )
        curve.server_pair()  # a missing server secret fails here, before a thread starts
        self._auth = _counting_authenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(folder))
        self.trusted = len(keys)

    @property
    def denied(self) -> int:
        return self._auth.denied

    def stop(self) -> None:
        self._auth.stop()


def needs_auth(addresses: tuple[str, ...] | list[str], curve: Curve | None) -> bool:
    return curve is not None and any(a.startswith("tcp://") for a in addresses)


def generate(folder: Path, client: str = DEFAULT_CLIENT) -> list[Path]:
    """Create the server pair (if absent) and a trusted client pair ``client``; never overwrite.

    Returns the files written. The folder is 0700 and the secret files 0600.
    """
    _check_name(client)
    folder = Path(folder).expanduser().absolute()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    authorized = folder / AUTHORIZED
    authorized.mkdir(mode=0o700, exist_ok=True)
    written: list[Path] = []
    if not (folder / f"{SERVER}.key_secret").exists():
        written += _pair(folder, SERVER)
    if (folder / f"{client}.key_secret").exists():
        raise ConfigError(f"curve: {folder / client}.key_secret exists; pick another --client name")
    written += _pair(folder, client)
    trusted = authorized / f"{client}.key"
    shutil.copyfile(folder / f"{client}.key", trusted)
    trusted.chmod(0o600)
    written.append(trusted)
    return written


def _pair(folder: Path, name: str) -> list[Path]:
    made = [Path(p) for p in zmq.auth.create_certificates(str(folder), name)]
    for path in made:
        path.chmod(0o600)
    return made
