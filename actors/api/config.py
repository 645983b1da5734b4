"""The effective settings of a command: defaults, then ``porch.toml``, then ``PORCH_*``
variables, then flags; each value checked at the door and kept with where it came from."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from actors.api.configkeys import (
    BY_NAME,
    SECTIONS,
    SETTINGS,
    STAGE_PATH,
    STAGES,
    Setting,
    keys_of,
)
from actors.errors import UsageError
from actors.shared.stagecfg import StageSet, parse_stage_args
from store.objstore import is_remote

ENV_CONFIG: Final = "PORCH_CONFIG"
HIDDEN: Final = "(set, hidden)"  # what is shown of a credential
DEFAULT_FILE: Final = "porch.toml"
TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
Source = Literal["default", "file", "env", "flag"]


def config_path(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The config file: ``--config``, else ``PORCH_CONFIG`` (empty: none), else ``./porch.toml``
    when there is one."""
    if flag:
        return flag
    if ENV_CONFIG in environ:
        return environ[ENV_CONFIG] or None
    return str(Path(DEFAULT_FILE).absolute()) if Path(DEFAULT_FILE).is_file() else None


@dataclass(frozen=True, slots=True)
class Value:
    """A setting's value and where it came from: ``origin`` is the file, the variable or the
    flag ("" for a default)."""

    value: Any
    source: Source = "default"
    origin: str = ""

    def label(self) -> str:
        return self.source if self.source == "default" else f"{self.source} {self.origin}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting's effective value; ``stages`` maps a local stage's name to its
    ``module:function``, ``stage_path`` holds the folders its code is imported from."""

    file: Path | None
    values: Mapping[str, Value]
    stages: Mapping[str, Value]
    stage_path: Value

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def source(self, name: str) -> Value:
        return self.values[name]

    def stage_set(self) -> StageSet:
        """The local stages as an actor loads them."""
        return StageSet(
            specs=tuple(f"{name}={v.value}" for name, v in self.stages.items()),
            path=tuple(self.stage_path.value),
            config=str(self.file or ""),
        )

    def table(self) -> list[tuple[str, Value]]:
        """(name, value) of every setting, the stages last, for ``porch config show``; a
        credential that is set shows as `HIDDEN`."""
        rows = [
            (name, Value(HIDDEN, v.source, v.origin) if BY_NAME[name].secret and v.value else v)
            for name, v in self.values.items()
        ]
        rows.append((f"{STAGES}.{STAGE_PATH}", self.stage_path))
        rows += [(f"{STAGES}.{name}", v) for name, v in self.stages.items()]
        return rows


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def _refuse(origin: str, setting: Setting, value: Any) -> UsageError:
    return UsageError(f"{origin}: {setting.name} = {_show(value)}: expected {setting.allowed()}")


def read_file(path: str) -> tuple[Path, dict[str, Any]]:
    """The file's tables; a missing or broken file is one line."""
    try:
        with Path(path).open("rb") as fh:
            return Path(path).absolute(), tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}: not valid TOML: {exc}") from None


def _from_file(
    path: Path, doc: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str], list[str] | None]:
    """Every value of the file, checked: (settings, stages, stage path)."""
    origin = f"config file {path}"
    values: dict[str, Any] = {}
    stages: dict[str, str] = {}
    stage_path: list[str] | None = None
    tables = ", ".join(SECTIONS)
    for top, body in doc.items():
        if not isinstance(body, dict):
            setting = BY_NAME.get(top)
            if setting is None or setting.section:
                raise UsageError(
                    f"{origin}: {top} is not a setting (top-level keys: data_dir; tables: {tables})"
                )
            values[top] = _checked_file_value(origin, path, setting, body)
            continue
        if top == STAGES:
            stages, stage_path = _stages_table(origin, path, body)
            continue
        if top not in SECTIONS:
            raise UsageError(f"{origin}: [{top}] is not a table porch reads (known: {tables})")
        for key, value in body.items():
            setting = BY_NAME.get(f"{top}.{key}")
            if setting is None:
                raise UsageError(
                    f"{origin}: {top}.{key} is not a setting ([{top}] takes: {', '.join(keys_of(top))})"
                )
            values[setting.name] = _checked_file_value(origin, path, setting, value)
    return values, stages, stage_path


def _checked_file_value(origin: str, path: Path, setting: Setting, value: Any) -> Any:
    checked = setting.check(value)
    if checked is None:
        raise _refuse(origin, setting, value)
    if setting.kind == "path" and not is_remote(checked):
        return str((path.parent / Path(checked).expanduser()).absolute())
    return checked


