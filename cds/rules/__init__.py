"""The rule pack: loading and checking the files under ``rules/``, the condition language (compiled for
durable-rules and evaluated in Python), card templates and transforms, and the durable-rules adapter."""
