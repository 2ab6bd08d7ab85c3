"""Alembic migrations of the head-end schema, run programmatically by
headend.storage.db.migrate (no alembic.ini needed)."""
