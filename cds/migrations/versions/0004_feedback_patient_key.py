"""Feedback rows carry the patient key of their card's record, so a call reads a patient's answered cards
by that key's index instead of walking every record of the patient.

audit_feedback gains patient_key (indexed): the ``patient_key`` of the audit record holding the card, set
when the feedback is stored and its card is known, and when a record that waited in a spool arrives after
feedback on its cards. It is not part of the chained content (the record it comes from is chained). The
rows already stored get it from their card's record.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_feedback", sa.Column("patient_key", sa.String(64)))
    op.create_index("ix_audit_feedback_patient_key", "audit_feedback", ["patient_key"])
    op.execute(
        "UPDATE audit_feedback SET patient_key = ("
        "SELECT audit_record.patient_key FROM audit_card "
        "JOIN audit_record ON audit_record.seq = audit_card.record_seq "
        "WHERE audit_card.uuid = audit_feedback.card_uuid) "
        "WHERE patient_key IS NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_audit_feedback_patient_key", "audit_feedback")
    with op.batch_alter_table("audit_feedback") as batch:
        batch.drop_column("patient_key")
