"""The ready trusted-clients entry for the official CDS Hooks sandbox (docs/clients/cds-hooks-sandbox.json),
tried against requests signed and shaped as the sandbox sends them: ES384 (and ES256) tokens with a
``kid`` and always a ``jku`` naming its key set, ``iss`` its origin, ``aud`` the exact URL called,
``exp`` = ``iat`` + 300, a uuid ``jti``; discovery, the three hooks with its sloppy draft orders, and its
two kinds of feedback. A real server (a local port) trusts the entry as shipped but for the host of its
``jku``, which a local key server stands in for; then the same keys pinned, the ``jku`` host unreachable."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from builders import complete_prefetch, med, obs, patient, searchset
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds import create_app
from cds.auth.trusted_clients import parse_trusted_clients

ENTRY = Path(__file__).resolve().parent.parent / "docs" / "clients" / "cds-hooks-sandbox.json"
SANDBOX = "https://sandbox.cds-hooks.org"
JWKS_PATH = "/.well-known/jwks.json"
PID = "smart-1288992"
UCUM = "http://unitsofmeasure.org"
CURVES = {"ES384": ec.SECP384R1(), "ES256": ec.SECP256R1()}


class SandboxSigner:
    """Signs as the sandbox's JWT generator does, with keys of its own (one per algorithm)."""

    def __init__(self, jku: str):
        self.jku = jku
        self.keys = {alg: (str(uuid.uuid4()), ec.generate_private_key(curve))
                     for alg, curve in CURVES.items()}

    def jwks(self) -> dict[str, Any]:
        keys = []
        for alg, (kid, key) in self.keys.items():
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        return {"keys": keys}

    def token(self, url: str, alg: str = "ES384") -> str:
        kid, key = self.keys[alg]
        now = round(time.time())
        claims = {"iss": SANDBOX, "aud": url, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, key, algorithm=alg, headers={"typ": "JWT", "kid": kid, "jku": self.jku})


def sloppy_draft(status: str = "draft") -> dict[str, Any]:
    """A MedicationRequest as the sandbox's order pages build it (R4): ``category`` an object, not a list;
    an empty coding beside the RxNorm one."""
    return {
        "resourceType": "MedicationRequest", "id": "request-123", "status": status,
        "subject": {"reference": f"Patient/{PID}"}, "authoredOn": "2026-11-22",
        "dosageInstruction": [{
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 1, "system": UCUM, "code": "{pill}"}}],
        }],
        "intent": "order",
        "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                 "code": "community"}]},
        "medicationCodeableConcept": {"text": "anastrozole 1 MG Oral Tablet", "coding": [
            {},  # an empty coding, as its order pages sometimes send
            {"display": "anastrozole 1 MG Oral Tablet", "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
             "code": "199224"}]},
    }


def sandbox_request(hook: str) -> dict[str, Any]:
    """The body the sandbox posts: a uuid hookInstance, its FHIR server and access token, the context
    (``patientId``, ``userId``; the order pages add ``draftOrders`` as a Bundle without ``type``), and the
    prefetch it gathered from its FHIR server."""
    record = [obs("2243-4", 12, "pg/mL", "2026-10-01", pid=PID)]
    prefetch = complete_prefetch(patient=patient(PID, gender="male"), estradiol=searchset(record),
                                 medications=searchset([med(pid=PID)]))
    context: dict[str, Any] = {"patientId": PID, "userId": "Practitioner/COREPRACTITIONER1"}
    if hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": sloppy_draft()}]}
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/request-123"]
    return {"hookInstance": str(uuid.uuid4()), "hook": hook,
            "fhirServer": "https://launch.smarthealthit.org/v/r4/fhir", "context": context,
            "prefetch": prefetch,
            "fhirAuthorization": {"access_token": "sandbox-access-token", "token_type": "Bearer",
                                  "expires_in": 3600,
                                  "scope": "patient/*.* user/*.* launch openid profile online_access",
                                  "subject": "48163c5e-88b5-4cb3-92d3-23b800caa927"}}


