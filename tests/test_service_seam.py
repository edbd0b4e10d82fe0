"""The service seam: each hook call becomes one frozen ``Case`` that evaluation reads, and the hook service is
built with its audit sink and its explanation-link builder; nothing is set on it afterwards."""

from __future__ import annotations

import dataclasses
import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
from builders import hook_body, med, obs, patient

from cds import create_app
from cds.auth.links import verify as verify_link
from cds.call.prefetch import gather
from cds.call.service import HookService
from cds.decide.case import build_case
from cds.decide.evaluate import Evaluator
from cds.errors import CdsError, TokenReplayed
from cds.fhir.gathered import Gathered
from cds.hooks.envelope import parse_hook_request
from cds.hooks.services import prefetch_templates
from cds.ledger.memory import MemoryLedger
from cds.rules import pack as rulepack

PACK = rulepack.load()
EVALUATOR = Evaluator(PACK)
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
SERVICE = "bone-health-order-select"
METFORMIN = "6809"  # RxNorm: a drug no rule reads


def low_estradiol_body() -> dict:
    """A man on anastrozole with estradiol 9 pg/mL selecting a new anastrozole order (and a metformin one)."""
    drafts = [med(mid="draft-ai", status="draft"),
              med(METFORMIN, "metformin", mid="draft-other", status="draft")]
    record = [patient(), med(mid="mr-ai"), obs("2243-4", 9.0, "pg/mL", "2026-10-01")]
    return hook_body("order-select", record=record, drafts=drafts, selections=["MedicationRequest/draft-ai"])


def case_of(body: dict):
    request = parse_hook_request(body, "order-select")
    gathered = Gathered()
    gather(request, prefetch_templates(PACK), None, gathered)
    return build_case(SERVICE, request, gathered, NOW, relevant=EVALUATOR.relevant)


def test_a_case_holds_the_whole_call_once_parsed():
    body = low_estradiol_body()
    case = case_of(body)
    assert (case.hook, case.service_id, case.hook_instance, case.patient_id, case.now) == (
        "order-select", SERVICE, body["hookInstance"], "p1", NOW)
    assert case.context["userId"] == "Practitioner/doc" and case.context["patientId"] == "p1"
    assert case.selections == frozenset({"MedicationRequest/draft-ai"})
    assert list(case.drafts_by_ref) == ["MedicationRequest/draft-ai"]  # the metformin draft is not read
    assert [d.id for d in case.drafts] == ["draft-ai"]
    estradiol = body["prefetch"]["estradiol"]["entry"][0]["resource"]["id"]
    assert sorted(f"{type(r).__name__}/{r.id}" for r in case.resources) == [
        "MedicationRequest/mr-ai", f"Observation/{estradiol}", "Patient/p1"]
    assert dict(case.provenance) == dict.fromkeys(body["prefetch"], "client")


def test_a_case_cannot_be_changed():
    case = case_of(low_estradiol_body())
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.patient_id = "p2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        case.context["patientId"] = "p2"  # type: ignore[index]
    with pytest.raises(TypeError):
        case.drafts_by_ref["MedicationRequest/x"] = {}  # type: ignore[index]


def test_the_case_alone_decides_the_cards():
    evaluation = EVALUATOR.evaluate(case_of(low_estradiol_body()))
    cards = {c["source"]["topic"]["code"]: c for c in evaluation.cards}
    assert cards["low-estradiol-on-ai"]["indicator"] == "critical"
    deletes = [a["resourceId"] for s in cards["low-estradiol-on-ai"].get("suggestions", [])
               for a in s["actions"] if a["type"] == "delete"]
    assert deletes == ["MedicationRequest/draft-ai"]  # the draft order, from the case's drafts_by_ref


def test_the_service_records_to_the_sink_and_links_with_the_builder_it_was_built_with():
    sink = MemoryLedger()
    service = HookService(EVALUATOR, audit=sink, explain_link=lambda base, uuid: f"{base}/why/{uuid}")
    body = low_estradiol_body()
    cards = service.call(SERVICE, body, now=NOW, base_url="https://cds.example.org/")["cards"]
    assert cards
    for card in cards:
        assert card["links"][-1] == {"label": "Why this card?", "url": f"https://cds.example.org/why/{card['uuid']}",
                                     "type": "absolute"}
    [call] = sink.calls
    assert (call.hook_instance, call.outcome, call.status) == (body["hookInstance"], "ok", 200)
    assert [c["uuid"] for c in call.evaluation.cards] == [c["uuid"] for c in cards]
    assert call.provenance == dict.fromkeys(body["prefetch"], "client")
    with pytest.raises(dataclasses.FrozenInstanceError):
        service.audit = MemoryLedger()  # type: ignore[misc]


