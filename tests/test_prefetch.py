"""Prefetch templates and the per-key decisions of ``gather`` (pure code: no network)."""

from __future__ import annotations

import uuid

import pytest

from cds.call.prefetch import gather, render_template
from cds.errors import DataUnavailable, FhirServerError
from cds.fhir.gathered import Gathered, next_link
from cds.hooks.envelope import parse_hook_request
from cds.hooks.services import prefetch_templates
from cds.rules.pack import load


def request(user: str = "Practitioner/prac-9", patient: str = "pat-1", fhir_server: str | None = None,
            prefetch: dict | None = None, **context):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": user, "patientId": patient, **context}}
    if fhir_server:
        body["fhirServer"] = fhir_server
    if prefetch is not None:
        body["prefetch"] = prefetch
    return parse_hook_request(body, "patient-view")


@pytest.mark.parametrize(("user", "token", "expected"), [
    ("Practitioner/prac-9", "userPractitionerId", "prac-9"),
    ("PractitionerRole/role-3", "userPractitionerRoleId", "role-3"),
    ("Patient/pat-1", "userPatientId", "pat-1"),
    ("RelatedPerson/rp-5", "userRelatedPersonId", "rp-5"),
])
def test_each_user_token_is_filled_from_user_id(user, token, expected):
    assert render_template(f"X?who={{{{{token}}}}}", request(user=user)) == f"X?who={expected}"


@pytest.mark.parametrize(("user", "token"), [
    ("Practitioner/prac-9", "userPatientId"),
    ("Patient/pat-1", "userPractitionerId"),
    ("PractitionerRole/role-3", "userPractitionerId"),
    ("Practitioner/prac-9", "userRelatedPersonId"),
    ("Practitioner/", "userPractitionerId"),
])
def test_a_user_token_that_does_not_match_user_id_cannot_be_filled(user, token):
    with pytest.raises(DataUnavailable, match=token) as caught:
        render_template(f"X?who={{{{{token}}}}}", request(user=user))
    assert caught.value.status == 412 and caught.value.field == token


def test_context_tokens_fill_root_primitives():
    req = request(encounterId="enc-4")
    assert render_template("Patient/{{context.patientId}}", req) == "Patient/pat-1"
    assert render_template("Encounter/{{ context.encounterId }}", req) == "Encounter/enc-4"
    prefixed = request(patient="Patient/pat-1")
    assert render_template("Patient/{{context.patientId}}", prefixed) == "Patient/pat-1"


@pytest.mark.parametrize("token", ["context.encounterId", "context.selections", "context.draftOrders",
                                   "context.patientId.value", "unknownToken"])
def test_a_context_token_without_a_primitive_value_cannot_be_filled(token):
    with pytest.raises(DataUnavailable, match="prefetch token"):
        render_template(f"X?v={{{{{token}}}}}", request())


def test_inserted_values_are_url_encoded():
    req = request(user="Practitioner/a b&c=d", patient="p?1#x&y=z")
    template = "Observation?patient={{context.patientId}}&performer={{userPractitionerId}}"
    assert render_template(template, req) == "Observation?patient=p%3F1%23x%26y%3Dz&performer=a%20b%26c%3Dd"
    assert render_template("Patient/{{context.patientId}}", req) == "Patient/p%3F1%23x%26y%3Dz"


def test_every_discovery_template_renders():
    templates = prefetch_templates(load(None, None))
    for key, template in templates.items():
        rendered = render_template(template, request())
        assert "{{" not in rendered, key
        assert "pat-1" in rendered


def test_next_link_is_found_only_on_bundles():
    assert next_link({"resourceType": "Bundle", "link": [{"relation": "self", "url": "a"},
                                                         {"relation": "next", "url": "b"}]}) == "b"
    assert next_link({"resourceType": "Bundle", "link": [{"relation": "self", "url": "a"}]}) is None
    assert next_link({"resourceType": "Patient", "link": [{"relation": "next", "url": "b"}]}) is None
    assert next_link(None) is None


