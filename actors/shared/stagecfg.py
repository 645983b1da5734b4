"""The stage registry an actor uses: built-ins, ``porch.stages`` entry points, and local stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors.errors import UsageError

if TYPE_CHECKING:
    from stages.registry import Registry


def parse_stage_args(values: Sequence[str]) -> list[tuple[str, str]]:
    """``NAME=module:function`` flags as pairs; a malformed one is a usage error."""
    pairs = []
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or ":" not in target:
            raise UsageError(f"--stage {value!r}: expected NAME=module:function")
        pairs.append((name, target))
    return pairs


def stage_names(values: Sequence[str]) -> list[str]:
    """The names of the stages `registry_from` makes of ``values``, found without importing any
    stage: the built-ins, the ``porch.stages`` entry points and the local ``NAME=module:function``
    stages. A worker announces them in ``WorkerStarted``."""
    import importlib.metadata

    from stages.names import BUILTIN_NAMES, ENTRY_POINT_GROUP

    names = dict.fromkeys(BUILTIN_NAMES)
    names.update(
        dict.fromkeys(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    )
    names.update(dict.fromkeys(name for name, _ in parse_stage_args(values)))
    return list(names)


def registry_from(values: Sequence[str]) -> Registry:
    from stages.errors import StageError
    from stages.registry import Registry

    try:
        registry = Registry.default()
        for name, target in parse_stage_args(values):
            registry.import_stage(name, target)
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    return registry
