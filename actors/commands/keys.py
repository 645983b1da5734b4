"""`porch keys`: CURVE key pairs for porch over TCP between hosts."""

from __future__ import annotations

import argparse
from pathlib import Path

from bus.curve import DEFAULT_CLIENT, generate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="CURVE keys for TCP sockets between hosts")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    gen = keys_sub.add_parser(
        "generate",
        help="make the server pair (once) and a trusted client pair in a key folder",
    )
    gen.add_argument("folder", metavar="DIR", help="key folder (created 0700)")
    gen.add_argument(
        "--client",
        default=DEFAULT_CLIENT,
        metavar="NAME",
        help=f"name of the client pair to add and trust (default {DEFAULT_CLIENT})",
    )
    gen.set_defaults(func=cmd_keys_generate)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    written = generate(Path(args.folder), args.client)
    for path in written:
        print(path)
    print(
        f'porch keys: set `[curve] keys = "{Path(args.folder).absolute()}"` in the config of'
        " every process; restart the hub and orchestrator to trust a new client"
    )
    return 0
