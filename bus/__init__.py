"""The event bus of porch: the event catalogue, the wire format, the hub and its client."""
