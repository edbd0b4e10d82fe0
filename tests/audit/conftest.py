"""Fixtures of the audit tests; the helpers live in ``audit_support.py``."""

from audit_support import (  # noqa: F401 - fixtures are found by name
    _dispose_shared_engines,
    app,
    db_url,
    make_app,
    pg_proxy,
    pg_url,
    private_pg,
)
