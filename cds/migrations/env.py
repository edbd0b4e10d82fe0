"""Alembic environment: always run from ``cds.db.ensure_schema``, with a live connection in
``config.attributes``."""

from __future__ import annotations

from alembic import context

import cds.auth.jti_store  # noqa: F401 - declares seen_jti on cds.db.metadata
import cds.ledger.schema  # noqa: F401 - declares the audit tables on cds.db.metadata
from cds.db import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with `cds audit migrate` (cds.db.ensure_schema), "
                       "not the alembic CLI")
context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
