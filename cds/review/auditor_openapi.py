"""The auditor JSON API (``cds/review/auditor_api.py``) in the OpenAPI document: paths, schemas, security.

Every path under ``/audit/api`` needs an auditor credential (``cds/review/auth.py``, docs/audit.md):
``Authorization: Bearer <token>`` or HTTP Basic ``name:token``. Without one, or with a wrong one, the
answer is a bare 401 with ``WWW-Authenticate: Basic realm="CDS audit"``. The auditor's HTML pages
(``/audit/...``, ``cds/review/pages.py``) are for people, not programs, and are not in the document.
"""

from __future__ import annotations

from typing import Any

from cds.hooks.schemas import SERVER_ERROR, error_response, json_response, schema_ref

AUDIT_SECURITY_SCHEMES: dict[str, Any] = {
    "auditorBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An auditor's token (CDS_AUDITOR_TOKENS holds its SHA-256); `cds audit token NAME`.",
    },
    "auditorBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "HTTP Basic with the auditor's name as user and the token as password.",
    },
}
AUDITOR: list[dict[str, list[str]]] = [{"auditorBearer": []}, {"auditorBasic": []}]

AUDITOR_UNAUTHORIZED = {
    "description": "No auditor credential, or a wrong one. The body is empty by design.",
    "headers": {
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Basic realm="CDS audit"'},
    },
}

NULLABLE_STRING = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema or {"type": "string"},
        "description": description,
    }


FILTERS = [
    _query("since", "Records at or after this ISO date or date-time (UTC when it names no zone)."),
    _query("until", "Records before this ISO date-time (UTC when it names no zone); a date includes that "
           "day."),
    _query("service", "Only calls to this service id."),
    _query("rule", "Only calls in which this rule fired."),
    _query("indicator", "Only calls that showed a card of this indicator (info, warning, critical)."),
    _query("outcome", "Only calls with this outcome: `ok`, or the HTTP status answered (`400`, `412`, ...)."),
    _query("patientKey", "Only calls about the patient with this keyed hash, or whose key starts with these "
           "hex digits (the 16 the pages show; see docs/audit.md)."),
    _query("hookInstance", "Only the call with this hookInstance (what the EHR logs)."),
    _query("limit", "Records per page (at most 500).", {"type": "integer", "minimum": 1, "default": 50}),
    _query(
        "offset", "Records to skip.", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0}
    ),
]


def _get(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "tags": ["Audit"],
            "summary": summary,
            "security": AUDITOR,
            **extra,
            "responses": {**responses, "401": AUDITOR_UNAUTHORIZED, "500": SERVER_ERROR},
        }
    }


EXAMPLE_SUMMARY = {
    "seq": 12,
    "id": "4f6c0a8e-2b1d-4c55-9a43-0e6e9b1f7d21",
    "time": "2026-11-22T09:15:02.118000+00:00",
    "service": "bone-health-patient-view",
    "hook": "patient-view",
    "outcome": "ok",
    "patientKey": "5d41402abc4b2a76b9719d911017c592ae2f0f9d3f4a1c6b7e8d9f0a1b2c3d4e",
    "rulePackVersion": "0.1.0",
    "latencyMs": 41.2,
    "rules": ["vitd-missing"],
    "cards": [
        {
            "uuid": "8d0b7c61-1a0e-4b7f-a7a5-5f3c2c9e2f10",
            "rule": "vitd-missing",
            "indicator": "warning",
            "summary": "No 25-OH vitamin D result on record",
        }
    ],
}
EXAMPLE_RULE_STATS = {
    "rule": "vitd-missing",
    "fired": 40,
    "cardsShown": 40,
    "accepted": 31,
    "overridden": 6,
    "topOverrideReasons": [{"code": "patient-declined", "display": "Patient declined", "count": 4}],
    "recentComments": ["ordered at the next visit"],
    "outcomes": {
        "rule": "vitd-missing", "from": "2026-11-01T00:00:00+00:00", "to": "2026-12-01T00:00:00+00:00",
        "cardsShown": 40, "accepted": 31, "overridden": 6,
        "overriddenByReason": [{"code": "patient-declined", "display": "Patient declined", "count": 4,
                                "rate": 0.1}],
        "suppressed": 10, "suppressedBy": {"encounter": 3, "feedback": 5, "pendingOrder": 2},
        "rates": {"accepted": 0.775, "overridden": 0.15, "suppressed": 0.2},
    },
}

