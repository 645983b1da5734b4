"""The processes of porch (hub, orchestrator, workers, scheduler, monitor), the Python API and the CLI."""
