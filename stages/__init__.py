"""Stage functions of porch: pure pandas ``(DataFrame, config) -> (DataFrame, report)``, and sample data.

Names are imported on first use, so ``import stages.errors`` (the CLI does) stays free of pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "data_cleaning": "stages.cleaning",
    "feature_engineering": "stages.features",
    "data_aggregation": "stages.aggregation",
    "data_validation": "stages.validation",
    "Stage": "stages.spec",
    "Partitioning": "stages.spec",
    "Registry": "stages.registry",
    "stage": "stages.registry",
    "Pipeline": "stages.pipeline",
    "Step": "stages.pipeline",
    "build_pipeline": "stages.pipeline",
    "load_pipeline": "stages.pipeline",
    "run_pipeline": "stages.pipeline",
    "run_partitioned": "stages.partition",
    "write_sample": "stages.sample",
    "NonRetryableError": "stages.errors",
}
_RENAMED = {"build_pipeline": "build", "load_pipeline": "load", "run_pipeline": "run"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stages' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value
