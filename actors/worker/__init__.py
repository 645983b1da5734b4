"""A worker: pulls stage tasks and runs them in its runner process."""
