"""Who reaches ``/metrics`` (finding 11 of the second hostile round: it was open to anyone).

With ``CDS_METRICS_TOKEN`` set, ``/metrics`` answers only a request carrying ``Authorization: Bearer
<token>`` — what Prometheus sends with ``authorization: {credentials: ...}`` in a scrape config — and a
bare 401 to anything else; the token is compared in constant time and must be at least 16 characters.
Unset, ``/metrics`` stays open (for a port only the monitoring network reaches) and `cds serve --prod`
says so at start.
"""

from __future__ import annotations

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prod_server import running

from cds import create_app
from cds.errors import ConfigurationError

TOKEN = "scrape-0123456789abcdef"


@pytest.mark.slow
def test_prod_metrics_answer_only_the_scraper_token(tmp_path):
    with running(tmp_path, CDS_METRICS_TOKEN=TOKEN) as prod:
        url = f"{prod.base}/metrics"
        assert requests.get(url, timeout=30).status_code == 401
        wrong = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}x"}, timeout=30)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        assert wrong.text == ""  # nothing of the metrics
        good = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert good.status_code == 200 and "cds_http_requests_total" in good.text
        assert requests.get(f"{prod.base}/health", timeout=30).status_code == 200  # the rest unchanged
        assert "/metrics is open to anyone" not in prod.log_text()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics")
    return create_app({"DATABASE_URL": f"sqlite:///{folder}/a.sqlite3", "METRICS_TOKEN": TOKEN})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    st.builds(lambda scheme, value: f"{scheme} {value}",
              st.sampled_from(["Bearer", "bearer", "Basic", "Token", ""]),
              st.sampled_from([TOKEN[:-1], TOKEN + " ", TOKEN.upper(), "", TOKEN * 2, TOKEN[1:]])),
))
def test_no_authorization_but_the_token_opens_metrics(app, header):
    response = app.test_client().get("/metrics", headers={"Authorization": header})
    opens = header.partition(" ")[0].lower() == "bearer" and header.partition(" ")[2].strip() == TOKEN
    assert response.status_code == (200 if opens else 401), header


def test_the_token_opens_metrics_and_nothing_else_changes(app):
    client = app.test_client()
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("value", ["short", "a token with spaces in it", "0123456789abcde"])
def test_a_weak_metrics_token_is_refused_naming_the_setting(tmp_path, value):
    with pytest.raises(ConfigurationError, match="CDS_METRICS_TOKEN"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"} | {"METRICS_TOKEN": value})
