"""A hook call's token id stored in the transaction of its audit record (``CDS_REPLAY_WITH_AUDIT``, on).

With the database token-id store, the ``seen_jti`` row of a hook call is written by the group-commit writer in
the same transaction as the call's record: one commit for both, and for concurrent calls together. A replay
is still refused: at once when this process has seen the token, else when the record is stored (another
process or host used it first): then the call answers 401 and no record is written. A call that ends before
its record (a bad body) stores its token on its own before it answers; a database that is down fails closed
(503) or uses the same-host fallback, as the token-id store does on its own.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import jwt
import pytest
from audit_support import SERVICE, hook_body
from sqlalchemy import text
from support import TEST_ISS, make_token

from cds.auth.jti_store import JtiStore, jti_key
from cds.errors import TokenReplayed
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content

URL = f"/cds-services/{SERVICE}"
AUD = f"http://localhost{URL}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def key_of(token: str) -> str:
    return jti_key(TEST_ISS, jwt.decode(token, options={"verify_signature": False})["jti"])


def rows(app, sql: str, **params) -> list:
    with app.extensions["cds.audit"].engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def records(app) -> int:
    return rows(app, "SELECT count(*) FROM audit_record")[0][0]


def stored_keys(app) -> set[str]:
    return {r[0] for r in rows(app, "SELECT jti_key FROM seen_jti")}


def count_own_transactions(store: JtiStore) -> list[str]:
    """Every key the token-id store writes in a transaction of its own (not with a record)."""
    seen: list[str] = []
    real = store._remember_key

    def counted(key, expires_at):
        seen.append(key)
        return real(key, expires_at)

    store._remember_key = counted
    return seen


def test_the_token_id_is_stored_with_the_record_not_on_its_own(app, db_url):
    store = app.extensions["cds.audit"]
    assert store.token_ids is app.extensions["cds.token_ids"]
    own = count_own_transactions(store.token_ids)
    token = make_token(AUD)
    response = app.test_client().post(URL, json=hook_body(), headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["cards"]
    assert stored_keys(app) == {key_of(token)} and records(app) == 1
    assert own == []  # no transaction of its own: the row came with the record


def test_a_replay_to_the_same_process_is_refused_before_any_work(app, db_url):
    token = make_token(AUD)
    client = app.test_client()
    assert client.post(URL, json=hook_body(), headers=bearer(token)).status_code == 200
    again = client.post(URL, json=hook_body(), headers=bearer(token))
    assert again.status_code == 401 and again.headers["WWW-Authenticate"] == "Bearer"
    assert records(app) == 1


def test_a_replay_to_another_process_is_refused_when_its_record_is_stored(make_app, db_url, caplog):
    first, second = make_app(db_url), make_app(db_url)  # two stores and token-id stores: two processes' worth
    token = make_token(AUD)
    assert first.test_client().post(URL, json=hook_body(), headers=bearer(token)).status_code == 200
    with caplog.at_level("WARNING", logger="cds.auth"):
        again = second.test_client().post(URL, json=hook_body(), headers=bearer(token))
    assert again.status_code == 401 and again.get_data() == b""
    assert records(first) == 1  # the refused call left no record
    assert any("replay" in r.getMessage() for r in caplog.records)
    assert token not in caplog.text


def test_instances_racing_on_one_token_let_exactly_one_answer(make_app, db_url):
    apps = [make_app(db_url) for _ in range(4)]
    token = make_token(AUD)
    start = threading.Barrier(len(apps))
    answers: list[int] = []

    def call(app) -> None:
        client = app.test_client()
        start.wait(timeout=60)
        answers.append(client.post(URL, json=hook_body(), headers=bearer(token)).status_code)

    threads = [threading.Thread(target=call, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == [200, 401, 401, 401], answers
    assert records(apps[0]) == 1 and stored_keys(apps[0]) == {key_of(token)}


def test_a_replay_inside_a_batch_costs_its_batch_mates_nothing(make_app, db_url):
    first, second = make_app(db_url), make_app(db_url)
    used = make_token(AUD)
    assert first.test_client().post(URL, json=hook_body(), headers=bearer(used)).status_code == 200
    store = second.extensions["cds.audit"]
    gate = threading.Event()
    real = store.write_batch
    batches: list[int] = []

    def write_batch(entries):  # hold the first batch until every call has queued, so they batch together
        batches.append(len(entries))
        gate.wait(timeout=60)
        return real(entries)

    store.write_batch = write_batch
    tokens = [make_token(AUD) for _ in range(7)] + [used]
    answers: dict[str, int] = {}

    def call(token: str) -> None:
        answers[token] = second.test_client().post(URL, json=hook_body(), headers=bearer(token)).status_code

    threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    deadline = threading.Event()
    for _ in range(3000):  # up to 60 s for every call to be written or waiting
        if sum(batches) + len(store.writer._queue) >= len(tokens):
            break
        deadline.wait(0.02)
    gate.set()
    for t in threads:
        t.join(timeout=120)
    assert answers.pop(used) == 401
    assert set(answers.values()) == {200} and len(answers) == 7
    assert max(batches) > 1, batches
    assert records(first) == 8  # one on the first instance, seven on the second
    assert stored_keys(first) == {key_of(t) for t in tokens}


def test_a_call_that_ends_before_its_record_still_uses_up_its_token(make_app, db_url):
    first, second = make_app(db_url), make_app(db_url)
    bad = make_token(AUD)
    refused = first.test_client().post(URL, data=b"{not json", headers={**bearer(bad),
                                                                        "Content-Type": "application/json"})
    assert refused.status_code == 400
    assert key_of(bad) in stored_keys(first)
    assert second.test_client().post(URL, json=hook_body(), headers=bearer(bad)).status_code == 401
    # and a used token with a bad body is a 401, not the body's error
    good = make_token(AUD)
    assert first.test_client().post(URL, json=hook_body(), headers=bearer(good)).status_code == 200
    again = second.test_client().post(URL, data=b"{not json", headers={**bearer(good),
                                                                       "Content-Type": "application/json"})
    assert again.status_code == 401


def test_a_record_refused_as_data_still_stores_its_token(app, db_url):
    store = app.extensions["cds.audit"]
    call = CallRecord(service=SERVICE, hook="patient-view", hook_instance="hi", patient_id="p",
                      client_iss=None, started=dt.datetime.now(dt.UTC), latency_ms=1.0, outcome="ok",
                      status=200)
    content = build_content(call, store.pack, store.secret)
    content["outcome"] = None  # NOT NULL: refused as data, quarantined
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    jti = str(uuid.uuid4())
    claim = store.token_ids.claim(TEST_ISS, jti, expires)
    store.submit({"kind": "call", "content": content, "claim": claim})
    assert claim.settled
    assert rows(app, "SELECT count(*) FROM audit_quarantine")[0][0] == 1
    assert jti_key(TEST_ISS, jti) in stored_keys(app)
    other = JtiStore(store.engine)  # another process: the database has the key
    with pytest.raises(TokenReplayed):
        other.settle(other.claim(TEST_ISS, jti, expires))


def test_with_the_setting_off_the_token_is_stored_on_its_own(make_app, db_url):
    app = make_app(db_url, REPLAY_WITH_AUDIT=False)
    assert app.extensions["cds.audit"].token_ids is None and "cds.claims" not in app.extensions
    own = count_own_transactions(app.extensions["cds.token_ids"])
    token = make_token(AUD)
    assert app.test_client().post(URL, json=hook_body(), headers=bearer(token)).status_code == 200
    assert own == [key_of(token)] and records(app) == 1


@pytest.mark.postgres
def test_database_down_fails_closed_and_spools_nothing(make_app, pg_url, pg_proxy, tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    app = make_app(url, REPLAY_FALLBACK="none")
    client = app.test_client()
    assert client.post(URL, json=hook_body(), headers=bearer(make_token(AUD))).status_code == 200
    pg_proxy.stop()
    response = client.post(URL, json=hook_body(), headers=bearer(make_token(AUD)))
    assert response.status_code == 503, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "transient" and "replay" in issue["diagnostics"]
    store = app.extensions["cds.audit"]
    assert store.spool.count() == 0 and store.lost == 0


@pytest.mark.postgres
def test_database_down_with_the_host_fallback_answers_and_spools(make_app, pg_url, pg_proxy, tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    first, second = make_app(url), make_app(url)  # REPLAY_FALLBACK=host (audit_support's default)
    assert first.test_client().post(URL, json=hook_body(), headers=bearer(make_token(AUD))).status_code == 200
    pg_proxy.stop()
    token = make_token(AUD)
    response = first.test_client().post(URL, json=hook_body(), headers=bearer(token))
    assert response.status_code == 200 and response.get_json()["cards"]
    assert first.extensions["cds.audit"].spool.count() == 1  # the record waits in the spool
    assert second.test_client().post(URL, json=hook_body(), headers=bearer(token)).status_code == 401
    pg_proxy.start()  # back: the spool drains, the fallback's key goes into the database
    store = first.extensions["cds.audit"]
    assert store.wait_drained(120)
    first.extensions["cds.token_ids"].purge()
    assert key_of(token) in stored_keys(first)
    assert records(first) == 2
