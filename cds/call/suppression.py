"""Cards that learn from the clinician's answer: which of a call's cards are kept quiet, and why.

Applied by the call layer (``HookService``) after evaluation, reading the patient's past cards and the
feedback on them through the ledger's ``CardHistory`` (``cds.ledger.history``). Every card is still computed;
a quiet one is moved from the answer to the record's ``suppression.suppressed`` list, naming what silenced it
and until when. A card is quiet when, for the same rule and the same patient (and the same user when the
site's scope is ``clinician``):

* ``feedback`` / overridden: a card of the rule was overridden with a reason the rule declares
  (``override_reasons``: matched by system and code), and that reason's ``period`` (a threshold in days) has
  not run out since the feedback was received;
* ``feedback`` / accepted: a suggestion of a card of the rule that orders a test (a ServiceRequest) was
  accepted, within ``suppress_pending_order_days``;
* ``pendingOrder``: every test the card suggests ordering is already ordered (an active or on-hold
  ServiceRequest in the ``pendingOrders`` prefetch key) within ``suppress_pending_order_days``;
* ``encounter``: the same card (same content) was shown earlier in the same encounter (same
  ``context.encounterId``, or the same user within ``CDS_SUPPRESSION_ENCOUNTER_MINUTES``) and not acted
  on. On order-sign, a card about the orders being signed (resting on a draft order, or suggesting to change
  or remove one) is always shown.

unless the evidence changed: the card rests on a fact (a result, a value, an order) the silenced card did not
rest on, or its indicator is higher. Critical cards are never quiet unless the site sets
``suppress_critical_days`` (then at most that long). Evidence and content are compared by fingerprints
(``fingerprints``), kept in each record's ``suppression.cards``, so no patient data is needed to compare.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cds.decide.cards import OVERRIDE_SYSTEM
from cds.decide.evaluate import Evaluation
from cds.fhir.gathered import Gathered
from cds.hooks.envelope import HookRequest
from cds.ledger.history import CardHistory, History, PastCard, PastFeedback
from cds.rules.pack import RulePack

log = logging.getLogger("cds.call.suppression")

#: the prefetch key of the patient's pending test orders (``cds.hooks.services``): it can only silence cards
PENDING_KEY = "pendingOrders"
PENDING_STATUSES = ("active", "on-hold")
RANK = {"info": 0, "warning": 1, "critical": 2}
#: fact fields that change with the day of the call or the hook, not with the evidence
_VOLATILE = ("age", "focus", "selected")


@dataclass(frozen=True)
class Policy:
    """The site's suppression settings (``CDS_SUPPRESSION``, ``_SCOPE``, ``_ENCOUNTER_MINUTES``)."""

    enabled: bool = True
    scope: str = "patient"  # patient | clinician
    encounter_minutes: int = 0

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Policy:
        return cls(enabled=values["SUPPRESSION"] == "on", scope=values["SUPPRESSION_SCOPE"],
                   encounter_minutes=int(values["SUPPRESSION_ENCOUNTER_MINUTES"]))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _facts(value: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        if isinstance(value.get("t"), str):
            yield value
        else:
            for v in value.values():
                yield from _facts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _facts(v)


def evidence_of(evaluation: Evaluation, rule_id: str) -> list[str]:
    """Fingerprints of the facts a rule's firings rested on (the fields that change with the day left out)."""
    prints = {
        _digest({k: v for k, v in fact.items() if k not in _VOLATILE and not k.endswith("_days")})
        for fired in evaluation.fired if fired.get("rule") == rule_id for fact in _facts(fired.get("facts"))
    }
    return sorted(prints)


def content_of(card: Mapping[str, Any]) -> str:
    """A fingerprint of what the clinician reads and can do on a card (its uuids and links left out)."""
    suggestions = [{k: v for k, v in s.items() if k != "uuid"} for s in card.get("suggestions") or []]
    return _digest({"summary": card.get("summary"), "detail": card.get("detail"),
                    "indicator": card.get("indicator"), "suggestions": suggestions})


def _codes(resource: Any) -> set[tuple[str, str]]:
    code = resource.get("code") if isinstance(resource, Mapping) else None
    codings = code.get("coding") if isinstance(code, Mapping) else None
    return {(str(c["system"]), str(c["code"])) for c in codings or []
            if isinstance(c, Mapping) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)}


