"""Finding 5: the accepted ``aud`` and the card link base come from configuration, never from the Host or
X-Forwarded-* headers of the request.

Over real HTTP: a token made for another service's URL, sent with that service's Host (and with
``X-Forwarded-Proto: https``), is refused; card links start with ``CDS_PUBLIC_URL`` whatever the request
says; without a public URL the service answers to the address it is bound to.
"""

from __future__ import annotations

import requests
from builders import hook_body, med, patient
from support import make_token

from cds import create_app

PUBLIC = "https://cds.example.org/bone"
SERVICE = "/cds-services/bone-health-patient-view"


def test_a_token_for_another_host_is_refused_whatever_the_headers_say(auth_config, live_server, tmp_path):
    app = create_app({**auth_config, "PUBLIC_URL": PUBLIC, "AUDIT_PATIENT_KEY_SECRET": "s" * 32,
                      "AUDIT_SPOOL_DIR": str(tmp_path / "spool")})
    base = live_server(app)
    body = hook_body("patient-view", record=[patient(), med()])
    forged = [("http://other-service.example.org", {"Host": "other-service.example.org"}),
              ("https://other-service.example.org", {"Host": "other-service.example.org",
                                                     "X-Forwarded-Proto": "https"}),
              ("https://evil.example.org", {"X-Forwarded-Host": "evil.example.org",
                                            "X-Forwarded-Proto": "https"}),
              (base, {})]  # the address it is served at is not its public URL
    for aud_base, headers in forged:
        token = make_token(aud_base + SERVICE)
        response = requests.post(base + SERVICE, json=body, timeout=60,
                                 headers={"Authorization": f"Bearer {token}", **headers})
        assert response.status_code == 401, aud_base
    response = requests.post(base + SERVICE, json=body, timeout=60,
                             headers={"Authorization": f"Bearer {make_token(PUBLIC + SERVICE)}",
                                      "Host": "evil.example.org", "X-Forwarded-Host": "evil.example.org",
                                      "X-Forwarded-Proto": "https"})
    assert response.status_code == 200, response.text
    links = [link["url"] for card in response.json()["cards"] for link in card.get("links", [])]
    assert links and all(url.startswith(PUBLIC + "/") for url in links), links
    app.extensions["cds.audit"].close()


def test_without_a_public_url_the_bound_address_is_the_audience(auth_config, monkeypatch):
    monkeypatch.delenv("CDS_PUBLIC_URL")
    app = create_app({**auth_config, "HOST": "0.0.0.0", "PORT": 8123, "AUDIT": False})
    client = app.test_client()
    good = "http://127.0.0.1:8123/cds-services"
    answer = client.get("/cds-services", headers={"Authorization": f"Bearer {make_token(good)}"})
    assert answer.status_code == 200
    for host in ("localhost", "attacker.example.org"):
        token = make_token(f"http://{host}/cds-services")
        assert client.get("/cds-services", base_url=f"http://{host}",
                          headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_further_audiences_are_accepted_when_listed(auth_config):
    app = create_app({**auth_config, "PUBLIC_URL": PUBLIC, "AUDIENCES": "https://cds.internal:8443/bone/",
                      "AUDIT": False})
    client = app.test_client()
    for base in (PUBLIC, "https://cds.internal:8443/bone", "HTTPS://CDS.example.org:443/bone"):
        token = make_token(base + "/cds-services")
        assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    token = make_token("https://cds.internal:8443/other/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 401
