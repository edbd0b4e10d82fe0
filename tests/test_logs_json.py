"""JSON logs an operator can follow (``CDS_LOG_FORMAT=json``): a real `cds serve` process, the development
server and the production server, answers hook calls and feedback; every line it logs is one JSON object,
each call's closing line carries its service, hookInstance, audit record key, status and duration, and
no line holds a token, a patient identifier or any part of a FHIR resource that was sent (each holds a
marker string)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from builders import hook_body, med, obs, patient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import make_token, trusted_clients_file_in
from test_serving import free_port, wait_for_health

PID = "PATIENT-ID-MARKER-5c2e"
USER = "Practitioner/USER-MARKER-91ad"
ACCESS_TOKEN = "ACCESS-TOKEN-MARKER-3f7b0c"
RESOURCE_MARKER = "RESOURCE-MARKER-e84d"
VIEW = "bone-health-patient-view"
SIGN = "bone-health-order-sign"


def marked_body(hook: str) -> dict[str, Any]:
    """A hook call whose patient id, user and resources carry markers (a low estradiol: cards)."""
    low = obs("2243-4", 12, "pg/mL", "2026-10-01", pid=PID, oid=f"obs-{RESOURCE_MARKER}")
    low["note"] = [{"text": f"drawn fasting {RESOURCE_MARKER}"}]
    drug = med(pid=PID, mid=f"mr-{RESOURCE_MARKER}", display=f"anastrozole {RESOURCE_MARKER}")
    drafts = [med(pid=PID, mid=f"draft-{RESOURCE_MARKER}", status="draft")] if hook != "patient-view" else []
    body = hook_body(hook, pid=PID, record=[patient(PID), drug, low], drafts=drafts)
    body["context"]["userId"] = USER
    body["prefetch"]["patient"]["name"] = [{"family": f"Doe-{RESOURCE_MARKER}"}]
    return body


class Server:
    def __init__(self, tmp_path: Path, prod: bool):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "service.log"
        env = {
            "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CDS_LOG_FORMAT": "json", "CDS_DEV_MODE": "false",
            "CDS_TRUSTED_CLIENTS": str(trusted_clients_file_in(tmp_path)), "CDS_PUBLIC_URL": self.base,
            "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "CDS_WORKERS": "1",
            "CDS_AUDIT_SECRET_FILE": str(tmp_path / "audit.secret"),
            "CDS_AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
        }
        if prod:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
            env["CDS_LINK_SECRET"] = "json-logs-test-link-secret-0123456789"  # --prod needs one
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "cds", "serve", "--port", str(self.port),
                                      *(["--prod"] if prod else [])],
                                     cwd=tmp_path, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def lines(self) -> list[str]:
        return [line for line in self.log_path.read_text().splitlines() if line.strip()]

    def post(self, path: str, body: Any, token: str | None = None) -> requests.Response:
        token = token or make_token(self.base + path)
        return requests.post(self.base + path, json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=120)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_for_line(server: Server, match: Any, seconds: float = 60) -> dict[str, Any]:
    """The first JSON line for which ``match(line)`` holds, waiting up to a generous deadline."""
    deadline = time.monotonic() + seconds
    while True:
        for line in server.lines():
            entry = json.loads(line)
            if match(entry):
                return entry
        if time.monotonic() > deadline:
            raise AssertionError("no such log line in:\n" + "\n".join(server.lines()[-40:]))
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("prod", [False, True], ids=["development-server", "production-server"])
def test_json_lines_follow_each_call_and_never_hold_a_token_patient_id_or_resource(tmp_path, prod):
    server = Server(tmp_path, prod)
    secrets: list[str] = [PID, USER.split("/")[1], ACCESS_TOKEN, RESOURCE_MARKER]
    try:
        health = wait_for_health(server.base, server.proc)
        assert health is not None and health.status_code == 200, server.log_path.read_text()

        answered = {}
        for hook, service in (("patient-view", VIEW), ("order-sign", SIGN)):
            body = marked_body(hook)
            body.update(fhirServer="https://fhir.example.org/r4",
                        fhirAuthorization={"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                           "expires_in": 300, "scope": "patient/*.read", "subject": "cds"})
            token = make_token(server.base + f"/cds-services/{service}")
            secrets.extend(token.split("."))
            response = server.post(f"/cds-services/{service}", body, token)
            assert response.status_code == 200, response.text
            assert response.json()["cards"]
            answered[body["hookInstance"]] = (service, response.json()["cards"])

        incomplete = marked_body("patient-view")  # a key left out and no FHIR server to fetch it from: 412
        del incomplete["prefetch"]["estradiol"]
        assert server.post(f"/cds-services/{VIEW}", incomplete).status_code == 412
        replayed = make_token(server.base + f"/cds-services/{VIEW}")
        secrets.extend(replayed.split("."))
        refused = marked_body("patient-view")
        assert server.post(f"/cds-services/{VIEW}", refused, replayed).status_code == 200
        again = marked_body("patient-view")
        assert server.post(f"/cds-services/{VIEW}", again, replayed).status_code == 401

        first, (first_service, cards) = next(iter(answered.items()))
        why = next(link["url"] for link in cards[0]["links"] if link["label"] == "Why this card?")
        secrets.append(why.rsplit(".", 1)[1])  # the link's signature: it opens the page without a login
        assert requests.get(why, timeout=60).status_code == 200
        feedback = {"feedback": [{"card": cards[0]["uuid"], "outcome": "overridden",
                                  "overrideReason": {"userComment": f"not now {RESOURCE_MARKER} {PID}"},
                                  "outcomeTimestamp": "2026-11-22T12:00:00Z"}]}
        assert server.post(f"/cds-services/{first_service}/feedback", feedback).status_code == 200

        # each answered call: its closing line, with the key of the record the auditor can open
        for hook_instance, (service, _) in answered.items():
            line = wait_for_line(server, lambda e, h=hook_instance: e.get("hookInstance") == h
                                 and "durationMs" in e)
            assert line["service"] == service and line["status"] == 200 and line["level"] == "INFO"
            assert uuid.UUID(line["auditRecord"]) and line["durationMs"] >= 0
            assert line["logger"] and re.match(r"\d{4}-\d\d-\d\dT", line["timestamp"])
            assert hook_instance in line["message"] and line["auditRecord"] in line["message"]
            stored = audit_record(tmp_path, line["auditRecord"])
            assert stored["hookInstance"] == hook_instance and stored["service"] == service
        line = wait_for_line(server, lambda e: e.get("hookInstance") == incomplete["hookInstance"]
                             and "durationMs" in e)
        assert line["status"] == 412 and line["level"] == "WARNING"
        assert audit_record(tmp_path, line["auditRecord"])["outcome"] == "412"
        # the replay, refused before its body is read: the refusal and the closing line name the service,
        # and no record (nor a hookInstance: an unauthenticated body is never read)
        wait_for_line(server, lambda e: e.get("service") == VIEW and e.get("status") == 401
                      and e.get("auditRecord") is None and e.get("hookInstance") is None)
        wait_for_line(server, lambda e: e.get("service") == VIEW and e["message"].startswith("refused POST")
                      and e.get("level") == "WARNING")
        # feedback: the hook call and the record that issued the card
        line = wait_for_line(server, lambda e: e["message"].startswith("feedback "))
        assert line["status"] == 200 and line["hookInstance"] == first and line["service"] == first_service
        assert line["auditRecord"] == wait_for_line(server, lambda e: e.get("hookInstance") == first
                                                    and "durationMs" in e)["auditRecord"]
    finally:
        server.stop()

    lines = server.lines()
    assert len(lines) > 10
    for line in lines:  # every line, the start-up and access lines included
        entry = json.loads(line)
        assert isinstance(entry, dict) and {"timestamp", "level", "logger", "message"} <= set(entry), line
        for secret in secrets:
            assert secret not in line, f"{secret!r} logged: {line}"
    # the lines logged while a call was handled carry its fields
    during = [json.loads(line) for line in lines if json.loads(line).get("hookInstance") == first]
    assert len([e for e in during if e["message"].startswith("hook call")]) == 1  # one line, one handler


def audit_record(tmp_path: Path, key: str) -> dict[str, Any]:
    """The record under ``key``, read as the auditor's API does."""
    from sqlalchemy import create_engine

    from cds.review import queries

    engine = create_engine(f"sqlite:///{tmp_path}/audit.sqlite3")
    try:
        found = queries.get_record(engine, key)
    finally:
        engine.dispose()
    assert found is not None, f"no audit record {key}"
    return found["record"]


