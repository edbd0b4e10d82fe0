"""The audit trail (records, cards, feedback) and the JWT replay-protection table.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_record",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("hook", sa.String(64)),
        sa.Column("hook_instance", sa.String(64)),
        sa.Column("client_iss", sa.String(512)),
        sa.Column("patient_key", sa.String(64)),
        sa.Column("pack_version", sa.String(64)),
        sa.Column("pack_hash", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    for column in ("time", "service", "patient_key", "outcome"):
        op.create_index(f"ix_audit_record_{column}", "audit_record", [column])
    op.create_table(
        "audit_card",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("record_seq", sa.Integer, sa.ForeignKey("audit_record.seq"), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )
    for column in ("record_seq", "rule_id", "indicator"):
        op.create_index(f"ix_audit_card_{column}", "audit_card", [column])
    op.create_table(
        "audit_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_time", sa.String(64)),
        sa.Column("received", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted", sa.Text),
        sa.Column("override_code", sa.String(128)),
        sa.Column("override_display", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("known_card", sa.Boolean, nullable=False),
    )
    op.create_index("ix_audit_feedback_card_uuid", "audit_feedback", ["card_uuid"])
    op.create_index("ix_audit_feedback_received", "audit_feedback", ["received"])
    op.create_table(
        "seen_jti",
        sa.Column("jti_key", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_seen_jti_expires_at", "seen_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("seen_jti")
    op.drop_table("audit_feedback")
    op.drop_table("audit_card")
    op.drop_table("audit_record")
