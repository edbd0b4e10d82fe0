"""The auditors' JSON API: authentication, filters, paging, one record, statistics; the pages' headers."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
from audit_support import AUDITOR_TOKEN, BEARER, SERVICE, hook_body

from cds.errors import ConfigurationError
from cds.review.auth import authenticate, new_token, parse_tokens


@pytest.fixture
def filled(app):
    client = app.test_client()
    calls = [hook_body("ann"), hook_body("bob", dxa_drop=True), hook_body("cat", on_ai=False)]
    for body in calls:
        assert client.post(f"/cds-services/{SERVICE}", json=body).status_code == 200
    bad = hook_body("dan")
    bad["context"].pop("userId")
    assert client.post(f"/cds-services/{SERVICE}", json=bad).status_code == 400
    return client


def _records(client, **params):
    res = client.get("/audit/api/records", query_string=params, headers=BEARER)
    assert res.status_code == 200, res.get_data(as_text=True)
    return res.get_json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(f"mallory:{AUDITOR_TOKEN}".encode()).decode()},
        {"Authorization": "Basic not-base64!!"},
    ],
)
@pytest.mark.parametrize(
    "path", ["/audit/api/records", "/audit/api/records/1", "/audit/api/rules", "/audit/", "/audit/rules/"]
)
def test_auditor_endpoints_need_credentials(app, headers, path):
    res = app.test_client().get(path, headers=headers)
    assert res.status_code == 401
    assert res.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert res.get_data() == b""


def test_hook_endpoints_need_no_auditor_credentials(app):
    # auditor access is separate: the hook service itself does not require them
    assert app.test_client().get("/cds-services").status_code == 200


def test_basic_and_bearer_both_work(filled):
    basic = {"Authorization": "Basic " + base64.b64encode(f"alice:{AUDITOR_TOKEN}".encode()).decode()}
    assert filled.get("/audit/api/records", headers=basic).status_code == 200
    assert filled.get("/audit/api/records", headers=BEARER).status_code == 200


def test_filters(filled):
    assert _records(filled)["total"] == 4
    assert _records(filled, outcome="400")["total"] == 1
    assert _records(filled, outcome="ok")["total"] == 3
    assert _records(filled, rule="falling-bone-density")["total"] == 1
    assert _records(filled, rule="vitamin-d-missing")["total"] == 2
    assert _records(filled, rule="vitamin-d")["total"] == 0  # whole rule ids only
    assert _records(filled, indicator="warning")["total"] == 1
    assert _records(filled, indicator="info")["total"] == 2
    assert _records(filled, service=SERVICE)["total"] == 4
    assert _records(filled, service="bone-health-order-sign")["total"] == 0
    key = _records(filled, rule="falling-bone-density")["records"][0]["patientKey"]
    by_patient = _records(filled, patientKey=key)
    assert by_patient["total"] == 1 and by_patient["records"][0]["rules"] == [
        "falling-bone-density",
        "on-aromatase-inhibitor",
        "vitamin-d-missing",
    ]
    today = dt.datetime.now(dt.UTC).date()
    assert _records(filled, since=today.isoformat())["total"] == 4
    assert _records(filled, since=(today + dt.timedelta(days=1)).isoformat())["total"] == 0
    # until as a date includes that day (issue 16); as a date-time it is the exclusive instant
    assert _records(filled, until=today.isoformat())["total"] == 4
    assert _records(filled, until=(today - dt.timedelta(days=1)).isoformat())["total"] == 0
    assert _records(filled, until=f"{today.isoformat()}T00:00:00Z")["total"] == 0


def test_find_by_hook_instance_and_short_patient_key(filled):
    everything = _records(filled)["records"]
    one = everything[1]
    found = _records(filled, hookInstance=one["hookInstance"])
    assert found["total"] == 1 and found["records"][0]["seq"] == one["seq"]
    assert _records(filled, hookInstance="not-a-logged-instance")["total"] == 0
    keyed = next(r for r in everything if r["patientKey"])
    same = sum(1 for r in everything if r["patientKey"] == keyed["patientKey"])
    short = keyed["patientKey"][:16]
    for shown in (short, "pk-" + short, short.upper()):  # the 16 digits the pages show, pk- stand-ins
        page = _records(filled, patientKey=shown)
        assert page["total"] == same and {r["patientKey"] for r in page["records"]} == {keyed["patientKey"]}
    res = filled.get("/audit/api/records?patientKey=not-hex", headers=BEARER)
    assert res.status_code == 400 and "patientKey" in res.get_json()["issue"][0]["diagnostics"]


def test_unknown_filters_are_a_400_naming_them(filled):
    for query, named in (("hookinstance=x", "hookinstance"),
                         ("indicatr=warning&servce=x", "indicatr, servce")):
        res = filled.get(f"/audit/api/records?{query}", headers=BEARER)
        assert res.status_code == 400, query
        body = res.get_json()
        assert body["resourceType"] == "OperationOutcome" and named in body["issue"][0]["diagnostics"]


def test_paging_hints(filled):
    first = _records(filled, limit=3)
    assert first["returned"] == 3 and first["total"] == 4 and first["prev"] is None
    assert "offset=3" in first["next"] and "limit=3" in first["next"]
    second = filled.get(first["next"], headers=BEARER).get_json()
    assert [r["seq"] for r in second["records"]] == [1]
    assert second["next"] is None and "offset=0" in second["prev"]
    filtered = _records(filled, outcome="ok", limit=1)
    assert "outcome=ok" in filtered["next"]


def test_unknown_rule_is_a_404(filled):
    res = filled.get("/audit/api/rules/vitamin-d-mising", headers=BEARER)
    assert res.status_code == 404 and res.get_json()["resourceType"] == "OperationOutcome"
    assert filled.get("/audit/api/rules/vitamin-d-missing", headers=BEARER).get_json()["fired"] == 2


def test_paging_newest_first(filled):
    first = _records(filled, limit=2)
    second = _records(filled, limit=2, offset=2)
    seqs = [r["seq"] for r in first["records"] + second["records"]]
    assert seqs == [4, 3, 2, 1] and first["total"] == 4


def test_bad_filter_is_a_400_operation_outcome(filled):
    res = filled.get("/audit/api/records?since=yesterday", headers=BEARER)
    assert res.status_code == 400 and res.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("query", ["offset=-1", "offset=99999999999999999999", "limit=ten"])
def test_paging_out_of_range_is_a_400(filled, query):
    res = filled.get(f"/audit/api/records?{query}", headers=BEARER)
    assert res.status_code == 400 and res.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("key", ["99999999999999999999999", "\u00b2"])
def test_a_key_that_is_no_seq_is_a_404(filled, key):
    res = filled.get(f"/audit/api/records/{key}", headers=BEARER)
    assert res.status_code == 404 and res.get_json()["resourceType"] == "OperationOutcome"


def test_one_record_and_404(filled):
    rec = filled.get("/audit/api/records/2", headers=BEARER).get_json()
    assert rec["seq"] == 2 and rec["record"]["id"] and len(rec["hash"]) == 64
    by_id = filled.get(f"/audit/api/records/{rec['record']['id']}", headers=BEARER).get_json()
    assert by_id["seq"] == 2
    res = filled.get("/audit/api/records/999", headers=BEARER)
    assert res.status_code == 404 and res.get_json()["resourceType"] == "OperationOutcome"


def test_rule_statistics_and_verify(filled):
    rules = {r["rule"]: r for r in filled.get("/audit/api/rules", headers=BEARER).get_json()["rules"]}
    assert rules["vitamin-d-missing"]["fired"] == 2 and rules["vitamin-d-missing"]["cardsShown"] == 2
    assert rules["falling-bone-density"]["cardsShown"] == 1
    assert (
        rules["on-aromatase-inhibitor"]["fired"] == 2 and rules["on-aromatase-inhibitor"]["cardsShown"] == 0
    )
    verified = filled.get("/audit/api/verify", headers=BEARER).get_json()
    head = verified.pop("head")
    assert verified == {
        "checked": 4,
        "feedbackChecked": 0,
        "quarantined": 0,
        "chains": 1,
        "checkpoints": 0,
        "ok": True,
        "problems": [],
        "firstBroken": None,
    }
    assert re.fullmatch(r"1-4\.0\.0\.0:[0-9a-f]{64}", head)


def test_pages_carry_security_headers(filled):
    res = filled.get("/audit/", headers=BEARER)
    assert res.status_code == 200
    assert "default-src 'none'" in res.headers["Content-Security-Policy"]
    assert res.headers["X-Frame-Options"] == "DENY"
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert res.headers["Referrer-Policy"] == "no-referrer"


def test_token_parsing_and_hashing():
    token, entry = new_token("bob")
    tokens = parse_tokens([entry])
    assert token not in entry and authenticate(f"Bearer {token}", tokens) == "bob"
    assert authenticate("Bearer nope", tokens) is None and authenticate(None, tokens) is None
    with pytest.raises(ConfigurationError):
        parse_tokens(["bob:plaintext-password"])
