"""The pure parts of the integration toolkit: date shift, prefetch answers, request building, comparison,
and token signing."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import jwt
import pytest
from live_server import KEYS, public_keys

from cds.auth.client_token import KeyFileError, Signer, load_private_jwk, signer_from
from cds.hooks.services import discovery_document
from cds.rules.pack import load
from cds.rules.pack import load as load_pack
from cds.toolkit.dateshift import shift_dates, shift_value
from cds.toolkit.prefetch_answer import answer, answer_all, fill
from cds.toolkit.replay import compare, find_fixtures, percentile, summary
from cds.toolkit.request import (
    build_hook_request,
    choose_service,
    prefetch_keys_sent,
    shift_for,
    sidecar_path,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"


# -- date shift ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("2026-11-22", 10, "2026-12-02"),
        ("2026-11-22T08:30:00Z", -365, "2025-11-22T08:30:00Z"),
        ("2024-02-29T23:59:59.123+05:30", 1, "2024-03-01T23:59:59.123+05:30"),
        ("1960", 400, "1961"),
        ("2026-03", 31, "2026-04"),
        ("not a date", 5, "not a date"),
        ("2026-11-22", 0, "2026-11-22"),
    ],
)
def test_shift_value_keeps_precision_and_time(value, days, expected):
    assert shift_value(value, days) == expected


def test_shift_dates_moves_dates_only():
    resource = {
        "resourceType": "Observation",
        "id": "2026-01-01",
        "effectiveDateTime": "2026-01-01",
        "issued": "2026-01-02T10:00:00Z",
        "code": {"coding": [{"code": "2243-4"}]},
        "effectivePeriod": {"start": "2026-01-01", "end": "2026-01-03"},
        "birthDate": "1960-05-01",
        "valueQuantity": {"value": 12, "unit": "pg/mL"},
        "medication": {"code": "2418"},
        "extension": [{"url": "x", "valueDateTime": "2026-01-01"}],
    }
    moved = shift_dates(resource, 3)
    assert moved["id"] == "2026-01-01" and moved["code"] == resource["code"]
    assert moved["medication"] == {"code": "2418"}
    assert moved["effectiveDateTime"] == "2026-01-04" and moved["issued"] == "2026-01-05T10:00:00Z"
    assert moved["effectivePeriod"] == {"start": "2026-01-04", "end": "2026-01-06"}
    assert moved["birthDate"] == "1960-05-04" and moved["extension"][0]["valueDateTime"] == "2026-01-04"
    assert resource["effectiveDateTime"] == "2026-01-01"  # the input is not changed


def test_shift_for():
    assert shift_for("2026-11-22", dt.date(2026, 12, 1)) == 9
    assert shift_for("2026-11-22", dt.date(2026, 12, 1), enabled=False) == 0
    assert shift_for(None, dt.date(2026, 12, 1)) == 0
    with pytest.raises(ValueError, match="not an ISO date"):
        shift_for("22/11/2026", None)


# -- prefetch answers ----------------------------------------------------------------------------------------

RECORD = [
    {"resourceType": "Patient", "id": "p1"},
    {
        "resourceType": "Observation",
        "id": "e2",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
    },
    {
        "resourceType": "Observation",
        "id": "vitd",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]},
    },
    {
        "resourceType": "Observation",
        "id": "other-patient",
        "subject": {"reference": "Patient/p2"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
    },
    {"resourceType": "MedicationRequest", "id": "active", "status": "active"},
    {"resourceType": "MedicationRequest", "id": "stopped", "status": "stopped"},
    {"resourceType": "MedicationRequest", "id": "error", "status": "entered-in-error"},
]


def ids(bundle):
    return [e["resource"]["id"] for e in bundle["entry"]]


def test_answers_reads_and_searches_from_the_record():
    assert answer("Patient/p1", RECORD) == RECORD[0]
    assert answer("Patient/nobody", RECORD) is None
    assert ids(
        answer("Observation?patient=p1&code=http://loinc.org|2243-4,http://loinc.org|14715-7", RECORD)
    ) == ["e2"]
    assert ids(answer("Observation?patient=p1&code=62292-8", RECORD)) == ["vitd"]
    assert ids(answer("Observation?code=other|2243-4", RECORD)) == []
    assert ids(answer("MedicationRequest?patient=p1&status=active,on-hold", RECORD)) == ["active"]
    assert ids(answer("Observation?patient=p1&date=ge2020-01-01&_count=5", RECORD)) == ["e2", "vitd"]
    found = answer("MedicationRequest?patient=p1", RECORD)
    assert found["type"] == "searchset" and found["total"] == 3


def test_fill_tokens():
    context = {"patientId": "p1", "userId": "Practitioner/dr"}
    assert fill("Patient/{{context.patientId}}", context) == "Patient/p1"
    assert (
        fill("PractitionerRole?practitioner={{userPractitionerId}}", context)
        == "PractitionerRole?practitioner=dr"
    )


@pytest.mark.parametrize("template", [
    "Patient/{{context.patientId}}",
    "Encounter/{{ context.encounterId }}",
    "Observation?patient={{context.patientId}}&encounter={{context.encounter_id2}}",
    "PractitionerRole?practitioner={{userPractitionerId}}",
    "X?who={{userPatientId}}",
    "X?v={{context.draftOrders}}",
    "X?v={{context.selections}}",
    "X?v={{unknownToken}}",
])
def test_the_toolkit_fills_templates_exactly_as_the_service_renders_them(template):
    """One grammar: what ``cds request`` fills (or leaves out) is what the service renders (or refuses)."""
    from cds.call.prefetch import render_template
    from cds.errors import DataUnavailable
    from cds.hooks.envelope import parse_hook_request

    context = {"userId": "Practitioner/dr 1", "patientId": "p?1&x", "encounterId": "enc-4",
               "encounter_id2": "e/2"}
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": context}
    request = parse_hook_request(body, "patient-view")
    try:
        rendered = render_template(template, request)
    except DataUnavailable:
        rendered = None
    answered = answer_all({"key": template}, [], context)
    if rendered is None:
        assert answered == {}  # left out, as the specification asks of a client that cannot fill it
        with pytest.raises(DataUnavailable):
            fill(template, context)
    else:
        assert fill(template, context) == rendered and "key" in answered
        assert "{{" not in rendered


def test_a_key_the_client_cannot_fill_is_left_out_of_the_request():
    bundle = json.loads((SCENARIOS / "trt-man-anastrozole-low-estradiol.json").read_text())
    service = {"id": "s", "hook": "order-sign",
               "prefetch": {"patient": "Patient/{{context.patientId}}",
                            "roles": "PractitionerRole?practitioner={{userPractitionerRoleId}}"}}
    body = build_hook_request(bundle, "order-sign", service)
    assert list(body["prefetch"]) == ["patient"]


def test_include_adds_the_referenced_medications():
    record = [
        {"resourceType": "MedicationRequest", "id": "mr", "status": "active",
         "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/ana"}},
        {"resourceType": "Medication", "id": "ana"},
        {"resourceType": "Medication", "id": "unrelated"},
    ]
    query = "MedicationRequest?patient=p1&status=active&_include=MedicationRequest:medication"
    assert ids(answer(query, record)) == ["mr", "ana"]
    assert ids(answer("MedicationRequest?patient=p1", record)) == ["mr"]


def test_every_template_of_the_service_is_answered():
    doc = discovery_document(load())
    templates = doc["services"][0]["prefetch"]
    answered = answer_all(templates, RECORD, {"patientId": "p1", "userId": "Practitioner/x"})
    assert set(answered) == set(templates)
    assert answered["patient"]["id"] == "p1"
    assert ids(answered["estradiol"]) == ["e2"] and ids(answered["vitaminD"]) == ["vitd"]
    # stopped orders are on record too (when an aromatase inhibitor course started); never one in error
    assert ids(answered["dxa"]) == [] and ids(answered["medications"]) == ["active", "stopped"]


# -- building the request ------------------------------------------------------------------------------------


def test_build_request_for_each_prefetch_mode():
    bundle = json.loads((SCENARIOS / "trt-man-anastrozole-severe-estradiol-pmol.json").read_text())
    doc = discovery_document(load())
    service = choose_service(doc, "order-select")
    full = build_hook_request(bundle, "order-select", service)
    assert full["hook"] == "order-select" and full["context"]["patientId"] == "trt-m2"
    assert full["context"]["selections"] == ["MedicationRequest/mr-ana"]
    assert [e["resource"]["id"] for e in full["context"]["draftOrders"]["entry"]] == ["mr-ana"]
    assert set(full["prefetch"]) == set(service["prefetch"])
    assert "prefetch" not in build_hook_request(bundle, "order-select", service, prefetch="none")
    partial = build_hook_request(bundle, "order-select", service, prefetch="partial", omit=["dxa"])
    assert set(partial["prefetch"]) == set(service["prefetch"]) - {"dxa"}
    assert prefetch_keys_sent(["a", "b", "c", "d"], "partial") == ["a", "c"]
    shifted = build_hook_request(bundle, "order-select", service, shift_days=10)
    e2 = shifted["prefetch"]["estradiol"]["entry"][0]["resource"]
    assert e2["effectiveDateTime"] == "2026-11-12T08:30:00Z"


def test_choose_service_errors():
    doc = discovery_document(load())
    assert choose_service(doc, "patient-view")["id"] == "bone-health-patient-view"
    with pytest.raises(ValueError, match="no service 'nope'"):
        choose_service(doc, "patient-view", "nope")
    with pytest.raises(ValueError, match="answers 'order-sign'"):
        choose_service(doc, "patient-view", "bone-health-order-sign")


# -- fixtures and comparison ---------------------------------------------------------------------------------


def card(rule, indicator="info", summary="s"):
    return {"summary": summary, "indicator": indicator, "source": {"label": "x", "topic": {"code": rule}}}


def test_compare():
    expected = {
        "cards": [{"rule": "a", "indicator": "warning", "summary_contains": "Low"}],
        "not_cards": ["b"],
    }
    assert compare(expected, [card("a", "warning", "Low estradiol")]) == []
    assert compare(expected, [card("a", "warning", "Low"), card("c")]) == []
    assert compare(expected, [card("a", "warning", "Low"), card("c")], strict=True) == [
        "+ unexpected c [info] 's' (strict: not in cards)"
    ]
    diff = compare(expected, [card("a", "critical", "Low"), card("b")])
    assert diff == [
        "- expected a [warning] summary containing 'Low'",
        "+ answered a [critical] 'Low'",
        "+ unexpected b [info] 's' (listed in not_cards)",
    ]
    assert compare({"cards": [{"rule": "a"}, {"rule": "a"}]}, [card("a")]) == [
        "- expected a",
        "+ answered a [info] 's'",
    ]


def test_every_scenario_has_a_well_formed_sidecar():
    fixtures = find_fixtures(SCENARIOS)
    assert len(fixtures) == len(list(SCENARIOS.glob("*.expected.json"))) >= 12
    known = {rule.id for rule in load_pack().active_rules}
    for fixture in fixtures:
        assert fixture.expected["hook"] in ("patient-view", "order-select", "order-sign")
        dt.date.fromisoformat(fixture.expected["at"])
        rules = [c["rule"] for c in fixture.expected["cards"]] + fixture.expected["not_cards"]
        assert set(rules) <= known, fixture.path
        assert sidecar_path(fixture.path).is_file()
        bundle = json.loads(fixture.path.read_text())
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"


def test_percentiles_and_summary():
    assert percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    assert summary([])["total"] == 0


# -- signing -------------------------------------------------------------------------------------------------


def test_signed_tokens_carry_the_claims_a_cds_client_sends():
    signer = Signer(load_private_jwk(KEYS), iss="urn:test")
    url = "http://127.0.0.1:5000/cds-services/bone-health-patient-view"
    first, second = signer.token(url), signer.token(url)
    header = jwt.get_unverified_header(first)
    assert header["alg"] == "ES384" and header["typ"] == "JWT" and header["kid"] == signer.kid
    key = public_keys()[header["kid"]]
    claims = jwt.decode(first, key.key, algorithms=["ES384"], audience=url, issuer="urn:test")
    assert claims["exp"] > claims["iat"] and claims["jti"]
    assert claims["jti"] != jwt.decode(second, key.key, algorithms=["ES384"], audience=url)["jti"]


def test_rsa_key_from_a_single_jwk_file(tmp_path):
    rsa = next(k for k in json.loads(KEYS.read_text())["keys"] if k["kty"] == "RSA" and "d" in k)
    path = tmp_path / "rsa.json"
    path.write_text(json.dumps(rsa))
    token = Signer(load_private_jwk(path)).token("http://x/cds-services")
    assert jwt.get_unverified_header(token)["alg"] == "RS384"
    claims = jwt.decode(
        token, public_keys()[rsa["kid"]].key, algorithms=["RS384"], audience="http://x/cds-services"
    )
    assert claims["iss"] == "urn:cds:dev-client"


def test_key_files_that_cannot_sign(tmp_path, monkeypatch):
    public_only = tmp_path / "public.json"
    public_only.write_text(
        json.dumps({"keys": [k for k in json.loads(KEYS.read_text())["keys"] if "d" not in k]})
    )
    with pytest.raises(KeyFileError, match="no private"):
        load_private_jwk(public_only)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_jwk(tmp_path / "missing.json")
    symmetric = tmp_path / "hs.json"
    symmetric.write_text(json.dumps({"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"}))
    with pytest.raises(KeyFileError):
        load_private_jwk(symmetric)
    monkeypatch.setenv("CDS_DEV_CLIENT_DIR", str(tmp_path / "dev"))
    assert signer_from(None) is None
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "private-jwk.json").write_text(KEYS.read_text())
    assert signer_from(None).iss == "urn:cds:dev-client"
