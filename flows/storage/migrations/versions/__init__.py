"""Alembic revisions of alflow's schema, oldest first (Alembic skips this file)."""
