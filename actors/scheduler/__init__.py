"""The scheduler: schedules as a fold of the log, fired on time."""
