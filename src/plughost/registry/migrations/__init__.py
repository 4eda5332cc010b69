"""Alembic migrations of the registry's database (run by :func:`plughost.registry.db.migrate`)."""