@pytest.fixture
def json_log(auth_config):
    """An app logging JSON, with its log lines caught in a buffer (the handler removed afterwards)."""
    import io
    import logging

    from support import NOW

    from cds import create_app
    from cds.web.logs import HANDLER_NAME

    root = logging.getLogger()
    level = root.level
    app = create_app({**auth_config, "LOG_FORMAT": "json", "NOW": NOW})
    handler = next(h for h in root.handlers if h.get_name() == HANDLER_NAME)
    buffer = io.StringIO()
    handler.setStream(buffer)
    try:
        yield app, buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


FHIR_ID = st.from_regex(r"[A-Za-z0-9\-.]{6,40}", fullmatch=True)
COMMENT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=6, max_size=80)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pid=FHIR_ID, comment=COMMENT,
       instance=st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=60).map(lambda t: "hi-" + t)))
def test_no_patient_id_comment_or_non_uuid_instance_reaches_a_line(json_log, pid, comment, instance):
    app, buffer = json_log
    pid, comment = "zq" + pid, "cm-" + comment
    client = app.test_client()
    buffer.seek(0)
    buffer.truncate()
    body = marked_body("patient-view")
    body = json.loads(json.dumps(body).replace(PID, pid))
    body["hookInstance"] = instance
    url = "http://localhost/cds-services/" + VIEW
    answer = client.post(url, json=body, headers={"Authorization": f"Bearer {make_token(url)}"})
    is_uuid = re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", instance) is not None
    assert answer.status_code == (200 if is_uuid else 400)
    if is_uuid:
        card = answer.get_json()["cards"][0]["uuid"]
        feedback = {"feedback": [{"card": card, "outcome": "overridden",
                                  "outcomeTimestamp": "2026-11-22T12:00:00Z",
                                  "overrideReason": {"userComment": comment}}]}
        url += "/feedback"
        assert client.post(url, json=feedback,
                           headers={"Authorization": f"Bearer {make_token(url)}"}).status_code == 200
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    closing = [e for e in lines if "durationMs" in e]
    assert len(closing) == (2 if is_uuid else 1)
    assert closing[0]["hookInstance"] == (instance if is_uuid else None)
    text = buffer.getvalue()
    for secret in (pid, RESOURCE_MARKER, comment, USER.split("/")[1]) + (() if is_uuid else (instance,)):
        assert json.dumps(secret)[1:-1] not in text and secret not in text