def test_a_service_without_sink_or_builder_records_nothing_and_adds_no_link():
    cards = HookService(EVALUATOR).call(SERVICE, low_estradiol_body(), now=NOW, base_url="https://x")["cards"]
    assert cards and all("Why this card?" not in str(c.get("links")) for c in cards)


def test_create_app_builds_the_service_with_the_audit_store(auth_config):
    app = create_app(auth_config)
    service = app.extensions["cds.service"]
    assert service.audit is app.extensions["cds.audit"]
    # the builder signs a link to the clinician's page of that one card (cds/auth/links.py)
    card = "0b7c61d8-1a0e-4b7f-a7a5-5f3c2c9e2f10"
    link = service.explain_link("https://cds.example.org", card)
    assert link.startswith("https://cds.example.org/why/")
    assert verify_link(app.extensions["cds.link_secret"], link.rsplit("/", 1)[1]) == card

    sink = MemoryLedger()
    service = create_app(auth_config, audit_sink=sink).extensions["cds.service"]
    assert service.audit is sink

    off = create_app({**auth_config, "AUDIT": False})
    assert off.extensions["cds.service"].audit is None and off.extensions["cds.service"].explain_link is None
    assert "cds.audit" not in off.extensions


class BrokenFetch:
    """A FHIR client with a bug: it raises what no FHIR failure raises."""

    def __call__(self, request, key, query):
        raise RuntimeError("a bug in the FHIR client")

    def complete(self, request, key, bundle):
        raise RuntimeError("a bug in the FHIR client")


def test_an_unexpected_failure_is_recorded_as_a_500_and_raised():
    sink = MemoryLedger()
    service = HookService(EVALUATOR, fetch=BrokenFetch(), audit=sink)
    body = low_estradiol_body()
    del body["prefetch"]["dxa"]  # to be fetched, by the broken client
    body["fhirServer"] = "https://ehr.example.org/fhir"
    with pytest.raises(RuntimeError):
        service.call(SERVICE, body, now=NOW)
    [call] = sink.calls
    assert (call.status, call.outcome, call.hook_instance) == (500, "500", body["hookInstance"])
    assert call.error == "internal error; the request was not processed" and call.evaluation is None


class ClaimsSeen(MemoryLedger):
    """A ledger that also keeps the claim each record came with, and refuses the one named ``used``."""

    def __init__(self, used: object = None) -> None:
        super().__init__()
        self.claims: list = []
        self.used = used

    def record_call(self, call, claim=None) -> None:
        self.claims.append(claim)
        if claim is not None and claim is self.used:
            raise TokenReplayed("https://ehr.example.org")
        super().record_call(call, claim)


def test_the_ledger_brackets_every_call_and_keeps_one_record_each():
    ledger = MemoryLedger()
    service = HookService(EVALUATOR, audit=ledger)
    assert service.call(SERVICE, low_estradiol_body(), now=NOW)["cards"]
    with pytest.raises(CdsError) as refused:
        service.call(SERVICE, {"hook": "order-select"}, now=NOW)
    with pytest.raises(CdsError):
        service.call("no-such-service", low_estradiol_body(), now=NOW)
    assert [(c.service, c.status) for c in ledger.calls] == [
        (SERVICE, 200), (SERVICE, refused.value.status), ("no-such-service", 404)]
    assert ledger.started == 3 and ledger.open_calls == 0


def test_a_memory_ledger_takes_concurrent_calls():
    ledger = MemoryLedger()
    service = HookService(EVALUATOR, audit=ledger)
    body = low_estradiol_body()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: service.call(SERVICE, body, now=NOW), range(32)))
    assert all(a["cards"] for a in answers)
    assert len(ledger.calls) == 32 and len({c.record_id for c in ledger.calls}) == 32
    assert ledger.started == 32 and ledger.open_calls == 0


def test_the_call_hands_its_claim_to_the_ledger_untouched_and_answers_a_reuse_found_there():
    claim, used = object(), object()
    ledger = ClaimsSeen(used=used)
    service = HookService(EVALUATOR, audit=ledger)
    assert service.call(SERVICE, low_estradiol_body(), now=NOW, claim=claim)["cards"]
    with pytest.raises(TokenReplayed):
        service.call(SERVICE, low_estradiol_body(), now=NOW, claim=used)
    assert ledger.claims == [claim, used] and len(ledger.calls) == 1  # the reused token left no record
    assert ledger.open_calls == 0
