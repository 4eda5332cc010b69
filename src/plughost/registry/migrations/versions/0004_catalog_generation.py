"""The catalog's generation: a number that every change to what the read routes answer
raises, in the changing transaction itself (triggers), so that a server may keep the
answers it rendered for as long as the number stays the same.

Triggers rather than calls in the code: every writer is covered, whichever module or
process (or operator's SQL) it is. The number is the sum of a few slots, each raised
by the writers whose backend pid falls on it (PostgreSQL): concurrent writers (a
counted download is one) then rarely wait for one another's commit on a single
row. SQLite serializes its writers anyway and raises slot 0.

A batch ``ALTER`` of one of these tables on SQLite copies the table and drops its
triggers: a later migration doing that must create them again (:func:`create_triggers`).

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

TABLES = ("plugins", "versions", "artifacts", "reviews", "downloads")
SLOTS = 16
_FUNCTION = "catalog_generation_bump"


def create_triggers(dialect: str) -> None:
    """The triggers that raise the generation on every change to :data:`TABLES`."""
    if dialect == "postgresql":
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger AS $$
            BEGIN
                UPDATE catalog_generation SET generation = generation + 1
                WHERE slot = pg_backend_pid() % {SLOTS};
                RETURN NULL;
            END $$ LANGUAGE plpgsql
        """)
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_generation AFTER INSERT OR UPDATE OR DELETE "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION {_FUNCTION}()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_generation_truncate AFTER TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()"
            )
        return
    for table in TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_generation_{event.lower()} AFTER {event} ON {table} "
                "BEGIN UPDATE catalog_generation SET generation = generation + 1 "
                "WHERE slot = 0; END"
            )


def upgrade() -> None:
    table = op.create_table(
        "catalog_generation",
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.bulk_insert(table, [{"slot": n, "generation": 0} for n in range(SLOTS)])
    create_triggers(op.get_bind().dialect.name)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_generation ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_generation_truncate ON {table}")
        else:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_generation_{event}")
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}()")
    op.drop_table("catalog_generation")
