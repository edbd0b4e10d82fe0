"""Alembic migrations of the service's database, shipped inside the package (see ``cds.db.ensure_schema``)."""
