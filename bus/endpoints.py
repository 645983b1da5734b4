"""Where the hub's three sockets live: ipc files under the data dir, or TCP addresses.

Locally every command given the same data dir finds the running system through
``<data-dir>/run/{ingest,publish,request}.sock`` with no port to choose. TCP endpoints are for
several hosts; binding one that is not loopback needs CURVE keys or an explicit ``insecure``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bus.errors import EndpointError

if TYPE_CHECKING:
    from bus.curve import Curve

IPC_PATH_MAX: Final = 107
ENV_DATA_DIR: Final = "PORCH_DATA_DIR"
DEFAULT_DATA_DIR: Final = ".porch"


def resolve_data_dir(flag: str | None, environ: dict[str, str] | None = None) -> Path:
    """The data dir from a flag, else ``PORCH_DATA_DIR``, else ``./.porch``; made absolute."""
    env = os.environ if environ is None else environ
    text = flag or env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return Path(text).expanduser().absolute()


def run_dir(data_dir: Path) -> Path:
    return data_dir / "run"


def log_dir(data_dir: Path) -> Path:
    return data_dir / "log"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The hub's ingest (PULL), publish (PUB) and request (ROUTER) addresses.

    ``curve`` is the key folder that secures every ``tcp://`` socket (None: no encryption).
    """

    ingest: str
    publish: str
    request: str
    curve: Curve | None = None

    @classmethod
    def local(cls, data_dir: Path) -> Endpoints:
        run = run_dir(data_dir)
        made = cls(
            ingest=f"ipc://{run / 'ingest.sock'}",
            publish=f"ipc://{run / 'publish.sock'}",
            request=f"ipc://{run / 'request.sock'}",
        )
        for address in made.all():
            check(address)
        return made

    def all(self) -> tuple[str, str, str]:
        return (self.ingest, self.publish, self.request)

    def is_local(self) -> bool:
        return all(a.startswith("ipc://") for a in self.all())


def check(
    address: str, *, bind: bool = False, insecure: bool = False, curve: Curve | None = None
) -> str:
    """Refuse an address porch cannot use, with the reason.

    Binding a non-loopback TCP address needs CURVE keys, or ``insecure`` said out loud.
    """
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("ipc", "tcp"):
        raise EndpointError(f"endpoint {address!r}: expected ipc://PATH or tcp://HOST:PORT")
    if scheme == "ipc":
        if len(rest) > IPC_PATH_MAX:
            raise EndpointError(
                f"endpoint {address!r}: ipc path is {len(rest)} chars, the limit is"
                f" {IPC_PATH_MAX}; use a shorter --data-dir"
            )
        return address
    host, colon, port = rest.rpartition(":")
    if not colon or not (port.isdigit() or port == "*"):
        raise EndpointError(f"endpoint {address!r}: expected tcp://HOST:PORT")
    if bind and curve is None and not insecure and not is_loopback(host):
        raise EndpointError(
            f"endpoint {address!r}: binding a non-loopback address needs CURVE keys"
            " ([curve] keys = DIR, made by `porch keys generate DIR`);"
            " or pass --insecure to bind it without encryption"
        )
    return address


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
