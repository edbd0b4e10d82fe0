"""The CDS Hooks protocol: the bodies (models), the request envelope and the service definitions
(discovery, prefetch templates)."""