def order_kinds(resource: Any, pack: RulePack) -> set[str]:
    """The order kinds (``valuesets.yaml`` ``orders``: dxa_scan, estradiol_test, ...) a ServiceRequest is."""
    systems = pack.valuesets.get("systems") or {}
    codes = _codes(resource)
    return {kind for kind, spec in (pack.valuesets.get("orders") or {}).items()
            if any((systems.get(system_key), code) in codes
                   for system_key, wanted in spec.items() for code in wanted)}


def _created_tests(suggestions: Iterable[Any], pack: RulePack) -> list[set[str]] | None:
    """The order kinds each create action of ``suggestions`` orders; None when one creates anything but a
    test (a ServiceRequest of a known kind)."""
    kinds: list[set[str]] = []
    for suggestion in suggestions:
        for action in suggestion.get("actions") or [] if isinstance(suggestion, Mapping) else []:
            if action.get("type") != "create":
                continue
            resource = action.get("resource") or {}
            found = order_kinds(resource, pack) if resource.get("resourceType") == "ServiceRequest" else set()
            if not found:
                return None
            kinds.append(found)
    return kinds


@dataclass(frozen=True)
class PendingOrder:
    ref: str
    kinds: frozenset[str]
    authored: dt.datetime | None


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def pending_orders(gathered: Gathered, pack: RulePack,
                   patient_id: str | None = None) -> tuple[list[PendingOrder] | None, str]:
    """The patient's active and on-hold test orders from the ``pendingOrders`` key, and what the record says
    of them: ``known`` (sent or fetched, maybe none) or why they are not known (then None: nothing is
    silenced by an order). An order whose subject is another patient is not the patient's."""
    provenance = gathered.provenance.get(PENDING_KEY)
    if provenance is None or provenance == "failed":
        why = "not sent and could not be fetched" if provenance == "failed" else "not asked for"
        return None, f"not known: {why}; every card due for a test was shown"
    data = gathered.data.get(PENDING_KEY)
    resources = [data] if isinstance(data, Mapping) and data.get("resourceType") == "ServiceRequest" else [
        e.get("resource") for e in (data or {}).get("entry") or [] if isinstance(e, Mapping)
    ] if isinstance(data, Mapping) else []
    found = []
    for sr in resources:
        if not isinstance(sr, Mapping) or sr.get("resourceType") != "ServiceRequest" \
                or sr.get("status") not in PENDING_STATUSES or not _subject_is(sr, patient_id):
            continue
        kinds = order_kinds(sr, pack)
        if kinds:
            found.append(PendingOrder(f"ServiceRequest/{sr.get('id')}", frozenset(kinds),
                                      _when(sr.get("authoredOn"))))
    return found, "known"


def _subject_is(resource: Mapping[str, Any], patient_id: str | None) -> bool:
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, Mapping) else None
    if not isinstance(reference, str) or patient_id is None:
        return True  # no subject to compare: the client's search was for this patient
    return reference.removeprefix("urn:uuid:").rpartition("/")[2] == patient_id \
        and (reference.startswith("urn:uuid:") or reference.rpartition("/")[0].endswith("Patient"))


@dataclass
class _Card:
    card: dict[str, Any]
    rule: str
    evidence: list[str]
    content: str
    drafted: bool = False  # rests on a draft order of this call

    def changed_since(self, past: PastCard) -> bool:
        """New evidence since ``past``: a fact it did not rest on, or a higher indicator."""
        return bool(set(self.evidence) - past.evidence) \
            or RANK.get(self.card.get("indicator", ""), 0) > RANK.get(past.indicator, 0)


def _rests_on_drafts(evaluation: Evaluation, rule_id: str) -> bool:
    """Whether a rule fired only because of the call's draft orders: some kind of order fact it rests on
    (on_ai, medication, ...) comes from draft orders alone."""
    drafts: dict[str, set[bool]] = {}
    for fired in evaluation.fired:
        if fired.get("rule") == rule_id:
            for fact in _facts(fired.get("facts")):
                if isinstance(fact.get("draft"), bool):
                    drafts.setdefault(fact["t"], set()).add(fact["draft"])
    return any(seen == {True} for seen in drafts.values())


