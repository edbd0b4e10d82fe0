"""A ``CallRecord`` to the JSON content of one audit record. Pure code.

The content never holds the raw patient id, a JWT or a FHIR access token: the patient is a keyed hash
(HMAC-SHA256 with the audit secret) and every ``Patient/<id>`` or ``urn:uuid:<id>`` reference or bare
patient id inside cards, facts and context has the key prefix in place of the id. The facts are kept so
that ``cds audit rerun`` can run the call again under another rule pack.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any

from cds.ledger.append import storable
from cds.ledger.port import CallRecord
from cds.rules.pack import RulePack

#: hook-context fields kept for replay (the rest may identify the patient or hold whole bundles)
REPLAY_CONTEXT = ("userId", "encounterId", "selections")


def patient_key(secret: bytes, patient_id: str | None) -> str | None:
    if not patient_id:
        return None
    return hmac.new(secret, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()


def scrub(value: Any, patient_id: str | None, stand_in: str) -> Any:
    """``value`` with every mention of the raw patient id replaced by ``stand_in``."""
    if not patient_id:
        return value
    # "Patient/<id>" (relative or inside an absolute URL) and "urn:uuid:<id>" (a Bundle entry's fullUrl)
    pattern = re.compile(r"(Patient/|urn:uuid:)" + re.escape(patient_id) + r"(?![A-Za-z0-9\-.])")

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            if v == patient_id:
                return stand_in
            return pattern.sub(r"\g<1>" + stand_in, v) if patient_id in v else v
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)


def no_evaluation() -> dict[str, Any]:
    """The evaluation fields of a record's content for a record with no evaluation (a refused call, a
    population run): every record has them, so that every reader finds them."""
    return {"cards": [], "cardRules": {}, "fired": [], "notEvaluated": [], "outOfScope": None,
            "superseded": [], "facts": [], "ignored": {}}


def build_content(
    call: CallRecord,
    pack: RulePack,
    secret: bytes,
    *,
    context: dict[str, Any] | None = None,
    record_id: str | None = None,
) -> dict[str, Any]:
    """The record's content as a JSON-ready dict (hashed into the chain as canonical JSON)."""
    key = patient_key(secret, call.patient_id)
    stand_in = f"pk-{key[:16]}" if key else "pk-none"
    ev = call.evaluation
    content: dict[str, Any] = {
        "id": record_id or str(uuid.uuid4()),
        "time": call.started.isoformat(),
        "service": call.service,
        "hook": call.hook,
        "hookInstance": call.hook_instance,
        "clientIss": call.client_iss,
        "patientKey": key,
        "rulePack": {"id": pack.id, "version": pack.version, "contentHash": pack.content_hash},
        "outcome": call.outcome,
        "status": call.status,
        "latencyMs": round(call.latency_ms, 3),
        "error": call.error,
        "provenance": dict(call.provenance),
        "context": {k: (context or {})[k] for k in REPLAY_CONTEXT if k in (context or {})},
        **no_evaluation(),
    }
    if ev is not None:
        content.update(
            {
                "cards": ev.cards,
                "cardRules": dict(ev.card_rules),
                "fired": ev.fired,
                "notEvaluated": ev.not_evaluated,
                "outOfScope": ev.out_of_scope,
                "superseded": ev.superseded,
                "facts": ev.facts,
                "ignored": dict(ev.ignored),
                "series": list(ev.series),
            }
        )
        content["rulePack"]["rules"] = {f["rule"]: f["version"] for f in ev.fired}
    if call.suppression is not None:  # inside the chained content: ``verify`` covers it
        content["suppression"] = call.suppression
    return scrub(content, call.patient_id, stand_in)


def columns_of(content: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns stored beside the content (derived from it, so ``verify`` can recheck them)."""
    fired = sorted({f["rule"] for f in content.get("fired", [])})
    columns = {
        "id": content["id"],
        "service": content["service"],
        "hook": content.get("hook"),
        "hook_instance": content.get("hookInstance"),
        "client_iss": content.get("clientIss"),
        "patient_key": content.get("patientKey"),
        "pack_version": content["rulePack"].get("version"),
        "pack_hash": content["rulePack"].get("contentHash"),
        "outcome": content["outcome"],
        "latency_ms": content.get("latencyMs"),
        "rules": " " + " ".join(fired) + " ",
    }
    return {name: storable(value) for name, value in columns.items()}


def cards_of(content: dict[str, Any]) -> list[dict[str, Any]]:
    rules = content.get("cardRules", {})
    return [
        {
            "uuid": storable(c["uuid"]),
            "rule_id": storable(rules.get(c["uuid"], "")),
            "indicator": storable(c.get("indicator", "")),
            "summary": storable(c.get("summary", "")),
        }
        for c in content.get("cards", [])
    ]
