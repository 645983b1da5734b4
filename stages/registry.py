"""Stages by name: the built-ins, custom stages from entry points, and ``module:function`` targets.

A custom stage is a `Stage`, or a plain function ``(df, config) -> (df, report)`` (made into a
stage that runs on the whole table, since nothing says it may be split), or a function decorated
with `stage(...)`. Importing code by a ``module:function`` name is for local config only: a name
arriving in an event can select a registered stage, never make porch import something.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import pandas as pd

from stages import aggregation, cleaning, features, validation
from stages.errors import StageConfigError, StageError
from stages.names import ENTRY_POINT_GROUP
from stages.spec import Partitioning, Report, Stage

BUILTINS: Final = (cleaning.STAGE, features.STAGE, aggregation.STAGE, validation.STAGE)


def stage(
    name: str | None = None,
    *,
    partitioning: Partitioning | str = Partitioning.GLOBAL,
    description: str = "",
) -> Callable[[Callable[..., Any]], Stage]:
    """Decorate a ``(df, config) -> (df, report)`` function to make it a registrable `Stage`.

    ``partitioning="row_local"`` lets porch run it per partition; leave the default (global)
    unless each output row depends only on its own input row.
    """
    try:
        kind = Partitioning(partitioning)
    except ValueError as exc:
        raise StageConfigError(
            f"partitioning {partitioning!r} is not one of row_local, global "
            "(global_stats needs a Stage with map, reduce and apply)"
        ) from exc
    if kind is Partitioning.GLOBAL_STATS:
        raise StageConfigError("a global_stats stage needs a Stage with map, reduce and apply")

    def wrap(func: Callable[..., Any]) -> Stage:
        return Stage(
            name=name or func.__name__,
            func=_checked(name or func.__name__, func),
            partitioning=kind,
            description=description or (func.__doc__ or "").strip().split("\n")[0],
        )

    return wrap


def _checked(
    name: str, func: Callable[..., Any]
) -> Callable[[pd.DataFrame, Any], tuple[pd.DataFrame, Report]]:
    def run(df: pd.DataFrame, config: Any) -> tuple[pd.DataFrame, Report]:
        result = func(df, config)
        if (
            not isinstance(result, tuple)
            or len(result) != 2
            or not isinstance(result[0], pd.DataFrame)
            or not isinstance(result[1], Mapping)
        ):
            raise StageError(
                f"stage {name!r} must return (DataFrame, dict), got {type(result).__name__}"
            )
        return result[0], dict(result[1])

    return run


def as_stage(obj: Any, name: str) -> Stage:
    if isinstance(obj, Stage):
        return obj
    if callable(obj):
        return stage(name)(obj)
    raise StageConfigError(f"stage {name!r} is a {type(obj).__name__}, not a Stage or a function")


class Registry:
    """Name -> `Stage`. `default()` holds the built-ins and the ``porch.stages`` entry points."""

    def __init__(self, stages: Iterable[Stage] = BUILTINS) -> None:
        self._stages: dict[str, Stage] = {}
        self._targets: dict[str, str] = {}  # name -> the ``module:function`` it was imported as
        for s in stages:
            self.add(s)

    @classmethod
    def default(cls) -> Registry:
        registry = cls()
        registry.load_entry_points()
        return registry

    def add(self, item: Stage | Callable[..., Any], *, name: str | None = None) -> Stage:
        """Register a stage (or a plain function) under `name`; a taken name is refused."""
        label = name or getattr(item, "name", None) or getattr(item, "__name__", None)
        if not isinstance(label, str) or not label:
            raise StageConfigError(f"cannot tell the name of stage {item!r}; pass name=")
        made = as_stage(item, label)
        if name and made.name != name:
            made = Stage(
                **{**{f: getattr(made, f) for f in made.__dataclass_fields__}, "name": name}
            )
        if made.name in self._stages and self._stages[made.name] is not made:
            raise StageConfigError(f"stage {made.name!r} is already registered")
        self._stages[made.name] = made
        return made

    def get(self, name: str) -> Stage:
        try:
            return self._stages[name]
        except KeyError:
            raise StageConfigError(
                f"unknown stage {name!r} (known: {', '.join(sorted(self._stages))})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def names(self) -> list[str]:
        return sorted(self._stages)

    def load_entry_points(self) -> list[str]:
        """Register every stage in the ``porch.stages`` entry-point group; returns their names."""
        loaded = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._stages:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must name itself, not stop porch
                raise StageConfigError(
                    f"stage entry point {ep.name!r} ({ep.value}) does not load: {exc}"
                ) from exc
            self.add(obj, name=ep.name)
            loaded.append(ep.name)
        return loaded

    def import_stage(self, name: str, target: str) -> Stage:
        """Register ``module:function`` from local config under `name`; the same name and
        target again (a pipeline file naming a stage the config file has) is the same stage."""
        if self._targets.get(name) == target:
            return self._stages[name]
        module_name, sep, attr = target.partition(":")
        if not sep or not module_name or not attr:
            raise StageConfigError(
                f"stage {name!r}: {target!r} is not 'module:function' (e.g. 'mypkg.stages:dedupe')"
            )
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # a bad name or a module failing at import must name itself
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StageConfigError(f"stage {name!r}: cannot import {target!r}: {reason}") from exc
        if name in self._stages:
            was = f" as {self._targets[name]!r}" if name in self._targets else ""
            raise StageConfigError(f"stage {name!r} is already registered{was}, not as {target!r}")
        made = self.add(obj, name=name)
        self._targets[name] = target
        return made
