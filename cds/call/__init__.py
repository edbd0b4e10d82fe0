"""The call layer: the one place that turns a parsed hook request into an answer."""
