"""The processes of porch (orchestrator, worker, scheduler, CLI) and the seed's Python API.

``from actors import MLPipelineOrchestrator, PipelineStage, ExecutionMode`` as in the seed
README. Names load on first use, so the CLI starts without pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MLPipelineOrchestrator": "actors.api.orchestrator",
    "PipelineStage": "actors.api.orchestrator",
    "ExecutionMode": "actors.api.orchestrator",
    "PipelineExecution": "actors.api.orchestrator",
    "StageResult": "actors.api.orchestrator",
    "PipelineScheduler": "actors.api.scheduler",
    "ScheduleConfig": "actors.api.scheduler",
    "ScheduleType": "actors.api.scheduler",
    "RetryStrategy": "actors.api.scheduler",
    "MisfirePolicy": "actors.api.scheduler",
    "PipelineMonitor": "actors.api.monitor",
    "AlertRule": "actors.api.monitor",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