def _stages_table(
    origin: str, path: Path, body: Mapping[str, Any]
) -> tuple[dict[str, str], list[str] | None]:
    stages: dict[str, str] = {}
    stage_path: list[str] | None = None
    for name, target in body.items():
        if name == STAGE_PATH:
            if not isinstance(target, list) or not all(isinstance(d, str) and d for d in target):
                raise UsageError(
                    f"{origin}: {STAGES}.{STAGE_PATH} = {_show(target)}: expected a list of folders"
                    " (relative to the file's folder)"
                )
            stage_path = [str((path.parent / Path(d).expanduser()).absolute()) for d in target]
        elif not isinstance(target, str) or not TARGET.match(target):
            raise UsageError(
                f'{origin}: {STAGES}.{name} = {_show(target)}: expected "module:function"'
                ' (e.g. "my_pkg.stages:dedupe")'
            )
        else:
            stages[name] = target
    return stages, stage_path


def _private_if_secret(path: Path, values: Mapping[str, Any]) -> None:
    """Refuse a file that holds a credential and that others may read."""
    secrets = [name for name, value in values.items() if BY_NAME[name].secret and value]
    if not secrets:
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise UsageError(
            f"config file {path} holds {secrets[0]} but its mode is {mode:04o}: a file with"
            f" credentials must be private (chmod 600 {path})"
        )


def _from_env(setting: Setting, var: str, text: str) -> Any:
    origin = f"env {var}"
    if setting.kind == "bool":
        words = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False, "": False}  # fmt: skip
        if text.lower() not in words:
            raise _refuse(origin, setting, text)
        return words[text.lower()]
    value: Any = text
    if setting.kind in ("int", "float"):
        try:
            value = int(text) if setting.kind == "int" else float(text)
        except ValueError:
            raise _refuse(origin, setting, text) from None
    checked = setting.check(value)
    if checked is None:
        raise _refuse(origin, setting, value)
    if setting.kind == "path" and not is_remote(checked):
        return str(Path(checked).expanduser().absolute())
    return checked


def resolve(
    *,
    config_file: str | None,
    environ: Mapping[str, str],
    flags: Mapping[str, tuple[Any, str]] | None = None,
    stage_flags: Sequence[str] = (),
) -> Settings:
    """Every setting from defaults < the file < ``PORCH_*`` < ``flags`` (setting name ->
    (value, option)); anything not allowed is a `UsageError` naming where it came from."""
    values: dict[str, Value] = {s.name: Value(s.default) for s in SETTINGS}
    stages: dict[str, Value] = {}
    stage_path = Value([])
    path: Path | None = None
    if config_file:
        path, doc = read_file(config_file)
        file_values, file_stages, file_path = _from_file(path, doc)
        _private_if_secret(path, file_values)
        for name, value in file_values.items():
            values[name] = Value(value, "file", str(path))
        stages = {n: Value(t, "file", str(path)) for n, t in file_stages.items()}
        if file_path is not None:
            stage_path = Value(file_path, "file", str(path))
    for setting in SETTINGS:
        var = setting.env
        text = environ.get(var) if var else None
        if var is None or text is None or (setting.kind == "path" and not text):
            continue
        values[setting.name] = Value(_from_env(setting, var, text), "env", var)
    for name, (value, option) in (flags or {}).items():
        setting = BY_NAME[name]
        checked = setting.check(value)
        if checked is None:
            raise _refuse(f"flag {option}", setting, value)
        if setting.kind == "path" and not is_remote(checked):
            checked = str(Path(checked).expanduser().absolute())
        values[name] = Value(checked, "flag", option)
    for name, target in parse_stage_args(stage_flags):
        stages[name] = Value(target, "flag", "--stage")
    _derive(values)
    return Settings(file=path, values=values, stages=stages, stage_path=stage_path)


def _derive(values: dict[str, Value]) -> None:
    """Defaults that follow from other settings: the data dir's sockets and checkpoints."""
    root = Path(values["data_dir"].value).expanduser().absolute()
    values["data_dir"] = Value(str(root), values["data_dir"].source, values["data_dir"].origin)
    run = root / "run"
    derived = {
        "hub.ingest": f"ipc://{run / 'ingest.sock'}",
        "hub.publish": f"ipc://{run / 'publish.sock'}",
        "hub.request": f"ipc://{run / 'request.sock'}",
        "orchestrator.tasks": f"ipc://{run / 'tasks.sock'}",
        "orchestrator.checkpoint_dir": str(root / "checkpoints"),
    }
    for name, value in derived.items():
        if values[name].value is None:
            values[name] = Value(value)


def flags_of(args: Any, command: str) -> dict[str, tuple[Any, str]]:
    """The settings ``command``'s flags gave in ``args`` (parsed flags): name -> (value, option).
    A flag not given is None, False or empty there."""
    given: dict[str, tuple[Any, str]] = {}
    for setting in SETTINGS:
        option = setting.flags.get(command) or setting.flags.get("*")
        if option is None:
            continue
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if value is None or value is False or (isinstance(value, list) and not value):
            continue
        given[setting.name] = ((not value) if setting.negate else value, option)
    return given
