"""Which stages the running orchestrator and workers can run, folded from the log."""

from __future__ import annotations

from actors.shared.sources import FileSource, HubSource
from bus.client import Client
from store.projections import stagesets as folds
from store.projections.stagesets import StageSetsState


def stage_sets(reader: Client | FileSource) -> StageSetsState:
    """Fold every ``StagesLoaded`` and worker start and stop of the log (a type-filtered read:
    these events are few)."""
    source = reader if isinstance(reader, FileSource) else HubSource(reader)
    return folds.fold(source.records(1, folds.TYPES))
