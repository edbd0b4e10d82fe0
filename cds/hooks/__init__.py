"""The CDS Hooks protocol: the request envelope and the service definitions (discovery, prefetch
templates)."""
