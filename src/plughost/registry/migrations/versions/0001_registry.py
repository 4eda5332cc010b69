"""The registry's tables: plugins, versions, artifacts, reviews, downloads, download marks.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugins",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("icon_url", sa.Text, nullable=False, server_default=""),
        sa.Column("category", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
        sa.Column("license", sa.Text, nullable=False, server_default=""),
        sa.Column("repository", sa.Text, nullable=False, server_default=""),
        sa.Column("url", sa.Text, nullable=False, server_default=""),
        sa.Column("readme", sa.Text, nullable=False, server_default=""),
        sa.Column("official", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("featured", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("publisher_id", sa.Text, nullable=False, server_default=""),
        sa.Column("publisher_name", sa.Text, nullable=False, server_default=""),
        sa.Column("latest_version", sa.String(64), nullable=False, server_default=""),
        sa.Column("author", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("changelog", sa.Text, nullable=False, server_default=""),
        sa.Column("min_ide_version", sa.Text, nullable=False, server_default=""),
        sa.Column("max_ide_version", sa.Text, nullable=False, server_default=""),
        sa.Column("capabilities", sa.Text, nullable=False, server_default="[]"),
        sa.Column("visible", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text, nullable=False, server_default=""),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("manifest", sa.Text, nullable=True),
        sa.Column("publisher_manifest", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "reviews",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("plugin_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("body", sa.Text, nullable=False, server_default=""),
        sa.Column("response", sa.Text, nullable=True),
        sa.Column("response_at", sa.String(32), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name="reviews_rating_range"),
    )
    op.create_index("reviews_by_plugin", "reviews", ["plugin_id", "created_at"])
    op.create_table(
        "downloads",
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("arch", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "download_marks",
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("arch", sa.String(64), primary_key=True),
        sa.Column("minute", sa.String(16), primary_key=True),
    )


def downgrade() -> None:
    for table in ("download_marks", "downloads", "reviews", "artifacts", "versions", "plugins"):
        op.drop_table(table)
