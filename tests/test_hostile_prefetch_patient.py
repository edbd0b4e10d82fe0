"""Finding 9: a Patient resource in prefetch that is not the patient of ``context.patientId`` is refused.

Another patient's sex must not decide a card (the estradiol card is for men): the call is a 412 naming the
prefetch key, whether the Patient came from the client or from the FHIR server, and the audit record says so.
"""

from __future__ import annotations

import pytest
from builders import hook_body, med, patient
from recording_server import RecordingServer

from cds.ledger.schema import audit_record


def test_another_patients_patient_in_prefetch_is_a_412(call):
    body = hook_body("patient-view", record=[patient("someone-else", gender="male"), med()])
    response = call(body)
    assert response.status_code == 412
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["prefetch.patient"]
    assert "not the patient of context.patientId" in issue["diagnostics"]
    assert "someone-else" not in response.get_data(as_text=True)


@pytest.mark.parametrize("context_id", ["p1", "Patient/p1"])
def test_the_contexts_own_patient_is_used(call, context_id):
    body = hook_body("patient-view", record=[patient("p1", gender="male"), med()])
    body["context"]["patientId"] = context_id
    response = call(body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["cards"]


def test_another_patient_inside_a_bundle_is_refused(call):
    body = hook_body("patient-view", record=[med()])
    body["prefetch"]["patient"] = {"resourceType": "Bundle", "type": "searchset",
                                   "entry": [{"resource": patient("someone-else", gender="male")}]}
    response = call(body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.patient"]


def test_a_patient_without_id_is_refused(call):
    body = hook_body("patient-view", record=[patient("p1"), med()])
    del body["prefetch"]["patient"]["id"]
    assert call(body).status_code == 412


def test_another_patient_fetched_from_the_fhir_server_is_refused(auth_config, tmp_path, authed_client):
    from cds import create_app

    with RecordingServer({"/fhir/Patient/p1": patient("p2")}) as fhir:
        app = create_app({**auth_config, "FHIR_SERVER_ALLOWLIST": f"{fhir.origin}/fhir",
                          "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "AUDIT_PATIENT_KEY_SECRET": "s" * 32})
        body = hook_body("patient-view", record=[patient("p1"), med()])
        del body["prefetch"]["patient"]
        body["fhirServer"] = f"{fhir.origin}/fhir"
        response = authed_client(app).post("/cds-services/bone-health-patient-view", json=body)
        assert response.status_code == 412
        assert response.get_json()["issue"][0]["expression"] == ["prefetch.patient"]
        assert fhir.paths() == ["/fhir/Patient/p1"]
        store = app.extensions["cds.audit"]
        assert store.wait_drained(20)
        with store.engine.connect() as conn:
            row = conn.execute(audit_record.select()).mappings().one()
        assert row["outcome"] == "412" and "not the patient of context.patientId" in row["content"]
        store.close()