AUDIT_PATHS: dict[str, Any] = {
    "/audit/api/records": _get(
        "auditRecords",
        "Audited calls, newest first, filtered and paged",
        {
            "200": json_response(
                "AuditRecordPage",
                {"total": 1, "limit": 50, "offset": 0, "records": [EXAMPLE_SUMMARY]},
                "One page of record summaries, with the number of records that match.",
            ),
            "400": error_response(
                "A filter or the paging is malformed, or a parameter is not a filter (it is named).",
                "since must be an ISO date or date-time: Invalid isoformat string: 'yesterday'",
            ),
        },
        parameters=FILTERS,
    ),
    "/audit/api/records/{key}": _get(
        "auditRecord",
        "One audited call in full, with its chain hashes and the feedback on its cards",
        {
            "200": json_response("AuditRecord", None, "The record."),
            "404": error_response(
                "No record has that seq, id or card uuid.", "no audit record 'x'", "not-found"
            ),
        },
        parameters=[
            {
                "name": "key",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The record's `seq`, its id, or the uuid of one of its cards.",
            }
        ],
    ),
    "/audit/api/rules": _get(
        "auditRules",
        "Statistics of every rule in the pack in force",
        {
            "200": json_response(
                "AuditRuleStatsList",
                {"rules": [{k: v for k, v in EXAMPLE_RULE_STATS.items() if k != "outcomes"}]},
                "One entry per rule of the pack."
            )
        },
    ),
    "/audit/api/rules/{rule_id}": _get(
        "auditRule",
        "Statistics of one rule of the loaded pack, or of one the audit trail holds",
        {"200": json_response("AuditRuleStats", EXAMPLE_RULE_STATS, "The rule's statistics."),
         "404": error_response("No such rule in the loaded pack, and never in the audit trail.",
                               "no rule 'vitd-mising': not in the loaded rule pack, and never in the audit "
                               "trail")},
        parameters=[
            {
                "name": "rule_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The rule's id.",
            },
            *({"name": name, "in": "query", "required": False, "schema": {"type": "string"},
               "description": f"{name}: an ISO date or date-time (UTC when it names no zone); the outcomes "
                              "count the calls made from `from` (inclusive) to `to` (exclusive; a date "
                              "includes that day). A bad value is a 400 naming it."}
              for name in ("from", "to")),
        ],
    ),
    "/audit/api/quarantine": _get(
        "auditQuarantine",
        "Entries the database refused as data, set aside so that the rest were written (oldest first)",
        {
            "200": json_response(
                "AuditQuarantine",
                {"total": 1, "limit": 50, "offset": 0, "entries": [
                    {"seq": 1, "time": "2026-11-22T08:00:01+00:00", "kind": "feedback",
                     "reason": "DataError: value too long for type character varying(64)",
                     "entry": {"kind": "feedback", "service": "bone-health-patient-view"}}]},
                "The quarantined entries, each with why the database refused it.",
            ),
            "400": error_response("limit or offset is not an integer in range.", "limit and offset must be "
                                  "integers"),
        },
        parameters=[
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        ],
    ),
    "/audit/api/verify": _get(
        "auditVerify",
        "Check the hash chain of the whole audit trail",
        {
            "200": json_response(
                "AuditVerification",
                {"checked": 12, "feedbackChecked": 3, "quarantined": 0, "ok": True,
                 "head": "12.3.0:" + "5e" * 32, "problems": [], "firstBroken": None},
                "How many records, feedback items and quarantined entries were checked against their "
                "chains (cards and derived columns included), the head to keep elsewhere, and what is "
                "broken.",
            )
        },
    ),
}

CARD_SUMMARY = {
    "type": "object",
    "required": ["uuid", "rule", "indicator", "summary"],
    "properties": {
        "uuid": {"type": "string"},
        "rule": {"type": "string"},
        "indicator": {"type": "string"},
        "summary": {"type": "string"},
    },
}

