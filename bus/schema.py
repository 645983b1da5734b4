"""The machinery of the event catalogue: the `Event` base, schema checks, upcasting, encoding.

An event type is a frozen dataclass that `catalogued` compiles into a `Schema`. On the wire an
event is a msgpack map of its fields plus the envelope ``type``, ``v``, ``id``, ``ts`` and
``src``; the hub's ``seq`` travels beside the payload. Fields without a default are required.
The event types themselves are declared in `bus.events`; importing this module imports them.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Final, TypeVar

from bus.envelope import current_source, new_event_id
from bus.errors import MalformedEventError
from bus.wire import check_plain, pack, unpack_map

ENVELOPE: Final = ("type", "v", "id", "ts", "src")
MAX_ID_CHARS: Final = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: the envelope fields. Subclasses declare the payload."""

    TYPE: ClassVar[str] = ""
    V: ClassVar[int] = 1
    # live events (liveness and periodic samples) are published by the hub but never appended:
    # they reach whoever listens and leave no history (DESIGN section 4)
    LIVE: ClassVar[bool] = False
    id: str = field(default_factory=new_event_id)
    ts: float = field(default_factory=time.time)
    src: str = field(default_factory=current_source)


@dataclass(frozen=True, slots=True)
class Schema:
    """The compiled check of one event type at its current version."""

    cls: type[Event]
    type: str
    v: int
    names: tuple[str, ...]
    required: frozenset[str]
    allowed: frozenset[str]
    scalars: tuple[tuple[str, frozenset[type]], ...]
    lists: tuple[tuple[str, frozenset[type] | None, frozenset[type]], ...]
    plain: tuple[tuple[str, frozenset[type]], ...]
    floats: tuple[str, ...]
    kinds: dict[str, str]
    live: bool = False


CATALOGUE: dict[str, type[Event]] = {}
EventT = TypeVar("EventT", bound=Event)
SCHEMAS: dict[str, Schema] = {}
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_upcasters: Mapping[tuple[str, int], Upcaster] = {}

_SCALARS: Final[dict[Any, frozenset[type]]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    float: frozenset({float, int}),
    bool: frozenset({bool}),
    type(None): frozenset({type(None)}),
}


def _compile_type(annotation: Any) -> tuple[str, frozenset[type], frozenset[type] | None]:
    """Map a field annotation to (kind, allowed python types, allowed item types)."""
    if annotation in _SCALARS:
        return "scalar", _SCALARS[annotation], None
    if annotation is Any:
        return "plain", frozenset(), None
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        kinds = [_compile_type(a) for a in typing.get_args(annotation)]
        allowed = frozenset().union(*(k[1] for k in kinds))
        kind = "scalar" if all(k[0] == "scalar" for k in kinds) else "plain"
        return kind, allowed, None
    if origin is list:
        (item,) = typing.get_args(annotation)
        items = None if item is Any else _compile_type(item)[1]
        return "list", frozenset({list, tuple}), items
    if origin is dict:
        return "plain", frozenset({dict}), None
    raise TypeError(f"unsupported field annotation {annotation!r}")


def catalogued(cls: type[Event]) -> type[Event]:
    """Register an event dataclass in the catalogue and compile its schema."""
    cls.TYPE = cls.__name__
    hints = typing.get_type_hints(cls)
    names, required, scalars, lists, plain, floats = [], set(), [], [], [], []
    kinds: dict[str, str] = {}
    for f in fields(cls):
        names.append(f.name)
        if f.default is MISSING and f.default_factory is MISSING:
            required.add(f.name)
        kind, allowed, items = _compile_type(hints[f.name])
        if kind == "scalar":
            scalars.append((f.name, allowed))
            if float in allowed:
                floats.append(f.name)
        elif kind == "list":
            lists.append((f.name, items, allowed))
        else:
            plain.append((f.name, allowed))
        kinds[f.name] = _describe(hints[f.name])
    schema = Schema(
        cls=cls,
        type=cls.TYPE,
        v=cls.V,
        names=tuple(names),
        required=frozenset(required | {"type", "v", "id", "ts", "src"}),
        allowed=frozenset(names) | frozenset(ENVELOPE),
        scalars=(("type", _SCALARS[str]), ("v", _SCALARS[int]), *scalars),
        lists=tuple(lists),
        plain=tuple(plain),
        floats=tuple(floats),
        kinds=kinds,
        live=cls.LIVE,
    )
    CATALOGUE[cls.TYPE] = cls
    SCHEMAS[cls.TYPE] = schema
    return cls


