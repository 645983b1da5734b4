"""Pure folds of the event log into state: no sockets, clocks, files or randomness."""
