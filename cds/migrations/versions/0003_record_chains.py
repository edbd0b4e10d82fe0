"""Records in several hash chains (one per writer), checkpoints over all chain heads, seq from the database.

audit_record gains chain_id and chain_pos: a record is link chain_pos of chain chain_id, its prev_hash the
hash of the link before it in that chain. The records already there become chain 1, in seq order (their
hashes do not change, so the trail verifies as before). seq, the trail's own order used by queries, the API
and cards, is assigned by the database (a sequence on PostgreSQL, the rowid on SQLite). audit_checkpoint is
new: a hash chain of its own, each link the heads of every record chain at the time it was written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQUENCE = "audit_record_seq_seq"


def upgrade() -> None:
    op.add_column("audit_record", sa.Column("chain_id", sa.Integer))
    op.add_column("audit_record", sa.Column("chain_pos", sa.Integer))
    op.execute("UPDATE audit_record SET chain_id = 1, chain_pos = seq")
    op.create_index("ix_audit_record_chain", "audit_record", ["chain_id", "chain_pos"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE SEQUENCE {SEQUENCE} OWNED BY audit_record.seq")
        op.execute(
            f"SELECT setval('{SEQUENCE}', COALESCE((SELECT MAX(seq) FROM audit_record), 0) + 1, false)"
        )
        op.execute(f"ALTER TABLE audit_record ALTER COLUMN seq SET DEFAULT nextval('{SEQUENCE}')")
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    """Back to one chain: only possible while every record is in chain 1."""
    conn = op.get_bind()
    others = conn.execute(sa.text("SELECT COUNT(*) FROM audit_record WHERE chain_id <> 1")).scalar_one()
    if others:
        raise RuntimeError(f"{others} audit records are in chains other than 1: 0002 cannot hold them")
    op.drop_table("audit_checkpoint")
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_record ALTER COLUMN seq DROP DEFAULT")
        op.execute(f"DROP SEQUENCE {SEQUENCE}")
    op.drop_index("ix_audit_record_chain", "audit_record")
    with op.batch_alter_table("audit_record") as batch:
        batch.drop_column("chain_pos")
        batch.drop_column("chain_id")
