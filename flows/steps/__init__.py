"""The loop's steps as plain functions on a campaign: database in, database out.

Prefect tasks in ``flows.active_learning`` are thin wrappers around these.
"""
