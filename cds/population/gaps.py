"""One patient through the hook's own call layer, and its cards as the population's gaps.

A patient's resources become the patient-view request ``cds evaluate`` builds for a bundle holding them
(``cds.toolkit.offline.hook_request``: the full prefetch answered from the record, as the EHR holds it),
and that request goes through ``HookService.call`` with the rule pack's evaluator, at the run's date. So a
gap is exactly a card patient-view gives for the same data on the same day: same rules, versions, wording
and indicator, same scope (a deceased patient or one under the adult age gets no card).

Each card becomes one FHIR R4 ``DetectedIssue``: the patient, the severity from the indicator, the rule as
the code (``code.coding``: the rule's system and id, its version and title), the card's summary as the
detail, the resources the rule's facts came from as ``implicated``, the run date as ``identifiedDateTime``
and the rule's citation (``reference``: its address; an extension: its title). Its id is derived from the
patient, the rule and the date, so that two runs over the same export write the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cds.call.service import HookService
from cds.decide.cards import RULE_SYSTEM
from cds.decide.evaluate import Evaluation, Evaluator
from cds.fhir.parse import ModelCache
from cds.hooks.services import prefetch_templates
from cds.ledger.memory import MemoryLedger
from cds.rules.pack import RulePack
from cds.toolkit.offline import as_bundle, hook_request

SERVICE_ID = "bone-health-patient-view"
SEVERITY = {"critical": "high", "warning": "moderate", "info": "low"}
CITATION_EXTENSION = f"{RULE_SYSTEM}/StructureDefinition/citation-title"
ISSUE_ID_SYSTEM = f"{RULE_SYSTEM}/population-gap"
MODEL_CACHE_ENTRIES = 4096  # more than one patient's resources: each is validated once per run


@dataclass
class Gap:
    patient_id: str
    rule: str
    version: str
    indicator: str
    summary: str
    evidence: list[str]
    issue: dict[str, Any]


@dataclass
class Outcome:
    """What patient-view answered for one patient: its gaps, or why it had none to give."""

    gaps: list[Gap] = field(default_factory=list)
    out_of_scope: dict[str, Any] | None = None


class PatientEvaluator:
    """The hook service for the pack, built once per process; ``evaluate`` one patient's record at a date."""

    def __init__(self, pack: RulePack, source_label: str, *, keep_models: bool = False):
        self.pack = pack
        self.templates = prefetch_templates(pack)
        self.recorder = MemoryLedger()  # each call's record: the evaluation behind the answer
        #: the models of the resources validated before a call (``cds gaps --validate-all``; a refused call's
        #: culprits), which a call then reads; ``keep_models``: the call also reads its models from there
        #: (without it the call validates as a hook call does: a run meets each resource once)
        self.models = ModelCache(MODEL_CACHE_ENTRIES)
        self.service = HookService(Evaluator(pack), source_label=source_label, audit=self.recorder,
                                   model_cache=self.models if keep_models else None)
        self.citations = {r.id: {c["url"]: c["title"] for c in r.citations} for r in pack.rules}

    def evaluate(self, patient_id: str, record: list[dict[str, Any]], at: dt.datetime) -> Outcome:
        """The patient-view answer for ``record`` (the Patient first) at ``at``; a ``CdsError`` when the
        service refuses the request (the caller sets the patient aside with its message)."""
        return self.call(patient_id, self.request(record), at)

    def request(self, record: list[dict[str, Any]]) -> dict[str, Any]:
        """The patient-view request for ``record`` (the Patient first): its prefetch answered from it."""
        return hook_request(as_bundle(record), "patient-view", templates=self.templates)

    def call(self, patient_id: str, body: dict[str, Any], at: dt.datetime) -> Outcome:
        """``evaluate`` of a request already built (``request``)."""
        self.recorder.clear()  # a run keeps only the call it reads
        response = self.service.call(SERVICE_ID, body, now=at)
        evaluation = self.recorder.last.evaluation if self.recorder.last else None
        if evaluation is None:
            raise RuntimeError("the service answered without recording its evaluation")
        outcome = Outcome(out_of_scope=evaluation.out_of_scope)
        per_rule: dict[str, int] = {}
        for card in response["cards"]:
            rule = rule_of(card, evaluation)
            per_rule[rule] = per_rule.get(rule, -1) + 1
            outcome.gaps.append(self._gap(patient_id, rule, card, evaluation, at, per_rule[rule]))
        return outcome

    def _gap(self, patient_id: str, rule: str, card: dict[str, Any], evaluation: Evaluation,
             at: dt.datetime, n: int) -> Gap:
        topic = (card.get("source") or {}).get("topic") or {}
        fired = [f for f in evaluation.fired if f.get("rule") == rule]
        version = str(fired[0]["version"]) if fired else _pack_version(self.pack, rule)
        evidence = evidence_of(fired)
        url = str((card.get("source") or {}).get("url") or "")
        issue = detected_issue(patient_id, rule, version, str(topic.get("display") or rule), card, evidence,
                               at, citation_url=url, citation_title=self.citations.get(rule, {}).get(url),
                               n=n)
        return Gap(patient_id, rule, version, str(card.get("indicator")), str(card.get("summary")), evidence,
                   issue)


def rule_of(card: dict[str, Any], evaluation: Evaluation) -> str:
    topic = (card.get("source") or {}).get("topic") or {}
    return evaluation.card_rules.get(card["uuid"]) or str(topic.get("code") or "")


def _pack_version(pack: RulePack, rule_id: str) -> str:
    try:
        return pack.rule(rule_id).version
    except KeyError:
        return ""


def evidence_of(fired: list[dict[str, Any]]) -> list[str]:
    """The resources (``Type/id``) the facts of a rule's firings came from, each once, in order."""
    seen: dict[str, None] = {}
    for firing in fired:
        for fact in (firing.get("facts") or {}).values():
            if not isinstance(fact, dict):
                continue
            refs = [fact.get("ref")] + str(fact.get("refs") or "").split(",")
            for ref in refs:
                if isinstance(ref, str) and "/" in ref.strip():
                    seen.setdefault(ref.strip(), None)
    return list(seen)


def issue_id(patient_id: str, rule: str, n: int, at: dt.datetime) -> str:
    digest = hashlib.sha256(f"{patient_id}\0{rule}\0{n}\0{at.date().isoformat()}".encode()).hexdigest()
    return f"gap-{digest[:40]}"


def detected_issue(patient_id: str, rule: str, version: str, title: str, card: dict[str, Any],
                   evidence: list[str], at: dt.datetime, *, citation_url: str = "",
                   citation_title: str | None = None, n: int = 0) -> dict[str, Any]:
    """The FHIR R4 DetectedIssue of one card (keys in a fixed order; no random part)."""
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": issue_id(patient_id, rule, n, at),
        "identifier": [{"system": ISSUE_ID_SYSTEM, "value": f"{rule}|{version}"}],
        "status": "final",
        "code": {"coding": [{"system": RULE_SYSTEM, "version": version, "code": rule, "display": title}],
                 "text": title},
        "severity": SEVERITY.get(str(card.get("indicator")), "low"),
        "patient": {"reference": f"Patient/{patient_id}"},
        "identifiedDateTime": at.isoformat(),
        "implicated": [{"reference": ref} for ref in evidence],
        "detail": str(card.get("summary") or ""),
    }
    if not issue["implicated"]:
        del issue["implicated"]
    if citation_url:
        issue["reference"] = citation_url
    if citation_title:
        issue["extension"] = [{"url": CITATION_EXTENSION, "valueString": citation_title}]
    return issue
