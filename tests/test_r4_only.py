"""R4 only: every element the service reads is one FHIR R4 defines; an unknown one is a 400 naming it.

Finding 10 of the second round: a MedicationRequest in R5's shape (``"medication": {"concept": ...}``, R5's
CodeableReference where R4 has ``medicationCodeableConcept``) was answered 200 with no cards — the patient's
aromatase inhibitor dropped without a word, since the service keeps only the elements its rules read and
chooses the resources worth validating before validating them.

The class: any resource of a type the service reads (Patient, Observation, MedicationRequest, Medication,
ServiceRequest; a contained resource; the Bundle and its entries around them), with one element added that
R4 does not define (a generated name, or one R5 uses), is refused with a 400 OperationOutcome whose
``expression`` is the element's path — whether it came in the prefetch, in the draft orders, or from the EHR's
FHIR server. Tolerance of the CDS Hooks sandbox's sloppy draft orders (``category`` as one object, a Bundle
without ``type``, ``coding: [{}]``: elements R4 has, in the wrong shape) stays.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from fhir_server_support import ANY_PATH, NOW, TOKEN, FakeFhir, complete_prefetch, load
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import AuthedClient

from cds.fhir import parse as fhir_parse
from cds.fhir.elements import r4_names
from cds.web.app import create_app

RECORD = load("pat-1-record.json")
BY_ID = {e["resource"]["id"]: e["resource"] for e in RECORD["entry"]}
ANASTROZOLE = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "84857",
                           "display": "anastrozole"}]}

#: names R5 gives elements of these types that R4 does not have
R5_NAMES = {
    "Patient": ["birthTime"],  # an extension in R4, an element nowhere
    "Observation": ["instantiatesCanonical", "triggeredBy", "bodyStructure"],
    "MedicationRequest": ["medication", "informationSource", "reported", "renderedDosageInstruction",
                          "effectiveDosePeriod", "device"],
    "Medication": ["doseForm", "totalVolume", "marketingAuthorizationHolder"],
    "ServiceRequest": ["focus", "bodyStructure"],
    "Bundle": ["issues"],
}


def _with_contained(resource: dict[str, Any]) -> dict[str, Any]:
    mr = copy.deepcopy(resource)
    mr.pop("medicationCodeableConcept", None)
    mr["medicationReference"] = {"reference": "#med"}
    mr["contained"] = [{"resourceType": "Medication", "id": "med", "code": ANASTROZOLE}]
    return mr


#: where the unknown element goes: (kind, type whose names it must avoid, path below the resource)
PLACES = [
    ("Patient", "Patient", ""),
    ("Observation", "Observation", ""),
    ("Observation", "CodeableConcept", "code"),
    ("MedicationRequest", "MedicationRequest", ""),
    ("MedicationRequest", "Reference", "subject"),
    ("contained Medication", "Medication", "contained[0]"),
]


def _names(kind: str) -> frozenset[str]:
    module = {"CodeableConcept": "codeableconcept", "Reference": "reference"}.get(kind, kind.lower())
    return r4_names(fhir_parse.r4_class(f"{module}.{kind}"))


def _resource(place: str) -> dict[str, Any]:
    if place == "contained Medication":
        return _with_contained(BY_ID["mr-ana"])
    return copy.deepcopy({"Patient": BY_ID["pat-1"], "Observation": BY_ID["e2-new"],
                          "MedicationRequest": BY_ID["mr-ana"]}[place])


def _add(resource: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    target = resource
    if path == "contained[0]":
        target = resource["contained"][0]
    elif path:
        target = resource[path]
    target[name] = {"concept": ANASTROZOLE} if name == "medication" else "x"
    return resource


GENERATED = st.from_regex(r"_?[a-z][A-Za-z0-9]{0,20}", fullmatch=True)


@st.composite
def unknown_elements(draw: st.DrawFn) -> tuple[str, str, str]:
    """(place, path of the holder below the resource, an element name its type does not define)."""
    place, kind, path = draw(st.sampled_from(PLACES))
    known = _names(kind)
    r5 = [n for n in R5_NAMES.get(kind, []) if n not in known]
    name = draw(st.sampled_from(r5) | GENERATED if r5 else GENERATED)
    name = name if name not in known else name + "Zz"
    return place, path, name


def _expected_path(where: str, path: str, name: str) -> str:
    return f"{where}.{path}.{name}" if path else f"{where}.{name}"


@pytest.fixture
def app(httpserver, auth_config):
    app = create_app({**auth_config, "NOW": NOW, "FHIR_SERVER_ALLOWLIST": httpserver.url_for("/fhir"),
                      "FHIR_READ_TIMEOUT": 10.0, "FHIR_BACKOFF_SECONDS": 0.01})
    app.test_client_class = AuthedClient
    return app


def _post(app, body: dict[str, Any], service: str = "bone-health-patient-view") -> tuple[int, dict[str, Any]]:
    response = app.test_client().post(f"/cds-services/{service}", json=body)
    return response.status_code, response.get_json()


def _refused_naming(status: int, body: dict[str, Any], path: str, name: str) -> None:
    assert status == 400, body
    issue = body["issue"][0]
    assert body["resourceType"] == "OperationOutcome" and issue["code"] == "structure"
    assert issue["expression"] == [path], issue
    assert name in issue["diagnostics"] and "R4" in issue["diagnostics"]


def _envelope(hook: str, **extra: Any) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/prac-9", "patientId": "pat-1"}, **extra}


SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(case=unknown_elements())
@example(case=("MedicationRequest", "", "medication"))  # the finding: R5's CodeableReference
@example(case=("contained Medication", "contained[0]", "doseForm"))
def test_an_unknown_element_in_the_prefetch_is_a_400_naming_it(app, case):
    place, path, name = case
    resource = _add(_resource(place), path, name)
    prefetch = complete_prefetch()
    if resource["resourceType"] == "Patient":
        prefetch["patient"], where = resource, "prefetch.patient"
    else:
        key = "estradiol" if resource["resourceType"] == "Observation" else "medications"
        prefetch[key]["entry"].append({"resource": resource})
        where = f"prefetch.{key}.entry[{len(prefetch[key]['entry']) - 1}].resource"
    status, body = _post(app, _envelope("patient-view", prefetch=prefetch))
    _refused_naming(status, body, _expected_path(where, path, name), name)


@SETTINGS
@given(case=unknown_elements().filter(lambda c: c[0] in ("MedicationRequest", "contained Medication")),
       as_service_request=st.booleans())
@example(case=("MedicationRequest", "", "medication"), as_service_request=False)
def test_an_unknown_element_in_the_draft_orders_is_a_400_naming_it(app, case, as_service_request):
    place, path, name = case
    draft = _resource(place)
    draft.update(status="draft", id="draft-1")
    if as_service_request:  # a draft lab order: the same check for the other type drafts are
        draft = {"resourceType": "ServiceRequest", "id": "draft-1", "status": "draft", "intent": "order",
                 "subject": {"reference": "Patient/pat-1"}, "code": {"text": "25-OH vitamin D"}}
        known = _names("ServiceRequest")
        name = name if name not in known else name + "Zz"
        path = ""
    draft = _add(draft, path, name)
    body = _envelope("order-sign", prefetch=complete_prefetch())
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                      "entry": [{"resource": draft}]}
    status, answer = _post(app, body, "bone-health-order-sign")
    _refused_naming(status, answer, _expected_path("context.draftOrders.entry[0].resource", path, name), name)


@SETTINGS
@given(case=unknown_elements())
@example(case=("MedicationRequest", "", "medication"))
def test_an_unknown_element_from_the_fhir_server_is_a_400_naming_it(app, httpserver, case):
    place, path, name = case
    resource = _add(_resource(place), path, name)
    record = copy.deepcopy(RECORD)
    record["entry"] = [e for e in record["entry"] if e["resource"]["id"] != resource["id"]] + \
        [{"resource": resource}]
    httpserver.clear()
    httpserver.expect_request(ANY_PATH).respond_with_handler(FakeFhir(record))
    body = _envelope("patient-view", fhirServer=httpserver.url_for("/fhir"),
                     fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "patient/*.read", "subject": "bone-health-cds"})
    status, answer = _post(app, body)
    key = {"Patient": "patient", "Observation": "estradiol"}.get(resource["resourceType"], "medications")
    assert status == 400, answer
    expression = answer["issue"][0]["expression"][0]
    assert expression.startswith(f"prefetch.{key}") and expression.endswith(f".{path}.{name}" if path
                                                                              else f".{name}"), answer


@pytest.mark.parametrize("where, name", [("bundle", "issues"), ("entry", "searchMode"), ("link", "rel")])
def test_an_unknown_element_of_the_bundle_or_its_entries_is_a_400_naming_it(app, where, name):
    prefetch = complete_prefetch()
    bundle = prefetch["medications"]
    if where == "bundle":
        bundle[name], path = "x", f"prefetch.medications.{name}"
    elif where == "entry":
        bundle["entry"][0][name], path = "x", f"prefetch.medications.entry[0].{name}"
    else:
        bundle["link"] = [{"relation": "self", "url": "https://ehr.example.org/fhir/x", name: "x"}]
        path = f"prefetch.medications.link[0].{name}"
    _refused_naming(*_post(app, _envelope("patient-view", prefetch=prefetch)), path, name)


def test_an_r5_medication_request_is_refused_where_it_was_answered_with_no_cards(app):
    """The finding as reported: anastrozole under R5's ``medication.concept``."""
    prefetch = complete_prefetch()
    mr = prefetch["medications"]["entry"][0]["resource"]
    mr["medication"] = {"concept": mr.pop("medicationCodeableConcept")}
    status, body = _post(app, _envelope("patient-view", prefetch=prefetch))
    _refused_naming(status, body, "prefetch.medications.entry[0].resource.medication", "medication")


def test_the_sandbox_s_sloppy_draft_orders_are_still_read(app):
    """``category`` as one object, a Bundle without ``type``, ``coding: [{}]``: R4 elements in the wrong
    shape, tolerated on input as before (see /work/shared/cds-hooks-notes.md)."""
    draft = copy.deepcopy(BY_ID["mr-ana"])
    draft.update(id="draft-1", status="draft", category={"coding": [{}], "text": "outpatient"})
    draft["medicationCodeableConcept"] = {**ANASTROZOLE, "coding": [*ANASTROZOLE["coding"], {}]}
    body = _envelope("order-sign", prefetch=complete_prefetch())
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": draft}]}
    status, answer = _post(app, body, "bone-health-order-sign")
    assert status == 200, answer
    assert answer["cards"], "the anastrozole draft is read: the service has advice about it"