class StubFetch:
    """A Fetch that answers from a dict and remembers what it was asked (gather's own logic, no network)."""

    def __init__(self, answers):
        self.answers, self.asked = answers, []

    def __call__(self, req, key, query):
        self.asked.append(key)
        answer = self.answers[key]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def complete(self, req, key, bundle):
        self.asked.append(f"{key}+pages")
        return bundle


EHR = "https://ehr.example.org/fhir"
TEMPLATES = {"a": "Patient/{{context.patientId}}", "b": "Observation?patient={{context.patientId}}",
             "c": "Observation?patient={{context.patientId}}&code=x",
             "d": "Observation?who={{userPatientId}}"}
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": []}


def test_gather_decides_per_key_and_keeps_template_order():
    fetch = StubFetch({"b": BUNDLE, "c": None})
    sent = {"a": {"resourceType": "Patient", "id": "pat-1"}, "c": {"resourceType": "OperationOutcome"},
            "d": None}
    out = gather(request(fhir_server=EHR, prefetch=sent), TEMPLATES, fetch)
    assert fetch.asked == ["b", "c"]
    assert out.provenance == {"a": "client", "b": "fetched", "c": "empty", "d": "empty"}
    assert list(out.data) == ["a", "b", "c", "d"]


def test_an_unfillable_token_fails_only_its_key_and_is_recorded():
    fetch = StubFetch({"a": {"resourceType": "Patient", "id": "pat-1"}, "b": BUNDLE, "c": BUNDLE})
    out = Gathered()
    with pytest.raises(DataUnavailable) as caught:
        gather(request(fhir_server="https://ehr.example.org/fhir"), TEMPLATES, fetch, out)
    assert caught.value.field == "prefetch.d" and "userPatientId" in caught.value.message
    assert out.provenance == {"a": "fetched", "b": "fetched", "c": "fetched", "d": "failed"}


def test_a_server_wide_failure_stops_further_fetches():
    down = FhirServerError("the FHIR server could not be reached", server_wide=True)
    fetch = StubFetch({"a": down, "b": BUNDLE, "c": BUNDLE})
    out = Gathered()
    with pytest.raises(FhirServerError) as caught:
        gather(request(fhir_server=EHR, prefetch={"d": None}), TEMPLATES, fetch, out)
    assert fetch.asked == ["a"]
    assert out.provenance == {"d": "empty", "a": "failed", "b": "failed", "c": "failed"}
    assert [d.split(":")[0] for d in caught.value.details] == ["prefetch.a", "prefetch.b", "prefetch.c"]


def test_a_key_level_failure_does_not_stop_the_others():
    fetch = StubFetch({"a": FhirServerError("HTTP 500"), "b": BUNDLE, "c": BUNDLE})
    out = Gathered()
    with pytest.raises(FhirServerError):
        gather(request(fhir_server=EHR, prefetch={"d": None}), TEMPLATES, fetch, out)
    assert fetch.asked == ["a", "b", "c"]
    assert out.provenance == {"d": "empty", "a": "failed", "b": "fetched", "c": "fetched"}


def test_a_paged_client_bundle_is_completed_by_the_fetcher():
    paged = {**BUNDLE, "link": [{"relation": "next", "url": "https://ehr.example.org/fhir/Observation?p=2"}]}
    fetch = StubFetch({})
    sent = {"a": None, "b": paged, "c": None, "d": None}
    out = gather(request(fhir_server=EHR, prefetch=sent), TEMPLATES, fetch)
    assert fetch.asked == ["b+pages"]
    assert out.provenance["b"] == "fetched"


def test_without_a_fetcher_missing_keys_are_a_412_and_recorded():
    out = Gathered()
    with pytest.raises(DataUnavailable, match="no FHIR client") as caught:
        gather(request(fhir_server=EHR, prefetch={"a": None}), TEMPLATES, None, out)
    assert caught.value.status == 412
    assert out.provenance == {"a": "empty", "b": "failed", "c": "failed", "d": "failed"}
