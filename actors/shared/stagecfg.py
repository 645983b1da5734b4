"""The stage registry an actor uses: built-ins, ``porch.stages`` entry points, and local stages."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors.errors import UsageError

if TYPE_CHECKING:
    from stages.registry import Registry


@dataclass(frozen=True, slots=True)
class StageSet:
    """The local stages an actor loads: ``NAME=module:function`` specs, and the folders their
    code is imported from (put first on ``sys.path``). Only local config makes one: an event
    never names code to import."""

    specs: tuple[str, ...] = ()
    path: tuple[str, ...] = ()

    def runner_args(self) -> list[str]:
        """The flags that give a worker's runner process this set."""
        return [f for s in self.specs for f in ("--stage", s)] + [
            f for d in self.path for f in ("--path", d)
        ]


def parse_stage_args(values: Sequence[str]) -> list[tuple[str, str]]:
    """``NAME=module:function`` flags as pairs; a malformed one is a usage error."""
    pairs = []
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or ":" not in target:
            raise UsageError(f"--stage {value!r}: expected NAME=module:function")
        pairs.append((name, target))
    return pairs


def add_path(folders: Sequence[str]) -> None:
    """Put ``folders`` first on ``sys.path`` (once each), so local stage code imports."""
    for folder in reversed(folders):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)


def registry_from(stages: Sequence[str] | StageSet) -> Registry:
    from stages.errors import StageError
    from stages.registry import Registry

    chosen = stages if isinstance(stages, StageSet) else StageSet(specs=tuple(stages))
    add_path(chosen.path)
    try:
        registry = Registry.default()
        for name, target in parse_stage_args(chosen.specs):
            registry.import_stage(name, target)
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    return registry
