"""FHIR references: every form a real system sends resolves to the resource it names, through the HTTP API.

Bundle rules (FHIR R4, Bundle "Resolving references in Bundles"): a ``urn:uuid`` reference resolves to the
entry with that ``fullUrl``; absolute and relative references name a type and an id. A resource whose
subject is another patient, or resolves to no one, is set aside with a note, never used.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from builders import LOINC, RXNORM, complete_prefetch, hook_body, med, obs, patient

from cds.fhir import references as refs
from cds.fhir.parse import validates_fully

E2, VITD = "2243-4", "62292-8"
RECENT = "2026-10-01"
UUID_P = "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184"
UUID_OTHER = "urn:uuid:0d3e1a52-9d7a-4c55-9d52-2b5a1f0c8e11"


def rules(response):
    assert response.status_code == 200, response.get_json()
    return {c["source"]["topic"]["code"]: c for c in response.get_json()["cards"]}


def entry(resource, full_url=None):
    return {"fullUrl": full_url or f"urn:uuid:{resource['id']}", "resource": resource}


@pytest.mark.parametrize(("text", "type_", "id_"), [
    ("Patient/123", "Patient", "123"),
    ("Patient/123/_history/4", "Patient", "123"),
    ("http://ehr.example.org/fhir/Patient/123", "Patient", "123"),
    ("https://ehr.example.org/fhir/R4/Medication/m-1/_history/2", "Medication", "m-1"),
    ("urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184", None, "5cbc121b-cd71-4428-b8b7-31e53eba8184"),
    ("123", None, "123"),
])
def test_a_reference_names_its_type_and_id(text, type_, id_):
    target = refs.parse(text)
    assert (target.type, target.id, target.contained) == (type_, id_, False)


def test_contained_and_junk_references():
    assert refs.parse("#med1") == refs.Target(None, "med1", contained=True)
    assert refs.parse("") is None and refs.parse(None) is None and refs.parse(42) is None
    assert refs.parse("http://ehr.example.org/") is None


def test_a_urn_resolves_to_the_entry_with_that_full_url_whatever_the_resource_id():
    index = refs.ReferenceIndex.of([{"resourceType": "Bundle", "entry": [
        entry({"resourceType": "Patient", "id": "p1"}, UUID_P), {"resource": {"resourceType": "Patient"}},
        "junk", {"fullUrl": 3}]}, None, {"resourceType": "Patient", "id": "alone"}])
    assert index.key(UUID_P) == "Patient/p1"
    assert refs.patient_verdict(UUID_P, "p1", index) == refs.MINE
    assert refs.patient_verdict(UUID_P, "p2", index) == refs.OTHER
    # not in any bundle: the uuid is the id (Synthea writes fullUrl = urn:uuid:<id>)
    assert refs.patient_verdict("urn:uuid:p1", "p1", refs.EMPTY) == refs.MINE
    assert refs.patient_verdict(UUID_OTHER, "p1", index) == refs.UNRESOLVED
    assert refs.patient_verdict("Group/g1", "p1", index) == refs.OTHER
    assert refs.patient_verdict("#p", "p1", index) == refs.UNRESOLVED
    assert refs.patient_verdict(None, "p1", index) == refs.MINE  # no subject: the patient's record


def synthea_prefetch(observations, meds=(), *, patient_url=UUID_P, patient_id="p1"):
    """Searchsets as an exporter sends them: the Patient entry included, every reference a urn:uuid."""
    pat = {**patient(pid=patient_id), "gender": "male"}
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    return complete_prefetch(**{
        "patient": pat,
        "estradiol": {"resourceType": "Bundle", "type": "searchset",
                      "entry": [entry(pat, patient_url), *map(entry, observations)]},
        "vitaminD": empty, "dxa": empty, "monitoring": empty,
        "medications": {"resourceType": "Bundle", "type": "searchset", "entry": [entry(m) for m in meds]},
    })


def urn_subject(resource, reference):
    out = copy.deepcopy(resource)
    out["subject"] = {"reference": reference}
    return out


def test_urn_uuid_subjects_resolve_to_the_patient_entry(call):
    ai = urn_subject(med(mid="mr-ai"), UUID_P)
    e2 = urn_subject(obs(E2, 12, "pg/mL", RECENT, oid="o-e2"), UUID_P)
    vitd = urn_subject(obs(VITD, 35, "ng/mL", RECENT, oid="o-vd"), UUID_P)
    body = hook_body("patient-view")
    body["prefetch"] = synthea_prefetch([e2, vitd], [ai])
    cards = rules(call(body))
    assert cards["low-estradiol-on-ai"]["indicator"] == "warning"
    assert "Low estradiol (12" in cards["low-estradiol-on-ai"]["summary"]
    assert "evaluation-gaps" not in cards


def test_a_result_of_another_patient_in_the_bundle_is_set_aside_with_a_note(call):
    ai = urn_subject(med(mid="mr-ai"), UUID_P)
    theirs = obs(E2, 5, "pg/mL", RECENT, oid="o-theirs")
    theirs["subject"] = {"reference": "Patient/p9"}
    body = hook_body("patient-view")
    body["prefetch"] = synthea_prefetch([theirs], [ai])
    cards = rules(call(body))
    assert "low-estradiol-on-ai" not in cards
    detail = cards["evaluation-gaps"]["detail"]
    assert "Observation/o-theirs" in detail and "different patient" in detail
    assert "p9" not in detail  # no other patient's id is ever written


def test_another_patients_patient_resource_in_a_bundle_is_refused(call):
    """Another patient's Patient resource is never read (its sex would decide a card): 412 naming the key."""
    other = {"resourceType": "Patient", "id": "p9", "gender": "male"}
    ai = urn_subject(med(mid="mr-ai"), UUID_P)
    theirs = urn_subject(obs(E2, 5, "pg/mL", RECENT, oid="o-theirs"), UUID_OTHER)
    body = hook_body("patient-view")
    body["prefetch"] = synthea_prefetch([theirs], [ai])
    body["prefetch"]["estradiol"]["entry"].append(entry(other, UUID_OTHER))
    response = call(body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.estradiol"]


def test_a_subject_that_resolves_to_no_one_is_set_aside_and_said_so(call):
    ai = urn_subject(med(mid="mr-ai"), UUID_P)
    lost = urn_subject(obs(E2, 5, "pg/mL", RECENT, oid="o-lost"), UUID_OTHER)
    body = hook_body("patient-view")
    body["prefetch"] = synthea_prefetch([lost], [ai])
    cards = rules(call(body))
    assert "low-estradiol-on-ai" not in cards
    assert "does not resolve to this patient" in cards["evaluation-gaps"]["detail"]


@pytest.mark.parametrize("how", ["urn", "absolute", "relative-history"])
def test_medication_reference_to_a_bundle_entry(call, how):
    medication = {"resourceType": "Medication", "id": "m-ana",
                  "code": {"coding": [{"system": RXNORM, "code": "199224", "display": "anastrozole 1 MG"}]}}
    url = {"urn": "urn:uuid:7a1d0f3e-3c2b-4a55-8d0e-0f6f1a2b3c4d",
           "absolute": "https://ehr.example.org/fhir/Medication/m-ana",
           "relative-history": "Medication/m-ana/_history/3"}[how]
    order = {"resourceType": "MedicationRequest", "id": "mr-ref", "status": "active", "intent": "order",
             "subject": {"reference": "https://ehr.example.org/fhir/Patient/p1"},
             "medicationReference": {"reference": url}}
    body = hook_body("patient-view", record=[patient(), obs(E2, 12, "pg/mL", RECENT), obs(VITD, 35, "ng/mL",
                                                                                              RECENT)])
    body["prefetch"]["medications"] = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": order},
        {"fullUrl": url if how == "urn" else "https://ehr.example.org/fhir/Medication/m-ana",
         "resource": medication, "search": {"mode": "include"}}]}
    cards = rules(call(body))
    assert "Low estradiol" in cards["low-estradiol-on-ai"]["summary"]


