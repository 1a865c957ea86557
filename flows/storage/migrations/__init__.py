"""Alembic migration environment of alflow's storage (driven by ``flows.storage.init_db``)."""