class Suppression:
    """Decides, per call, which cards are kept quiet. ``history``: the ledger's read side (None: nothing is
    known of past calls, only pending orders silence)."""

    def __init__(self, pack: RulePack, policy: Policy, history: CardHistory | None):
        self.pack = pack
        self.policy = policy
        self.history = history

    def _days(self, name: str) -> float:
        return float(self.pack.threshold(name)) if name in self.pack.thresholds else 0.0

    def _reasons(self, rule_id: str) -> dict[tuple[str | None, str], dict[str, Any]]:
        rule = self.pack.rule(rule_id)
        return {(OVERRIDE_SYSTEM, r["code"]): r for r in (rule.card or {}).get("override_reasons") or []}

    def _lookback(self) -> dt.timedelta:
        periods = [self._days(r["period"]) for rule in self.pack.active_rules if rule.kind == "card"
                   for r in (rule.card or {}).get("override_reasons") or [] if r.get("period")]
        periods.append(self._days("suppress_pending_order_days"))
        return dt.timedelta(days=max(periods), minutes=self.policy.encounter_minutes)

    def apply(self, request: HookRequest, gathered: Gathered, evaluation: Evaluation,
              now: dt.datetime) -> dict[str, Any]:
        """Take the quiet cards out of ``evaluation.cards``; return the record's ``suppression`` section."""
        cards = [_Card(c, evaluation.card_rules.get(c["uuid"], ""), [], content_of(c))
                 for c in evaluation.cards]
        for card in cards:
            card.evidence = evidence_of(evaluation, card.rule)
            card.drafted = _rests_on_drafts(evaluation, card.rule)
        pending, pending_state = pending_orders(gathered, self.pack, request.patient_id)
        section: dict[str, Any] = {
            "mode": "on" if self.policy.enabled else "off",
            "scope": self.policy.scope,
            "pendingOrders": pending_state,
            "cards": {c.card["uuid"]: {"evidence": c.evidence, "content": c.content} for c in cards},
            "suppressed": [],
        }
        if not self.policy.enabled or not cards:
            return section
        history = History()
        if self.history is not None and request.patient_id:
            try:
                # the latest calls only matter to the encounter rule: an encounter id, or a window
                encounter_rule = bool(request.context.get("encounterId")) or self.policy.encounter_minutes > 0
                history = self.history.card_history(request.patient_id, now - self._lookback(),
                                                    recent=None if encounter_rule else 0)
                section["history"] = "read"
            except Exception as exc:  # noqa: BLE001 - without history every card shows
                log.warning("earlier cards could not be read (%s); every card is shown", type(exc).__name__)
                section["history"] = f"not read ({type(exc).__name__}); no card was silenced by feedback " \
                    "or encounter"
        quiet: list[dict[str, Any]] = []
        for card in cards:
            by = self._silenced(card, request, history, pending or [], now)
            if by is not None:
                quiet.append({"card": card.card, "rule": card.rule, "by": by, "until": by.pop("until"),
                              "evidence": card.evidence, "content": card.content})
        if quiet:
            gone = {q["card"]["uuid"] for q in quiet}
            evaluation.cards[:] = [c for c in evaluation.cards if c["uuid"] not in gone]
            for uuid in gone:
                evaluation.card_rules.pop(uuid, None)
                section["cards"].pop(uuid, None)
            section["suppressed"] = quiet
        return section

    # -- the decision ---------------------------------------------------------------------------------
    def _silenced(self, card: _Card, request: HookRequest, history: History, pending: list[PendingOrder],
                  now: dt.datetime) -> dict[str, Any] | None:
        cap: dt.timedelta | None = None
        if card.card.get("indicator") == "critical":
            critical = self._days("suppress_critical_days")
            if critical <= 0:
                return None
            cap = dt.timedelta(days=critical)
        user = request.context.get("userId")
        mine = [p for p in history.cards if p.rule == card.rule
                and (self.policy.scope == "patient" or p.user == user)]
        answers: dict[str, list[PastFeedback]] = {}
        for f in history.feedback:
            answers.setdefault(f.card, []).append(f)
        found = [*self._by_feedback(card, mine, answers, now), *self._by_pending(card, pending, now),
                 *self._by_encounter(card, request, mine, answers, now)]
        if cap is not None:
            found = [self._capped(by, cap, now) for by in found]
        found = [by for by in found if by["until"] is None or by["until"] > now]
        if not found:
            return None
        best = max(found, key=lambda by: by["until"] or dt.datetime.max.replace(tzinfo=dt.UTC))
        out = {k: v for k, v in best.items() if not k.startswith("_")}
        out["until"] = best["until"].isoformat() if best["until"] else None
        return out

    @staticmethod
    def _capped(by: dict[str, Any], cap: dt.timedelta, now: dt.datetime) -> dict[str, Any]:
        start = by.get("_since") or now
        limit = start + cap
        by["until"] = limit if by["until"] is None or by["until"] > limit else by["until"]
        return by

    def _by_feedback(self, card: _Card, mine: list[PastCard], answers: dict[str, list[PastFeedback]],
                     now: dt.datetime) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        reasons = self._reasons(card.rule)
        for past in mine:
            if not past.shown or card.changed_since(past):
                continue
            for f in answers.get(past.uuid, []):
                base = {"kind": "feedback", "outcome": f.outcome, "feedback": f.id, "card": past.uuid,
                        "record": past.record_id, "received": f.received.isoformat(), "_since": f.received}
                if f.outcome == "overridden" and f.reason_code:
                    reason = reasons.get((f.reason_system or OVERRIDE_SYSTEM, f.reason_code))
                    if reason is None or reason.get("does") != "silence":
                        continue
                    until = f.received + dt.timedelta(days=self._days(reason["period"]))
                    found.append({**base, "reason": {"system": OVERRIDE_SYSTEM, "code": reason["code"],
                                                     "display": reason["display"]},
                                  "period": reason["period"], "until": until})
                elif f.outcome == "accepted" and f.accepted:
                    chosen = [s for s in past.card.get("suggestions") or [] if s.get("uuid") in f.accepted]
                    tests = _created_tests(chosen, self.pack)
                    if not tests:
                        continue
                    until = f.received + dt.timedelta(days=self._days("suppress_pending_order_days"))
                    found.append({**base, "ordered": sorted(set().union(*tests)),
                                  "period": "suppress_pending_order_days", "until": until})
        return found

    def _by_pending(self, card: _Card, pending: list[PendingOrder], now: dt.datetime) -> list[dict[str, Any]]:
        if not pending:
            return []
        tests = _created_tests(card.card.get("suggestions") or [], self.pack)
        if not tests:
            return []
        period = dt.timedelta(days=self._days("suppress_pending_order_days"))
        covering: list[PendingOrder] = []
        for kinds in tests:
            order = next((o for o in pending if o.kinds & kinds
                          and (o.authored is None or o.authored + period > now)), None)
            if order is None:
                return []
            covering.append(order)
        ends = [o.authored + period for o in covering if o.authored is not None]
        return [{"kind": "pendingOrder", "orders": sorted({o.ref for o in covering}),
                 "ordered": sorted({k for o in covering for k in o.kinds}),
                 "period": "suppress_pending_order_days",
                 "until": min(ends) if ends else None,
                 "_since": min((o.authored for o in covering if o.authored), default=now)}]

    def _by_encounter(self, card: _Card, request: HookRequest, mine: list[PastCard],
                      answers: dict[str, list[PastFeedback]], now: dt.datetime) -> list[dict[str, Any]]:
        if request.hook == "order-sign" and self._about_drafts(card, request):
            return []
        encounter = request.context.get("encounterId")
        user = request.context.get("userId")
        window = dt.timedelta(minutes=self.policy.encounter_minutes)
        for past in reversed(mine):
            # a card kept quiet by this rule carries the encounter on: the call that showed it may be
            # older than the latest calls read
            carried = not past.shown and (past.silenced_by or {}).get("kind") == "encounter"
            if not (past.shown or carried) or answers.get(past.uuid) or past.content != card.content:
                continue
            if encounter and past.encounter == encounter:
                return [{"kind": "encounter", "encounter": encounter, "card": past.uuid,
                         "record": past.record_id, "until": None, "_since": past.time}]
            if window and past.shown and user and past.user == user and now - past.time <= window:
                return [{"kind": "encounter", "window_minutes": self.policy.encounter_minutes,
                         "card": past.uuid, "record": past.record_id, "until": past.time + window,
                         "_since": past.time}]
        return []

    @staticmethod
    def _about_drafts(card: _Card, request: HookRequest) -> bool:
        """Whether a card is about the orders being signed: it changes or removes one, or fired only because
        of them."""
        for suggestion in card.card.get("suggestions") or []:
            if any(a.get("type") in ("update", "delete") for a in suggestion.get("actions") or []):
                return True
        return card.drafted