def payload(spec: type, *, required: Iterable[str] = ()) -> Callable[[type[EventT]], type[EventT]]:
    """Declare an event's payload as the fields of ``spec``, a dataclass declared beside the fold
    that reads it: their names, order, types and defaults, ahead of the event's own annotations.
    Apply it under ``@dataclass(..., kw_only=True)``. ``required``: fields the wire requires
    although ``spec`` gives them a default."""
    hints = typing.get_type_hints(spec)
    must = frozenset(required)
    if not must <= hints.keys():
        raise TypeError(f"payload of {spec.__name__}: no field {min(must - hints.keys())!r}")

    def declare(cls: type[EventT]) -> type[EventT]:
        for f in fields(spec):
            if f.name in must:
                continue
            if f.default is not MISSING:
                setattr(cls, f.name, f.default)
            elif f.default_factory is not MISSING:
                setattr(cls, f.name, field(default_factory=f.default_factory))
        own = inspect.get_annotations(cls)
        cls.__annotations__ = {**{f.name: hints[f.name] for f in fields(spec)}, **own}
        return cls

    return declare


def _describe(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    return text or str(annotation).replace("typing.", "")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_map(obj: dict[str, Any], raw: bytes = b"") -> tuple[Schema, dict[str, Any]]:
    """Validate a decoded event map; return its schema and the map at the current version.

    Raises `MalformedEventError` naming the event type and the bad field.
    """
    kind = obj.get("type")
    schema = SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None:
        what = f"unknown event type {kind!r}" if type(kind) is str else "event has no 'type' string"
        raise MalformedEventError(what, raw)
    v = obj.get("v")
    if v != schema.v or type(v) is not int:
        obj = _upcast(schema, obj, raw)
    keys = obj.keys()
    if not keys <= schema.allowed:
        extra = min(keys - schema.allowed, key=repr)
        raise MalformedEventError(f"{kind}: unknown field {extra!r}", raw)
    if not schema.required <= keys:
        missing = min(schema.required - keys)
        raise MalformedEventError(f"{kind}: missing required field {missing!r}", raw)
    for name, allowed in schema.scalars:
        value = obj.get(name, None)
        if type(value) not in allowed and name in obj:
            raise MalformedEventError(
                f"{kind}: field {name!r} must be {schema.kinds.get(name, 'str')}, got {_type_name(value)}",
                raw,
            )
    event_id = obj["id"]
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_CHARS:
        raise MalformedEventError(
            f"{kind}: field 'id' must be a str of 1 to {MAX_ID_CHARS} chars", raw
        )
    if type(obj["ts"]) not in (float, int) or type(obj["src"]) is not str:
        bad = "ts" if type(obj["ts"]) not in (float, int) else "src"
        raise MalformedEventError(f"{kind}: field {bad!r} has the wrong type", raw)
    for name, items, allowed in schema.lists:
        if name in obj:
            value = obj[name]
            if type(value) not in allowed or not (
                all(type(i) in items for i in value) if items else check_plain(value)
            ):
                raise MalformedEventError(
                    f"{kind}: field {name!r} must be {schema.kinds[name]}", raw
                )
    for name, allowed in schema.plain:
        if name in obj:
            value = obj[name]
            if (allowed and type(value) not in allowed) or not check_plain(value):
                raise MalformedEventError(
                    f"{kind}: field {name!r} must be {schema.kinds[name]} of plain data", raw
                )
    return schema, obj


def _upcast(schema: Schema, obj: dict[str, Any], raw: bytes) -> dict[str, Any]:
    v = obj.get("v")
    if type(v) is not int or v < 1:
        raise MalformedEventError(f"{schema.type}: field 'v' must be a positive int", raw)
    if v > schema.v:
        raise MalformedEventError(
            f"{schema.type}: schema version {v} is newer than this program knows ({schema.v})", raw
        )
    return upcast(schema.type, obj, schema.v, _upcasters)


def upcast(
    kind: str, obj: dict[str, Any], target: int, upcasters: Mapping[tuple[str, int], Upcaster]
) -> dict[str, Any]:
    """Apply the upcasters of ``kind`` one version at a time up to ``target``."""
    fields_ = dict(obj)
    v = fields_["v"]
    while v < target:
        step = upcasters.get((kind, v))
        if step is None:
            raise MalformedEventError(f"{kind}: no upcaster from schema version {v}")
        try:
            fields_ = step(fields_)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedEventError(
                f"{kind}: cannot upcast from schema version {v}: {exc}"
            ) from exc
        v += 1
        fields_["v"] = v
    return fields_


def register_upcasters(upcasters: Mapping[tuple[str, int], Upcaster]) -> None:
    """Use ``upcasters`` (the catalogue's ``UPCASTERS``) for events of an older version."""
    global _upcasters
    _upcasters = upcasters


def to_map(event: Event) -> dict[str, Any]:
    schema = SCHEMAS[event.TYPE]
    obj: dict[str, Any] = {"type": schema.type, "v": schema.v}
    for name in schema.names:
        obj[name] = getattr(event, name)
    return obj


def encode(event: Event) -> bytes:
    """Validate and pack an event as its wire payload."""
    obj = to_map(event)
    check_map(obj)
    return pack(obj)


def from_map(obj: dict[str, Any], raw: bytes = b"") -> Event:
    schema, obj = check_map(obj, raw)
    for name in schema.floats:
        value = obj.get(name)
        if type(value) is int:
            obj[name] = float(value)
    return schema.cls(**{k: v for k, v in obj.items() if k not in ("type", "v")})


def current(obj: dict[str, Any]) -> dict[str, Any]:
    """An event map as this program's schema has it: upcast when it is of an older version.

    What folds read from the log goes through here (the log keeps each event as it was
    written). A map that is not a known event of an older version comes back as it is."""
    kind = obj.get("type")
    schema = SCHEMAS.get(kind) if type(kind) is str else None
    v = obj.get("v")
    if schema is None or v == schema.v or type(v) is not int or not 1 <= v < schema.v:
        return obj
    try:
        return upcast(schema.type, obj, schema.v, _upcasters)
    except MalformedEventError:
        return obj


def fields_of(payload: bytes) -> dict[str, Any]:
    """The map of a logged event's bytes, at the current schema version (`current`)."""
    return current(unpack_map(payload))


def decode(raw: bytes) -> Event:
    """The only way from bytes to an event: bounded unpack, lookup, upcast, type check."""
    return from_map(unpack_map(raw), raw)


def build(kind: str, values: dict[str, Any]) -> Event:
    """Build an event of type ``kind`` from field values, filling the envelope."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise MalformedEventError(
            f"unknown event type {kind!r}; known: {', '.join(sorted(SCHEMAS))}"
        )
    obj = {
        "type": kind,
        "v": schema.v,
        "id": new_event_id(),
        "ts": time.time(),
        "src": current_source(),
    }
    obj.update(values)
    return from_map(obj)


def coerce(kind: str, name: str, text: str) -> Any:
    """Turn the text of ``name=text`` into the field's type (for the command line)."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise MalformedEventError(
            f"unknown event type {kind!r}; known: {', '.join(sorted(SCHEMAS))}"
        )
    if name not in schema.allowed:
        raise MalformedEventError(
            f"{kind}: unknown field {name!r}; fields: {', '.join(schema.names)}"
        )
    allowed = dict(schema.scalars).get(name)
    if allowed is None:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise MalformedEventError(f"{kind}: field {name!r} needs JSON, got {text!r}") from exc
    if type(None) in allowed and text in ("null", "none", "None"):
        return None
    if bool in allowed:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
    if int in allowed:
        with contextlib.suppress(ValueError):
            return int(text)
    if float in allowed:
        with contextlib.suppress(ValueError):
            return float(text)
    if str in allowed:
        return text
    raise MalformedEventError(f"{kind}: field {name!r} must be {schema.kinds[name]}, got {text!r}")


# The registry is filled when the catalogue is imported: whoever imports the machinery gets it.
import bus.events  # noqa: E402, F401
