"""The processes of porch (orchestrator, worker, scheduler, CLI) and the seed's Python API.

``from actors import MLPipelineOrchestrator, PipelineStage, ExecutionMode`` as in the seed
README. Names load on first use, so the CLI starts without pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MLPipelineOrchestrator": "actors.api",
    "PipelineStage": "actors.api",
    "ExecutionMode": "actors.api",
    "PipelineExecution": "actors.api",
    "StageResult": "actors.api",
    "PipelineScheduler": "actors.schedule_api",
    "ScheduleConfig": "actors.schedule_api",
    "ScheduleType": "actors.schedule_api",
    "RetryStrategy": "actors.schedule_api",
    "MisfirePolicy": "actors.schedule_api",
    "PipelineMonitor": "actors.monitor_api",
    "AlertRule": "actors.monitor_api",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
