"""Pipelines: an ordered list or a DAG of stage steps with per-step config, in Python or TOML.

A step reads the output of one other step (its `input`, by default the first step it comes
`after`) or, with no predecessor, the pipeline's input. `after` may name more steps, to order
without passing data. Everything is checked when the pipeline is built: unknown stage, unknown
step, a cycle, an unknown or mistyped config key; each is one line that names it.

TOML, list form::

    [pipeline]
    name = "snowflake_cost"
    stages = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]

    [config.data_cleaning]
    outlier_action = "clip"

    [stages]                       # custom stages from local code
    sessionize = "my_pkg.stages:sessionize"

DAG form: ``[[step]]`` tables with ``id``, ``stage``, ``after``, ``input`` and ``[step.config]``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa

from stages.errors import StageConfigError
from stages.registry import Registry
from stages.spec import Report, Stage

DEFAULT_STAGES: Final = (
    "data_cleaning", "feature_engineering", "data_aggregation", "data_validation",
)  # fmt: skip
SOURCE: Final = "source"
_TOP_KEYS: Final = {"pipeline", "config", "stages", "step"}
_PIPELINE_KEYS: Final = {"name", "stages"}
_STEP_KEYS: Final = {"id", "stage", "after", "input", "config"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    id: str
    stage: str
    config: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    input: str | None = None

    @property
    def source(self) -> str:
        """The step whose output this one reads, or `SOURCE` for the pipeline's input."""
        if self.input is not None:
            return self.input
        return self.after[0] if self.after else SOURCE


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """A checked pipeline; `steps` are in an order that respects every dependency."""

    name: str
    steps: tuple[Step, ...]
    registry: Registry = field(compare=False, repr=False)

    def stage(self, step: Step) -> Stage:
        return self.registry.get(step.stage)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise StageConfigError(f"pipeline {self.name!r} has no step {step_id!r}")

    @property
    def outputs(self) -> list[str]:
        """Steps no other step reads or waits for: the pipeline's results."""
        used = {s.source for s in self.steps} | {a for s in self.steps for a in s.after}
        return [s.id for s in self.steps if s.id not in used]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for an event or a file): name and steps with their config."""
        return {
            "name": self.name,
            "steps": [
                {
                    "id": s.id,
                    "stage": s.stage,
                    "config": _plain(s.config),
                    "after": list(s.after),
                    **({"input": s.input} if s.input else {}),
                }
                for s in self.steps
            ],
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build(
    steps: Sequence[str | Stage | Step | Mapping[str, Any]] = DEFAULT_STAGES,
    *,
    name: str = "pipeline",
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Registry | None = None,
) -> Pipeline:
    """Build and check a pipeline.

    Items that are stage names or `Stage` objects form a chain, each reading the one before;
    `configs` gives their config by stage name. `Step` objects or step tables (``id``, ``stage``,
    ``after``, ``input``, ``config``) make a DAG.
    """
    if isinstance(steps, str | bytes | Mapping) or not isinstance(steps, Iterable):
        raise StageConfigError(
            f"pipeline {name!r}: steps must be a list of stages or steps, got {type(steps).__name__}"
        )
    if configs is not None and not isinstance(configs, Mapping):
        raise StageConfigError(
            f"pipeline {name!r}: configs must map step or stage names to tables, "
            f"got {type(configs).__name__}"
        )
    registry = registry or Registry.default()
    configs = dict(configs or {})
    made: list[Step] = []
    previous: str | None = None
    for index, item in enumerate(steps):
        if isinstance(item, Stage):
            if item.name not in registry:
                registry.add(item)
            item = item.name
        if isinstance(item, str):
            step_id = _unique_id(item, made)
            made.append(
                Step(
                    id=step_id,
                    stage=item,
                    # a step's own entry, else its stage's: shared by every step of that stage
                    config=(configs[step_id] if step_id in configs else configs.get(item)) or {},
                    after=(previous,) if previous else (),
                )
            )
        elif isinstance(item, Step):
            made.append(item)
        elif isinstance(item, Mapping):
            made.append(_step_from_table(item, index))
        else:
            raise StageConfigError(
                f"pipeline {name!r}: step #{index + 1} is a {type(item).__name__}; "
                "give a stage name, a Stage, a Step or a table"
            )
        previous = made[-1].id
    unknown = set(configs) - {s.id for s in made} - {s.stage for s in made}
    if unknown:
        raise StageConfigError(
            f"pipeline {name!r}: config given for {sorted(unknown)[0]!r}, which is not a step"
        )
    return _check(name, made, registry)


def _unique_id(stage_name: str, made: Sequence[Step]) -> str:
    taken = {s.id for s in made}
    if stage_name not in taken:
        return stage_name
    n = 2
    while f"{stage_name}_{n}" in taken:
        n += 1
    return f"{stage_name}_{n}"


def _step_from_table(table: Mapping[str, Any], index: int) -> Step:
    unknown = set(table) - _STEP_KEYS
    if unknown:
        raise StageConfigError(
            f"step #{index + 1}: unknown key {sorted(unknown)[0]!r} "
            f"(allowed: {', '.join(sorted(_STEP_KEYS))})"
        )
    stage_name = table.get("stage")
    if not isinstance(stage_name, str) or not stage_name:
        raise StageConfigError(f"step #{index + 1}: 'stage' must name a stage")
    step_id = table.get("id", stage_name)
    after = table.get("after", [])
    if isinstance(after, str):
        after = [after]
    if not isinstance(step_id, str) or not step_id:
        raise StageConfigError(f"step #{index + 1}: 'id' must be text")
    if not isinstance(after, list | tuple) or not all(isinstance(a, str) for a in after):
        raise StageConfigError(f"step {step_id!r}: 'after' must be a list of step ids")
    config = table.get("config", {})
    if not isinstance(config, Mapping):
        raise StageConfigError(f"step {step_id!r}: 'config' must be a table")
    source = table.get("input")
    if source is not None and (not isinstance(source, str) or not source):
        raise StageConfigError(f"step {step_id!r}: 'input' must be a step id")
    return Step(id=step_id, stage=stage_name, config=dict(config), after=tuple(after), input=source)


def _check(name: str, steps: Sequence[Step], registry: Registry) -> Pipeline:
    if not steps:
        raise StageConfigError(f"pipeline {name!r} has no steps")
    ids: dict[str, Step] = {}
    for s in steps:
        if s.id in ids:
            raise StageConfigError(f"pipeline {name!r}: step id {s.id!r} is used twice")
        if s.id == SOURCE:
            raise StageConfigError(f"pipeline {name!r}: step id {SOURCE!r} is reserved")
        ids[s.id] = s
    for s in steps:
        if s.input is not None and (not isinstance(s.input, str) or not s.input):
            raise StageConfigError(f"pipeline {name!r}: step {s.id!r}: 'input' must be a step id")
        try:
            stage = registry.get(s.stage)
        except StageConfigError as exc:
            raise StageConfigError(f"pipeline {name!r}: step {s.id!r}: {exc}") from exc
        for dep in (*s.after, *([s.input] if s.input else [])):
            if dep not in ids:
                raise StageConfigError(
                    f"pipeline {name!r}: step {s.id!r} comes after unknown step {dep!r}"
                )
        if s.input and s.input not in s.after:
            s = Step(
                id=s.id, stage=s.stage, config=s.config, after=(*s.after, s.input), input=s.input
            )
            ids[s.id] = s
        try:
            stage.config(s.config)
        except StageConfigError as exc:
            raise StageConfigError(f"pipeline {name!r}: step {s.id!r}: {exc}") from exc
    return Pipeline(name=name, steps=tuple(_order(name, list(ids.values()))), registry=registry)


def _order(name: str, steps: list[Step]) -> list[Step]:
    """Topological order in waves, declaration order within a wave; a cycle is named.

    Each wave is the steps whose every ``after`` is in an earlier wave. Linear in steps and
    edges: a chain of thousands of steps plans at once.
    """
    position = {s.id: i for i, s in enumerate(steps)}
    waiting = {s.id: len(set(s.after)) for s in steps}
    children: dict[str, list[Step]] = {}
    for s in steps:
        for a in set(s.after):
            children.setdefault(a, []).append(s)
    ordered: list[Step] = []
    wave = [s for s in steps if not waiting[s.id]]
    while wave:
        ordered += wave
        ready: list[Step] = []
        for s in wave:
            for child in children.get(s.id, ()):
                waiting[child.id] -= 1
                if not waiting[child.id]:
                    ready.append(child)
        wave = sorted(ready, key=lambda s: position[s.id])
    if len(ordered) < len(steps):
        done = {s.id for s in ordered}
        pending = [s for s in steps if s.id not in done]
        raise StageConfigError(f"pipeline {name!r} has a cycle: {_cycle(pending)}")
    return ordered


def _cycle(pending: Sequence[Step]) -> str:
    by_id = {s.id: s for s in pending}
    path: list[str] = []
    node = pending[0].id
    while node not in path:
        path.append(node)
        node = next(a for a in by_id[node].after if a in by_id)
    loop = path[path.index(node) :]
    return " -> ".join(reversed([*loop, node]))


def load(source: str | Path | Mapping[str, Any], *, registry: Registry | None = None) -> Pipeline:
    """A pipeline from a TOML file, TOML text, or the equivalent mapping."""
    if isinstance(source, Mapping):
        doc, label = source, "pipeline"
    elif not isinstance(source, str | Path):
        raise StageConfigError(
            f"pipeline must be a TOML file, TOML text or a table, got {type(source).__name__}"
        )
    else:
        text, label = _read(source)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise StageConfigError(f"{label}: not valid TOML: {exc}") from exc
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise StageConfigError(
            f"{label}: unknown table {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_TOP_KEYS))})"
        )
    head = doc.get("pipeline", {})
    if not isinstance(head, Mapping) or set(head) - _PIPELINE_KEYS:
        bad = sorted(set(head) - _PIPELINE_KEYS) if isinstance(head, Mapping) else ["pipeline"]
        raise StageConfigError(
            f"{label}: unknown key {bad[0]!r} in [pipeline] (allowed: name, stages)"
        )
    name = head.get("name", Path(label).stem if label != "pipeline" else "pipeline")
    registry = registry or Registry.default()
    custom = doc.get("stages", {})
    if not isinstance(custom, Mapping):
        raise StageConfigError(f"{label}: [stages] must map names to 'module:function'")
    for stage_name, target in custom.items():
        if not isinstance(target, str):
            raise StageConfigError(f"{label}: stage {stage_name!r} must be 'module:function'")
        registry.import_stage(stage_name, target)
    if "step" in doc and "stages" in head:
        raise StageConfigError(
            f"{label}: give either [pipeline] stages or [[step]] tables, not both"
        )
    configs = doc.get("config", {})
    if not isinstance(configs, Mapping):
        raise StageConfigError(f"{label}: [config] must hold one table per stage")
    if "step" in doc:
        if configs:
            raise StageConfigError(f"{label}: with [[step]] tables, put config in [step.config]")
        if not isinstance(doc["step"], list):
            raise StageConfigError(f"{label}: write steps as [[step]] tables")
        return build(doc["step"], name=name, registry=registry)
    names = head.get("stages", list(DEFAULT_STAGES))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StageConfigError(f"{label}: [pipeline] stages must be a list of stage names")
    return build(names, name=name, configs=configs, registry=registry)


def _read(source: str | Path) -> tuple[str, str]:
    if isinstance(source, Path) or ("\n" not in source and source.endswith(".toml")):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise StageConfigError(f"pipeline file {str(path)!r}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise StageConfigError(f"pipeline file {str(path)!r} is not UTF-8 text") from exc
    return source, "pipeline"


def run(pipeline: Pipeline, df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, Report]]:
    """Run every step in this process, whole-table; returns each step's output and report.

    An output is dropped as soon as no later step reads it, so memory holds what is still needed.
    """
    readers: dict[str, int] = {}
    for s in pipeline.steps:
        readers[s.source] = readers.get(s.source, 0) + 1
    keep = set(pipeline.outputs)
    frames: dict[str, pd.DataFrame] = {SOURCE: df}
    reports: dict[str, Report] = {}
    for s in pipeline.steps:
        stage = pipeline.stage(s)
        frames[s.id], reports[s.id] = stage(frames[s.source], s.config)
        if s.id not in keep and not readers.get(s.id):
            del frames[s.id]  # ordering-only step: its report is the result
        readers[s.source] -= 1
        if readers[s.source] == 0 and s.source not in keep and s.source != SOURCE:
            del frames[s.source]
        release_memory()
    frames.pop(SOURCE)
    return frames, reports


def release_memory() -> None:
    """Hand memory freed by a stage back to the system, so the next stage starts lean.

    Arrow's allocator keeps freed blocks for reuse; between stages that reuse rarely comes, and
    the kept blocks only raise the process's resident size.
    """
    pa.default_memory_pool().release_unused()