def entry_with_jku(jku: str, keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ready entry, its jku host replaced (and its pinned keys, when ``keys`` is given)."""
    data = copy.deepcopy(json.loads(ENTRY.read_text()))
    client = data["clients"][0]
    client["jku"] = [jku]
    if keys is not None:
        client["jwks"] = keys
    return data


def test_the_ready_entry_is_the_sandbox_as_it_signs():
    data = json.loads(ENTRY.read_text())
    clients = parse_trusted_clients(data, where=str(ENTRY))
    sandbox = clients[SANDBOX]
    assert sandbox.jku == (SANDBOX + JWKS_PATH,)
    (kid, key), = sandbox.keys.items()  # its published ES384 key, pinned: no fetch for tokens it signs
    assert kid == "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f" and key.fits("ES384") and not key.fits("ES256")


def run_as_the_sandbox(base: str, signer: SandboxSigner) -> None:
    def post(path: str, body: Any, alg: str) -> requests.Response:
        url = base + path
        headers = {"Accept": "application/json", "Authorization": f"Bearer {signer.token(url, alg)}"}
        return requests.post(url, json=body, timeout=60, headers=headers)

    for alg in CURVES:
        token = signer.token(base + "/cds-services", alg)
        discovery = requests.get(base + "/cds-services", timeout=60,
                                 headers={"Authorization": f"Bearer {token}"})
        assert discovery.status_code == 200, alg
        services = {s["hook"]: s["id"] for s in discovery.json()["services"]}
        for hook in ("patient-view", "order-select", "order-sign"):
            response = post(f"/cds-services/{services[hook]}", sandbox_request(hook), alg)
            assert response.status_code == 200, (alg, hook, response.text)
            cards = response.json()["cards"]
            assert cards, (alg, hook)
            for card in cards:  # whatever a suggestion echoes is valid FHIR, whatever the draft was
                for suggestion in card.get("suggestions", []):
                    for action in suggestion.get("actions", []):
                        assert not isinstance(action.get("resource", {}).get("category"), dict)
        # its feedback: the Dismiss button, then an entry of the override menu (code and system only)
        card = cards[0]
        dismissed = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                   "outcomeTimestamp": "2026-11-22T12:00:00.000Z"}]}
        assert post(f"/cds-services/{services['order-sign']}/feedback", dismissed, alg).status_code == 200
        reason = card["overrideReasons"][0]
        coding = {k: reason[k] for k in ("code", "system") if k in reason}  # never display, never a comment
        menu = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "overrideReason": {"reason": coding},
                              "outcomeTimestamp": "2026-11-22T12:00:01.000Z"}]}
        assert post(f"/cds-services/{services['order-sign']}/feedback", menu, alg).status_code == 200


def serve_with(entry: dict[str, Any], tmp_path: Path, live_server: Any) -> str:
    path = tmp_path / "trusted-clients.json"
    path.write_text(json.dumps(entry))
    app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(path),
                      "DATABASE_URL": f"sqlite:///{tmp_path}/cds.sqlite3"})
    return live_server(app)


def test_sandbox_tokens_verify_through_its_jku_and_get_cards(tmp_path, live_server, httpserver):
    jku = httpserver.url_for(JWKS_PATH)  # stands in for the sandbox's own key set
    signer = SandboxSigner(jku)
    httpserver.expect_request(JWKS_PATH).respond_with_json(signer.jwks())
    base = serve_with(entry_with_jku(jku), tmp_path, live_server)
    run_as_the_sandbox(base, signer)
    fetched = [r for r, _ in httpserver.log if r.path == JWKS_PATH]
    assert 1 <= len(fetched) <= 2  # the set is cached: not one fetch per call
    # the same keys named by a jku the entry does not register (and served there): refused, never fetched
    httpserver.expect_request("/elsewhere/jwks.json").respond_with_json(signer.jwks())
    signer.jku = httpserver.url_for("/elsewhere/jwks.json")
    url = base + "/cds-services"
    refused = requests.get(url, headers={"Authorization": f"Bearer {signer.token(url)}"}, timeout=60)
    assert refused.status_code == 401
    assert not [r for r, _ in httpserver.log if r.path == "/elsewhere/jwks.json"]


@pytest.mark.parametrize("alg", list(CURVES))
def test_a_pinned_sandbox_key_needs_no_fetch(tmp_path, live_server, alg):
    unreachable = "http://127.0.0.1:9" + JWKS_PATH  # the discard port: nothing answers there
    signer = SandboxSigner(unreachable)
    pinned = {"keys": [k for k in signer.jwks()["keys"] if k["alg"] == alg]}
    base = serve_with(entry_with_jku(unreachable, pinned), tmp_path, live_server)
    url = base + "/cds-services"
    response = requests.get(url, headers={"Authorization": f"Bearer {signer.token(url, alg)}"}, timeout=60)
    assert response.status_code == 200
    assert {s["hook"] for s in response.json()["services"]} == {"patient-view", "order-select", "order-sign"}
