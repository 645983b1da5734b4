"""`porch config show`: every setting's effective value and where it came from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from actors.api.configkeys import SETTINGS
from actors.commands.common import add_data_dir, print_json, settings_of, table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="the settings porch up and the actors use")
    verbs = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = verbs.add_parser(
        "show",
        help="each setting's value and its source (default, file, env, flag); takes porch up's"
        " flags, to show what `porch up` with them would use",
    )
    add_data_dir(show)
    show.add_argument("--json", action="store_true", help="one JSON document")
    add_up_flags(show)
    show.set_defaults(func=cmd_show)


def add_up_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `porch up` that set a setting, as the settings declare them."""
    seen: set[str] = set()
    for setting in SETTINGS:
        option = setting.flags.get("up")
        if option is None or option in seen:
            continue
        seen.add(option)
        text = f"sets {setting.name}"
        if setting.kind == "bool":
            parser.add_argument(option, action="store_true", help=text)
        elif setting.kind == "list":
            parser.add_argument(option, action="append", default=[], help=text)
        else:
            kind = {"int": int, "float": float}.get(setting.kind, str)
            parser.add_argument(option, type=kind, help=text)
    parser.add_argument(
        "--stage", action="append", default=[], metavar="NAME=MODULE:FUNCTION",
        help="a local stage, as porch up takes it",
    )  # fmt: skip


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_of(args, "up")
    rows = settings.table()
    if args.json:
        print_json({
            "config_file": str(settings.file) if settings.file else None,
            "settings": {
                name: {"value": v.value, "source": v.source, "origin": v.origin}
                for name, v in rows
            },
        })  # fmt: skip
        return 0
    print(f"config file: {settings.file or 'none'}")
    print(
        "\n".join(
            table(("SETTING", "VALUE", "SOURCE"), [[n, _text(v.value), v.label()] for n, v in rows])
        )
    )
    return 0
