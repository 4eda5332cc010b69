"""Import a registry directory's older index (``index.sqlite3``), so directories made
before the database schema keep serving what they held. Their packages stay where
they are: the local storage keeps the same keys.

Revision ID: 0002
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

from plughost.registry.db import Base, legacy_rows

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_BOOLEANS = {"official", "featured", "visible"}


def upgrade() -> None:
    directory = context.config.attributes.get("directory")
    if directory is None:
        return
    rows = legacy_rows(Path(directory))
    bind = op.get_bind()
    for name, found in rows.items():
        table = Base.metadata.tables[name]
        columns = set(table.columns.keys()) - {"seq"}
        if not found or bind.execute(sa.select(sa.func.count()).select_from(table)).scalar():
            continue
        values = [
            {k: (bool(v) if k in _BOOLEANS else v) for k, v in row.items() if k in columns}
            for row in found
        ]
        bind.execute(table.insert(), values)


def downgrade() -> None:
    """Nothing to undo: the older index is left as it was."""
