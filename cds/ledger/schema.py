"""The audit tables, declared on ``cds.db.metadata`` (``seen_jti``, the token-id store's table, is declared
in ``cds.auth.jti_store``). The migrations in ``cds/migrations`` create them.

audit_record    one row per hook call, append-only; ``seq`` (assigned by the database) orders the trail;
                each record is link ``chain_pos`` of the hash chain ``chain_id`` (one chain per writer,
                see ``record_chains.py`` and ``hashing.py``)
audit_card      one row per card returned (uuid -> record, rule, indicator), written with its record
audit_feedback  one row per feedback item received, never updated (repeat feedback is a new row);
                hash-chained by ``seq`` like the records (a chain of its own)
audit_quarantine  entries the database refused as data (a value too long, not storable): set aside,
                hash-chained by ``seq``, so that the entries behind them are written
audit_checkpoint  the heads of every record chain, written now and then; hash-chained by ``seq``
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from cds.db import metadata

audit_record = Table(
    "audit_record",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # the trail's order (record_chains.py)
    Column("id", String(36), nullable=False, unique=True),  # uuid of the record
    Column("chain_id", Integer),  # the chain this record is a link of (set on every record)
    Column("chain_pos", Integer),  # its position in that chain, 1, 2, 3 ...
    Column("time", DateTime(timezone=True), nullable=False, index=True),
    Column("service", String(128), nullable=False, index=True),
    Column("hook", String(64)),
    Column("hook_instance", String(64)),
    Column("client_iss", String(512)),
    Column("patient_key", String(64), index=True),
    Column("pack_version", String(64)),
    Column("pack_hash", String(64)),
    Column("outcome", String(16), nullable=False, index=True),
    Column("latency_ms", Float),
    Column("rules", Text, nullable=False, default=" "),  # " rule-a rule-b " (fired), for the rule filter
    Column("content", Text, nullable=False),  # canonical JSON of the whole record
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

Index("ix_audit_record_chain", audit_record.c.chain_id, audit_record.c.chain_pos, unique=True)

audit_card = Table(
    "audit_card",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("record_seq", Integer, ForeignKey("audit_record.seq"), nullable=False, index=True),
    Column("rule_id", String(128), nullable=False, index=True),
    Column("indicator", String(16), nullable=False, index=True),
    Column("summary", Text, nullable=False),
)

audit_feedback = Table(
    "audit_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_uuid", String(64), nullable=False, index=True),
    Column("service", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("outcome_time", String(64)),  # as the client sent it
    Column("received", DateTime(timezone=True), nullable=False),
    Column("accepted", Text),  # JSON list of accepted suggestion uuids
    Column("override_code", String(128)),
    Column("override_display", Text),
    Column("comment", Text),
    Column("known_card", Boolean, nullable=False),  # False: no audited card has this uuid (yet)
    Column("client_iss", String(512)),  # the client that sent it (its token's iss)
    Column("seq", Integer),  # feedback chain position, 1, 2, 3 ... (always set; unique index below)
    Column("content", Text),  # canonical JSON of the item as received, with service, client, time
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
    # the patient_key of the record holding the card (not chained: that record is), so that a call finds the
    # patient's answered cards by this index; None while no stored record holds the card
    Column("patient_key", String(64)),
)
Index("ix_audit_feedback_received", audit_feedback.c.received)
Index("ix_audit_feedback_patient_key", audit_feedback.c.patient_key)
Index("ix_audit_feedback_seq", audit_feedback.c.seq, unique=True)

audit_quarantine = Table(
    "audit_quarantine",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # chain position, 1, 2, 3 ...
    Column("id", String(36), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),  # when it was set aside
    Column("kind", String(16), nullable=False),  # call | feedback | other
    Column("reason", Text, nullable=False),  # why the database refused it
    Column("content", Text, nullable=False),  # canonical JSON: id, time, kind, reason, the entry (escaped)
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # chain position, 1, 2, 3 ...
    Column("id", String(36), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),  # when it was written
    Column("content", Text, nullable=False),  # canonical JSON: id, time, heads {chain: {pos, hash}}
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
