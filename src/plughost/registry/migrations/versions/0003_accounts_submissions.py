"""Accounts (users, tokens, publishers, members, device codes), submissions, the audit
log, and one review per signed-in user and plugin.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("first_name", sa.Text, nullable=False, server_default=""),
        sa.Column("last_name", sa.Text, nullable=False, server_default=""),
        sa.Column("avatar", sa.Text, nullable=False, server_default=""),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("last_login", sa.String(32), nullable=True),
    )
    op.create_table(
        "tokens",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=True),
    )
    op.create_index("tokens_by_user", "tokens", ["user_id"])
    op.create_table(
        "publishers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("website", sa.Text, nullable=False, server_default=""),
        sa.Column("logo", sa.Text, nullable=False, server_default=""),
        sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "publisher_members",
        sa.Column("publisher_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "device_codes",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("user_code", sa.String(16), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("publisher_id", sa.String(36), nullable=False),
        sa.Column("plugin_id", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("artifact_prefix", sa.Text, nullable=False),
        sa.Column("architectures", sa.Text, nullable=False, server_default="[]"),
        sa.Column("metadata_json", sa.Text, nullable=False, server_default=""),
        sa.Column("validation_result", sa.Text, nullable=False, server_default=""),
        sa.Column("submitted_by_id", sa.Integer, nullable=False),
        sa.Column("reviewer_id", sa.Integer, nullable=True),
        sa.Column("reviewer_notes", sa.Text, nullable=False, server_default=""),
        sa.Column("changelog", sa.Text, nullable=False, server_default=""),
        sa.Column("submitted_at", sa.String(32), nullable=True),
        sa.Column("validation_started_at", sa.String(32), nullable=True),
        sa.Column("reviewed_at", sa.String(32), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("submissions_by_publisher", "submissions", ["publisher_id", "created_at"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.Integer, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("audit_by_subject", "audit_log", ["subject", "seq"])
    # One review per signed-in user and plugin (user 0: reviews imported without a user).
    # Older duplicates of an imported index keep their text, without the user.
    op.execute(
        "UPDATE reviews SET user_id = 0 WHERE user_id > 0 AND seq NOT IN "
        "(SELECT MAX(seq) FROM reviews WHERE user_id > 0 GROUP BY plugin_id, user_id)"
    )
    op.create_index(
        "reviews_one_per_user",
        "reviews",
        ["plugin_id", "user_id"],
        unique=True,
        sqlite_where=sa.text("user_id > 0"),
        postgresql_where=sa.text("user_id > 0"),
    )


def downgrade() -> None:
    op.drop_index("reviews_one_per_user", "reviews")
    for table in (
        "audit_log",
        "submissions",
        "device_codes",
        "publisher_members",
        "publishers",
        "tokens",
        "users",
    ):
        op.drop_table(table)
