"""Alembic's environment: migrations run only on the connection ``db.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from plughost.registry.db import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("registry migrations run through plughost.registry.db.migrate")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # imported by Alembic (not by a tool listing modules)
    run()
