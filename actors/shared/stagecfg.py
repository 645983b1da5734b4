"""The stage registry an actor uses: built-ins, ``porch.stages`` entry points, and local stages."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
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
    config: str = ""  # the config file they came from ("" for none), for messages

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


def stage_names(stages: Sequence[str] | StageSet) -> list[str]:
    """The names of the stages `registry_from` makes of ``stages``, found without importing any
    stage: the built-ins, the ``porch.stages`` entry points and the local ``NAME=module:function``
    stages. A worker announces them in ``WorkerStarted``."""
    import importlib.metadata

    from stages.names import BUILTIN_NAMES, ENTRY_POINT_GROUP

    names = dict.fromkeys(BUILTIN_NAMES)
    names.update(
        dict.fromkeys(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    )
    specs = stages.specs if isinstance(stages, StageSet) else tuple(stages)
    names.update(dict.fromkeys(name for name, _ in parse_stage_args(specs)))
    return list(names)


def add_path(folders: Sequence[str]) -> None:
    """Put ``folders`` first on ``sys.path`` (once each), so local stage code imports."""
    for folder in reversed(folders):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)


StageLoader = Callable[[], StageSet]  # reads the local config's [stages] again


def registry_from(stages: Sequence[str] | StageSet, *, reimport: bool = False) -> Registry:
    """The registry with these local stages. ``reimport``: import their modules anew (a
    reload in a process that imported them before: the orchestrator's)."""
    from stages.errors import StageError
    from stages.registry import Registry

    chosen = stages if isinstance(stages, StageSet) else StageSet(specs=tuple(stages))
    add_path(chosen.path)
    importlib.invalidate_caches()  # a module file written since this process started
    try:
        if reimport:
            _reimport(chosen.specs)
        registry = Registry.default()
        for name, target in parse_stage_args(chosen.specs):
            registry.import_stage(name, target)
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    return registry


def _reimport(specs: Sequence[str]) -> None:
    from stages.errors import StageConfigError

    for name, target in parse_stage_args(specs):
        module = sys.modules.get(target.partition(":")[0])
        if module is None:
            continue
        try:
            importlib.reload(module)
        except Exception as exc:  # the module's own error, named with its stage
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StageConfigError(f"stage {name!r}: cannot import {target!r}: {reason}") from exc
