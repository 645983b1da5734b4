"""The seed README's Python API and the local system it starts."""
