"""A fold's state as plain msgpack data and back, guided by its dataclasses' type hints.

Fold states are dataclasses of dicts (some keyed by tuples), sets, tuples and deques, which
msgpack cannot hold as they are. `StateCodec` compiles, once per state class, an encoder and a
decoder from the annotations: a dataclass becomes the list of its fields, a tuple-keyed dict a
list of pairs, a set or deque a list. Plain fields (``str``, numbers, ``dict[str, Any]``) pass
through untouched, so the codec costs little where the state is already plain. A class named
in ``as_maps`` (one with a door of its own: a ``to_map()`` method and an ``of(map)`` class
method, like the execution plan) is written as its map and read back through ``of``, as it
came off the event.

``version`` is a hash of the shape (every class, field and annotation reached from the root):
a snapshot written by a state of another shape is never read back as this one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import hashlib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from store.errors import StoreError

Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]
_PLAIN: frozenset[Any] = frozenset({str, int, float, bool, bytes, type(None), Any})


class StateShapeError(StoreError, TypeError):
    """A state class holds a field whose annotation the codec cannot write down."""


class StateCodec:
    """Writes one fold's state class as plain data and reads it back (see the module doc).

    ``transient`` names fields (of any class reached) that are scratch for the current event,
    like "what the last event changed", or indexes of other fields: they are not written and come
    back as their defaults, and ``after_load`` rebuilds the indexes. ``as_maps`` names classes
    written as their ``to_map()`` and read back through their ``of``: only those named, as a
    ``to_map`` may leave out what a fold keeps (a logged rule's version), and an ``of`` may
    refuse what a fold keeps as it came.
    """

    def __init__(
        self,
        root: type,
        *,
        transient: Iterable[str] = (),
        fold_version: int = 1,
        after_load: Callable[[Any], None] | None = None,
        as_maps: Iterable[type] = (),
    ) -> None:
        self.root = root
        self.transient = frozenset(transient)
        self._as_maps = frozenset(as_maps)
        self._after_load = after_load
        self._shape: list[str] = [f"fold={fold_version}"]
        self._classes: dict[type, tuple[Encode, Decode]] = {}
        self._encode, self._decode = self._compile(root)
        digest = hashlib.sha256("\n".join(self._shape).encode()).hexdigest()[:16]
        self.version = f"{root.__name__}-{fold_version}-{digest}"

    def dump(self, state: Any) -> Any:
        """The state as plain data."""
        return self._encode(state)

    def load(self, data: Any) -> Any:
        """The state back from `dump`'s data; raises ValueError or TypeError on data that does
        not fit the shape."""
        with paused_gc():
            state = self._decode(data)
        if self._after_load is not None:
            self._after_load(state)  # rebuild what the transient fields index
        return state

    # --- compiling ---------------------------------------------------------------------------

    def _compile(self, annotation: Any) -> tuple[Encode | None, Decode | None]:
        """Encoder and decoder of a value of ``annotation``; None where it is plain data."""
        if annotation is None or annotation in _PLAIN:
            return None, None
        if annotation in self._as_maps:
            self._shape.append(f"{annotation.__qualname__} as its map")
            return _to_map, annotation.of
        if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
            return self._compile_class(annotation)
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (types.UnionType, typing.Union):
            return self._compile_union(annotation, args)
        if origin is dict:
            return self._compile_dict(args)
        if origin in (list, set, frozenset, collections.deque):
            enc, dec = self._compile(args[0]) if args else (None, None)
            return _sequence(origin, enc, dec)
        if origin is tuple:
            return self._compile_tuple(args)
        if annotation in (dict, list):
            return None, None
        raise StateShapeError(f"state codec: cannot write down a field of type {annotation!r}")

    def _compile_class(self, cls: type) -> tuple[Encode, Decode]:
        if cls in self._classes:
            return self._classes[cls]
        names: list[str] = []
        encoders: list[Encode | None] = []
        decoders: list[Decode | None] = []

        # a class may refer to itself: register forwarding stubs before compiling its fields
        def encode(value: Any) -> Any:
            return [
                getattr(value, n) if e is None else e(getattr(value, n))
                for n, e in zip(names, encoders, strict=True)
            ]

        def decode(data: Any) -> Any:
            if len(data) != len(names):
                raise ValueError(f"{cls.__name__}: {len(data)} fields, expected {len(names)}")
            return cls(
                **{
                    n: x if d is None else d(x)
                    for n, d, x in zip(names, decoders, data, strict=True)
                }
            )

        self._classes[cls] = (encode, decode)
        hints = typing.get_type_hints(cls)
        self._shape.append(cls.__qualname__)
        for f in dataclasses.fields(cls):
            if f.name in self.transient or not f.init:
                continue
            enc, dec = self._compile(hints[f.name])
            names.append(f.name)
            encoders.append(enc)
            decoders.append(dec)
            self._shape.append(f"  {f.name}: {hints[f.name]!r}")
        return encode, decode

    def _compile_union(self, annotation: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
        others = [a for a in args if a is not type(None)]
        compiled = [self._compile(a) for a in others]
        if all(enc is None for enc, _ in compiled):
            return None, None
        if len(others) == 1:  # X | None
            enc, dec = compiled[0]
            assert enc is not None
            assert dec is not None
            return (
                lambda v: None if v is None else enc(v),
                lambda d: None if d is None else dec(d),
            )
        raise StateShapeError(f"state codec: cannot tell the members of {annotation!r} apart")

    def _compile_dict(self, args: tuple[Any, ...]) -> tuple[Any, Any]:
        if not args:
            return None, None
        kenc, kdec = self._compile(args[0])
        venc, vdec = self._compile(args[1])
        if args[0] is str:
            if venc is None:
                return None, None
            assert vdec is not None
            return (
                lambda v: {k: venc(x) for k, x in v.items()},
                lambda d: {k: vdec(x) for k, x in d.items()},
            )
        kenc = kenc or _same
        kdec = kdec or _same
        venc = venc or _same
        vdec = vdec or _same
        return (
            lambda v: [[kenc(k), venc(x)] for k, x in v.items()],
            lambda d: {kdec(k): vdec(x) for k, x in d},
        )

    def _compile_tuple(self, args: tuple[Any, ...]) -> tuple[Any, Any]:
        if len(args) == 2 and args[1] is Ellipsis:
            enc, dec = self._compile(args[0])
            return _sequence(tuple, enc, dec)
        compiled = [self._compile(a) for a in args]
        if all(e is None for e, _ in compiled):
            return list, tuple
        encs = [e or _same for e, _ in compiled]
        decs = [d or _same for _, d in compiled]
        return (
            lambda v: [e(x) for e, x in zip(encs, v, strict=True)],
            lambda d: tuple(f(x) for f, x in zip(decs, d, strict=True)),
        )


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a state is built: it makes millions of objects at
    once, none of them garbage, and the collector would walk them all again and again (an
    unpack of a 15 MB snapshot takes 8 times as long with it)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # what was built lives on: out of the collector's way, or its first pass after this
        # walks all of it (objects freed by their counts are freed as before)
        gc.freeze()
        if was:
            gc.enable()


def _same(value: Any) -> Any:
    return value


def _to_map(value: Any) -> Any:
    return value.to_map()


def _sequence(kind: Any, enc: Encode | None, dec: Decode | None) -> tuple[Encode, Decode]:
    make = collections.deque if kind is collections.deque else kind
    if enc is None:
        return list, make
    assert dec is not None
    return (lambda v: [enc(x) for x in v]), (lambda d: make(dec(x) for x in d))
