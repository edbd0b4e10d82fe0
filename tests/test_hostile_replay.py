"""Findings 12 and 13: replay protection while the shared store (the database) cannot be reached.

By default the service fails closed, as docs/security.md says: two app instances sharing one unreachable
PostgreSQL answer 503, never 200 to the same token twice. ``REPLAY_FALLBACK=host`` keeps calls going with a
same-host store, which is never on the audit spool's disk: a spool that cannot be written does not stop the
calls, and the service refuses to start with the fallback on the spool's disk.
"""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from support import PG_URL, TcpProxy, make_token

from cds import create_app
from cds.db import engine_for
from cds.errors import ConfigurationError

DISCOVERY = "http://localhost/cds-services"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unreachable_postgres() -> str:
    """The test PostgreSQL's URL on a port where nothing listens (the database stopped)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = make_url(PG_URL).set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def ram_folder():
    folder = Path("/dev/shm") / f"cds-test-jti-{uuid.uuid4().hex}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def two_apps(auth_config, tmp_path, **config):
    return [create_app({**auth_config, "DATABASE_URL": unreachable_postgres(),
                        "AUDIT_SPOOL_DIR": str(tmp_path / f"spool-{n}"), **config}).test_client()
            for n in (1, 2)]


@pytest.mark.postgres
def test_two_instances_on_a_reachable_postgres_refuse_a_replay(auth_config, pg_base_url):
    first, second = (create_app({**auth_config, "DATABASE_URL": pg_base_url}).test_client() for _ in (1, 2))
    token = make_token(DISCOVERY)
    assert first.get("/cds-services", headers=bearer(token)).status_code == 200
    assert second.get("/cds-services", headers=bearer(token)).status_code == 401


@pytest.mark.postgres
def test_postgres_stopped_under_two_instances_fails_closed(auth_config, pg_base_url, tmp_path):
    url = make_url(PG_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        first, second = (create_app({**auth_config, "DATABASE_URL": proxy.url_for(pg_base_url),
                                     "AUDIT": False, "AUDIT_SPOOL_DIR": str(tmp_path / f"spool-{n}")}
                                    ).test_client()
                         for n in (1, 2))
        before = make_token(DISCOVERY)
        assert first.get("/cds-services", headers=bearer(before)).status_code == 200
        assert second.get("/cds-services", headers=bearer(before)).status_code == 401
        proxy.stop()  # the database is gone for both
        token = make_token(DISCOVERY)
        answers = [c.get("/cds-services", headers=bearer(token)).status_code for c in (first, second)]
        assert answers == [503, 503]
    finally:
        proxy.stop()
        engine_for(proxy.url_for(pg_base_url)).dispose()


def test_unreachable_shared_store_fails_closed_on_every_instance(auth_config, tmp_path):
    first, second = two_apps(auth_config, tmp_path)
    token = make_token(DISCOVERY)
    for client in (first, second, first):
        response = client.get("/cds-services", headers=bearer(token))
        assert response.status_code == 503
        issue = response.get_json()["issue"][0]
        assert issue["code"] == "transient" and "replay" in issue["diagnostics"]


def test_host_fallback_refuses_replays_across_instances_of_one_host(auth_config, tmp_path, ram_folder):
    first, second = two_apps(auth_config, tmp_path, REPLAY_FALLBACK="host",
                             REPLAY_FALLBACK_DIR=str(ram_folder))
    token = make_token(DISCOVERY)
    assert first.get("/cds-services", headers=bearer(token)).status_code == 200
    assert second.get("/cds-services", headers=bearer(token)).status_code == 401
    assert len(list(ram_folder.iterdir())) == 1


def test_a_spool_that_cannot_be_written_does_not_stop_the_calls(auth_config, tmp_path, ram_folder):
    from builders import hook_body, med, patient
    from support import AuthedClient

    app = create_app({**auth_config, "DATABASE_URL": unreachable_postgres(),
                      "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "AUDIT_PATIENT_KEY_SECRET": "s" * 32,
                      "REPLAY_FALLBACK": "host", "REPLAY_FALLBACK_DIR": str(ram_folder)})
    try:
        shutil.rmtree(tmp_path / "spool", ignore_errors=True)
        (tmp_path / "spool").write_text("the spool's disk is full: nothing can be written here")
        app.test_client_class = AuthedClient
        response = app.test_client().post("/cds-services/bone-health-patient-view",
                                          json=hook_body("patient-view", record=[patient(), med()]))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["cards"]
    finally:
        app.extensions["cds.audit"].close()


def test_fallback_on_the_spools_disk_is_refused_at_start(auth_config, tmp_path):
    with pytest.raises(ConfigurationError, match="CDS_REPLAY_FALLBACK_DIR.*same disk as the audit spool"):
        create_app({**auth_config, "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "REPLAY_FALLBACK": "host",
                    "REPLAY_FALLBACK_DIR": str(tmp_path / "jti")})
    with pytest.raises(ConfigurationError, match="CDS_REPLAY_FALLBACK"):
        create_app({**auth_config, "REPLAY_FALLBACK": "sometimes"})