AUDIT_SCHEMAS: dict[str, Any] = {
    "AuditRecordSummary": {
        "type": "object",
        "required": ["seq", "id", "time", "service", "outcome", "rules", "cards"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "id": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "service": {"type": "string"},
            "hook": NULLABLE_STRING,
            "outcome": {"type": "string"},
            "hookInstance": NULLABLE_STRING,
            "patientKey": NULLABLE_STRING,
            "rulePackVersion": NULLABLE_STRING,
            "latencyMs": {"type": ["number", "null"]},
            "rules": {"type": "array", "items": {"type": "string"}},
            "cards": {"type": "array", "items": CARD_SUMMARY},
        },
    },
    "AuditRecordPage": {
        "type": "object",
        "required": ["total", "limit", "offset", "records"],
        "properties": {
            "total": COUNT,
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "records": {"type": "array", "items": schema_ref("AuditRecordSummary")},
            "returned": {"type": "integer", "description": "records on this page"},
            "next": {"type": ["string", "null"], "description": "the next (older) page, or null"},
            "prev": {"type": ["string", "null"], "description": "the previous (newer) page, or null"},
        },
    },
    "AuditFeedback": {
        "type": "object",
        "required": ["id", "card", "service", "outcome", "received"],
        "properties": {
            "id": {"type": "integer"},
            "card": {"type": "string"},
            "service": {"type": "string"},
            "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
            "outcomeTimestamp": NULLABLE_STRING,
            "received": {"type": "string", "format": "date-time"},
            "acceptedSuggestions": {"type": "array"},
            "overrideReason": {
                "type": ["object", "null"],
                "properties": {"code": {"type": "string"}, "display": NULLABLE_STRING},
            },
            "comment": NULLABLE_STRING,
            "knownCard": {"type": "boolean"},
        },
    },
    "AuditRecord": {
        "type": "object",
        "required": ["seq", "prevHash", "hash", "record", "feedback"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "prevHash": {"type": "string"},
            "hash": {"type": "string"},
            "record": {
                "type": "object",
                "description": "The record as hashed into the chain: call, rule pack, facts, fired rules, "
                "cards; the patient only as a keyed hash. See docs/audit.md.",
                "required": ["id", "time", "service", "rulePack", "outcome", "cards"],
            },
            "feedback": {"type": "array", "items": schema_ref("AuditFeedback")},
        },
    },
    "AuditRuleStats": {
        "type": "object",
        "required": ["rule", "fired", "cardsShown", "accepted", "overridden"],
        "properties": {
            "rule": {"type": "string"},
            "fired": COUNT,
            "cardsShown": COUNT,
            "accepted": COUNT,
            "overridden": COUNT,
            "topOverrideReasons": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"code": {"type": "string"}, "display": NULLABLE_STRING, "count": COUNT},
                },
            },
            "recentComments": {"type": "array", "items": {"type": "string"}},
            "outcomes": {
                "type": "object",
                "description": "Over the period asked for (from, to): cards shown, accepted, overridden by "
                               "reason and kept quiet by cause, with rates (null when nothing was shown).",
                "properties": {
                    "from": NULLABLE_STRING, "to": NULLABLE_STRING, "cardsShown": COUNT, "accepted": COUNT,
                    "overridden": COUNT, "suppressed": COUNT,
                    "overriddenByReason": {"type": "array", "items": {"type": "object"}},
                    "suppressedBy": {"type": "object", "additionalProperties": COUNT},
                    "rates": {"type": "object"},
                },
            },
        },
    },
    "AuditRuleStatsList": {
        "type": "object",
        "required": ["rules"],
        "properties": {"rules": {"type": "array", "items": schema_ref("AuditRuleStats")}},
    },
    "AuditQuarantine": {
        "type": "object",
        "required": ["total", "limit", "offset", "entries"],
        "properties": {
            "total": COUNT,
            "limit": COUNT,
            "offset": COUNT,
            "entries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["seq", "time", "kind", "reason", "entry"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "time": {"type": "string", "format": "date-time"},
                        "kind": {"type": "string", "enum": ["call", "feedback", "other"]},
                        "reason": {"type": "string"},
                        "entry": {"description": "the entry as it was to be written"},
                    },
                },
            },
        },
    },
    "AuditVerification": {
        "type": "object",
        "required": ["checked", "ok", "firstBroken"],
        "properties": {
            "checked": COUNT,
            "feedbackChecked": COUNT,
            "quarantined": COUNT,
            "ok": {"type": "boolean"},
            "head": {"type": ["string", "null"], "description": "records.feedback.quarantined:sha256"},
            "problems": {"type": "array", "items": {"type": "string"}},
            "firstBroken": {
                "type": ["object", "null"],
                "properties": {
                    "seq": {"type": "integer"},
                    "id": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
