"""Durable state of porch: the append-only event log, artifacts and the pure folds over them."""
