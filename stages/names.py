"""The built-in stages' names and the entry-point group of plugins, known without importing a stage
(or pandas): what a worker announces and what a command checks a request against."""

from __future__ import annotations

from typing import Final

BUILTIN_NAMES: Final = (
    "data_cleaning",
    "feature_engineering",
    "data_aggregation",
    "data_validation",
)
ENTRY_POINT_GROUP: Final = "porch.stages"
