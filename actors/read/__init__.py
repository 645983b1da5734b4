"""Read models: the folds as queries show them, from a running system or the files."""