def test_sandbox_draft_orders_bundle_without_type_and_sloppy_orders(call):
    """The sandbox's draftOrders: no Bundle ``type``, ``category`` as an object, ``coding: [{}]``. Tolerated
    on input; the order echoed back in an update suggestion is valid R4."""
    draft = med(status="draft", mid="draft-ana", timing={"frequency": 1, "period": 1, "periodUnit": "d"})
    draft["category"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                     "code": "outpatient"}]}
    draft["medicationCodeableConcept"]["coding"].insert(0, {})
    assert not validates_fully(draft)
    body = hook_body("order-select", record=[patient(), obs(E2, 12, "pg/mL", RECENT),
                                             obs(VITD, 35, "ng/mL", RECENT)], drafts=[draft])
    del body["context"]["draftOrders"]["type"]
    body["context"]["selections"] = ["https://ehr.example.org/fhir/MedicationRequest/draft-ana"]
    card = rules(call(body))["low-estradiol-on-ai"]
    echoed = [a["resource"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "update"]
    assert echoed, card["suggestions"]
    for resource in echoed:
        assert validates_fully(resource)
        assert isinstance(resource["category"], list)
        assert {} not in resource["medicationCodeableConcept"]["coding"]


def test_a_dxa_ordered_by_cpt_is_not_suggested_again(call):
    order = {"resourceType": "ServiceRequest", "id": "sr-dxa", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "code": {"coding": [{}, {"system": "http://www.ama-assn.org/go/cpt", "code": "77080"}]}}
    body = hook_body("order-sign", record=[patient(), med(), obs(VITD, 35, "ng/mL", RECENT)],
                     drafts=[order])
    assert "dxa-baseline-missing" not in rules(call(body))
    order["code"]["coding"] = [{"system": LOINC, "code": "24966-4"}]  # a BMD result code is no order
    assert "dxa-baseline-missing" in rules(call(body))



def test_a_urn_uuid_patient_reference_never_reaches_the_audit_record(app, call):
    """A Synthea-style draft order (subject urn:uuid:<patient id>) echoed in an update suggestion: the audit
    content holds the patient key prefix in its place, never the id."""
    import json

    from cds.ledger.memory import MemoryLedger
    from cds.ledger.record import build_content
    from cds.rules import pack as rulepack

    sink = MemoryLedger()
    kept = sink.calls
    app.extensions["cds.service"] = dataclasses.replace(app.extensions["cds.service"], audit=sink)
    pid = "5cbc121b-cd71-4428-b8b7-31e53eba8184"
    draft = urn_subject(med(status="draft", mid="draft-ana",
                            timing={"frequency": 1, "period": 1, "periodUnit": "d"}), f"urn:uuid:{pid}")
    e2 = urn_subject(obs(E2, 12, "pg/mL", RECENT, oid="o-e2"), f"urn:uuid:{pid}")
    body = hook_body("order-sign", pid=pid, record=[patient(pid=pid), e2], drafts=[draft])
    card = rules(call(body))["low-estradiol-on-ai"]
    echoed = [a["resource"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "update"]
    assert echoed and echoed[0]["subject"]["reference"] == f"urn:uuid:{pid}"
    content = json.dumps(build_content(kept[-1], rulepack.load(), b"secret"))
    assert pid not in content and "urn:uuid:pk-" in content


def test_offline_prefetch_includes_a_medication_named_by_an_absolute_or_urn_reference():
    from cds.toolkit.offline import prefetch_from_record

    meds = [{"resourceType": "Medication", "id": mid, "code": {"text": "anastrozole"}}
            for mid in ("m1", "m2")]
    orders = [{"resourceType": "MedicationRequest", "id": f"mr{n}", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": ref}}
              for n, ref in enumerate(["https://ehr.example.org/fhir/Medication/m1", "urn:uuid:m2"])]
    bundle = prefetch_from_record([patient(), *orders, *meds])["medications"]
    assert {e["resource"]["id"] for e in bundle["entry"]} == {"mr0", "mr1", "m1", "m2"}
