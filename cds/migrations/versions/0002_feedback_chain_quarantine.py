"""Feedback hash-chained and tied to its client; the quarantine of entries the database refused as data.

audit_feedback gains client_iss and the chain columns (seq, content, prev_hash, hash); rows already there
are chained in id order, their content rebuilt from their columns (they were received before the client
was recorded: client_iss NULL). audit_quarantine is new.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import sqlalchemy as sa
from alembic import op

from cds.ledger import feedback as feedback_rows
from cds.ledger import hashing

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _legacy_content(row) -> dict:
    item: dict = {"card": row.card_uuid, "outcome": row.outcome}
    if row.outcome_time is not None:
        item["outcomeTimestamp"] = row.outcome_time
    accepted = json.loads(row.accepted or "[]")
    if accepted:
        item["acceptedSuggestions"] = [{"id": a} for a in accepted]
    reason: dict = {}
    pairs = (("code", row.override_code), ("display", row.override_display))
    coding = {k: v for k, v in pairs if v is not None}
    if coding:
        reason["reason"] = coding
    if row.comment is not None:
        reason["userComment"] = row.comment
    if reason:
        item["overrideReason"] = reason
    received = row.received if row.received.tzinfo else row.received.replace(tzinfo=dt.UTC)
    return {
        "id": str(uuid.uuid4()),
        "service": row.service,
        "clientIss": None,
        "received": received.astimezone(dt.UTC).isoformat(),
        "knownCard": bool(row.known_card),
        "item": item,
    }


def upgrade() -> None:
    for column in (
        sa.Column("client_iss", sa.String(512)),
        sa.Column("seq", sa.Integer),
        sa.Column("content", sa.Text),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    ):
        op.add_column("audit_feedback", column)
    table = sa.table(
        "audit_feedback",
        sa.column("id", sa.Integer),
        *(sa.column(name, sa.String) for name in ("card_uuid", "service", "outcome", "outcome_time",
                                                  "override_code", "client_iss", "prev_hash", "hash")),
        *(sa.column(name, sa.Text) for name in ("accepted", "override_display", "comment", "content")),
        sa.column("received", sa.DateTime(timezone=True)),
        sa.column("known_card", sa.Boolean),
        sa.column("seq", sa.Integer),
    )
    conn = op.get_bind()
    prev = hashing.GENESIS
    for seq, row in enumerate(conn.execute(sa.select(table).order_by(table.c.id)).all(), start=1):
        content = _legacy_content(row)
        content_json = hashing.canonical(content)
        digest = hashing.link_hash(prev, content_json)
        conn.execute(
            table.update()
            .where(table.c.id == row.id)
            .values(seq=seq, content=content_json, prev_hash=prev, hash=digest,
                    **feedback_rows.columns(content))
        )
        prev = digest
    op.create_index("ix_audit_feedback_seq", "audit_feedback", ["seq"], unique=True)
    op.create_table(
        "audit_quarantine",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_quarantine")
    op.drop_index("ix_audit_feedback_seq", "audit_feedback")
    with op.batch_alter_table("audit_feedback") as batch:
        for name in ("hash", "prev_hash", "content", "seq", "client_iss"):
            batch.drop_column(name)
