"""The orchestrator: plans executions, decides what runs next, hands tasks to workers."""
