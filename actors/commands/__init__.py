"""The `porch` subcommands, one module per area; each adds its parsers and handlers."""
