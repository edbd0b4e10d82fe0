"""The clinician's "Why this card?" link in a real browser (Debian's chromium driven by Playwright) against
the real service on a local port, with the request shapes the official CDS Hooks sandbox sends: the link
opens with no login and draws the chart; it opens its own card only; it stops working after its lifetime;
the suggestions carry valid R4 whatever the draft looked like."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import requests
from audit_support import SECRET
from clinician_support import ESTRADIOL, PATIENT, sandbox_request, sloppy_draft
from markupsafe import escape
from support import make_token, serve_at
from werkzeug.serving import make_server

from cds.fhir.parse import outgoing_resource
from cds.ledger.record import patient_key

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SERVICE = "bone-health-order-select"
DEADLINE = 120.0




@pytest.fixture
def serve(make_app, tmp_path):
    servers = []

    def start(**settings):
        app = make_app(f"sqlite:///{tmp_path}/db{len(servers)}/audit.sqlite3", **settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        base = f"http://127.0.0.1:{server.server_port}"
        serve_at(app, base)  # the accepted aud and the card links: this server's own address
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return base

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)
        server.server_close()


def _call(base: str, body: dict) -> list[dict]:
    url = f"{base}/cds-services/{SERVICE}"
    res = requests.post(url, json=body, timeout=60, headers={"Authorization": "Bearer " + make_token(url)})
    assert res.status_code == 200, res.text
    return res.json()["cards"]


def _get(url: str, expect: int) -> requests.Response:
    """GET until it answers ``expect`` (the audit record is written just after the answer), any request error
    retried, up to a generous deadline; the last answer otherwise."""
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url, timeout=30)
            if last.status_code == expect:
                return last
        except requests.RequestException:
            pass
        time.sleep(0.2)
    assert last is not None, f"{url} never answered"
    return last


def _html(text: str) -> str:
    """``text`` as the page's HTML holds it (escaped)."""
    return str(escape(text))


def _why(card: dict) -> str:
    links = [link for link in card.get("links", []) if link["label"] == "Why this card?"]
    assert len(links) == 1 and links[0]["type"] == "absolute"
    assert "/why/" in links[0]["url"] and "/audit/" not in links[0]["url"]
    return links[0]["url"]


def test_the_card_link_opens_for_a_clinician_with_no_login_and_draws_the_chart(browser, serve):
    base = serve()
    cards = _call(base, sandbox_request())
    assert {c["source"]["topic"]["code"] for c in cards} >= {"low-estradiol-with-bone-loss"}
    card = next(c for c in cards if c["source"]["topic"]["code"] == "low-estradiol-with-bone-loss")
    link = _why(card)
    answer = _get(link, 200)
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe" not in csp
    key = patient_key(SECRET.encode(), PATIENT)
    for text in (answer.text, _get(link + "/chart.svg", 200).text):
        assert PATIENT not in text and key[:16] not in text  # no patient identifier, raw or keyed
    # the auditors' page of the same card keeps its own authentication
    assert requests.get(f"{base}/audit/cards/{card['uuid']}", timeout=30).status_code == 401

    context = browser.new_context(viewport={"width": 1100, "height": 900})  # no credentials at all
    page = context.new_page()
    page.goto(link)
    assert page.locator("h1").inner_text() == "Why this card?"
    assert card["summary"] in page.locator("#card").inner_text()
    results = page.locator("#results").inner_text()
    # the estradiol as reported, comparator and all
    assert "<8.0 pg/mL" in results and "<<" not in results and "2026-10-20" in results
    assert "Lumbar spine" in results and "Total hip" in results  # the DXA sites
    assert "DXA T-score" in results and "-1.5" in results and "0.88 g/cm2" in results
    rule = page.locator("#rule").inner_text()
    assert "When" in rule and "Then" in rule and "low-estradiol-with-bone-loss" in rule
    thresholds = page.locator("#thresholds").inner_text()
    assert re.search(r"estradiol_low_pg_ml\s+20 pg/mL", thresholds)  # the value in force
    assert page.locator("#citations li").count() >= 1
    page.locator("#chart").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('#chart').complete", timeout=DEADLINE * 1000)
    assert page.evaluate("document.querySelector('#chart').naturalWidth") > 0  # the SVG loaded and drew
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "clinician-why-this-card.png"), full_page=True)

    page.goto(link + "/chart.svg")
    points = page.locator("svg g#data-point")
    # every estradiol result, and a T-score and a BMD per scan at each of the two sites
    assert points.count() == len(ESTRADIOL) + 2 * 2 * 2
    svg = page.locator("svg").first.inner_html()
    assert "osteopenia below -1" in svg and "osteoporosis at or below -2.5" in svg  # the WHO bands
    assert "low below 20 pg/mL" in svg and "severely low below 10 pg/mL" in svg  # estradiol lines
    page.screenshot(path=str(ARTIFACTS / "clinician-chart.png"))  # (a full-page capture of SVG hangs)

    vitamin_d = next(c for c in cards if c["source"]["topic"]["code"] == "vitamin-d-missing")
    page.goto(_why(vitamin_d))
    assert "rests on no result value" in page.locator("#results").inner_text()
    assert "vitamin_d_interval_days" in page.locator("#thresholds").inner_text()
    page.screenshot(path=str(ARTIFACTS / "clinician-why-missing-result.png"), full_page=True)
    context.close()


def test_a_link_opens_its_own_card_and_nothing_of_another(browser, serve):
    base = serve()
    cards = _call(base, sandbox_request())
    first, second = cards[0], cards[1]
    link = _why(first)
    _get(link, 200)
    card_uuid, expires, signature = link.rsplit("/", 1)[1].split(".")
    tampered = [
        f"{base}/why/{second['uuid']}.{expires}.{signature}",  # another card's uuid, this card's signature
        f"{base}/why/{card_uuid}.{int(expires) + 3600}.{signature}",  # a longer life
        f"{base}/why/{card_uuid}",  # no signature
        f"{base}/why/{card_uuid}.{expires}.{'A' * 43}",
    ]
    context = browser.new_context()
    page = context.new_page()
    for url in tampered:
        for target in (url, url + "/chart.svg"):
            res = requests.get(target, timeout=30)
            assert res.status_code in (403, 404), target
            assert _html(second["summary"]) not in res.text and _html(first["summary"]) not in res.text
            assert "<svg" not in res.text
        page.goto(url)
        assert page.locator("h1").inner_text() == "This link cannot be opened"
        assert "not a valid card link" in page.locator("#refused").inner_text()
    page.screenshot(path=str(ARTIFACTS / "clinician-link-refused.png"), full_page=True)
    mine = requests.get(link, timeout=30).text
    assert _html(first["summary"]) in mine and _html(second["summary"]) not in mine
    context.close()


def test_a_link_stops_working_after_its_lifetime(serve):
    base = serve(WHY_LINK_HOURS=15 / 3600)  # fifteen seconds
    card = _call(base, sandbox_request())[0]
    link = _why(card)
    expires = int(link.rsplit(".", 2)[1])
    answer = _get(link, 200)
    if time.time() < expires - 1:  # answered within the lifetime (a loaded machine may take longer)
        assert answer.status_code == 200 and _html(card["summary"]) in answer.text
    gone = _get(link, 410)
    assert gone.status_code == 410 and time.time() >= expires
    assert "expired" in gone.text and _html(card["summary"]) not in gone.text
    assert _get(link + "/chart.svg", 410).status_code == 410


def test_suggestions_carry_valid_r4_whatever_the_sandbox_draft_looked_like(serve):
    base = serve()
    cards = _call(base, sandbox_request())
    actions = [a for c in cards for s in c.get("suggestions", []) for a in s["actions"]]
    update = next(a for a in actions if a["type"] == "update")
    resource = update["resource"]
    assert resource["category"] == [sloppy_draft()["category"]]  # wrapped in a list, as R4 has it
    assert {} not in resource["medicationCodeableConcept"]["coding"]  # the empty coding dropped
    assert "reasonCode" not in resource  # nothing left of [{"coding": [{}]}]
    assert resource["dosageInstruction"][0]["timing"]["repeat"]["period"] == 2  # the change it suggests
    for action in actions:
        if "resource" in action:
            assert outgoing_resource(action["resource"], where="test") == (action["resource"], None)

    # a draft that cannot be repaired: the update is not offered, and the card says why
    cards = _call(base, sandbox_request(sloppy_draft(authoredOn="the day after tomorrow")))
    card = next(c for c in cards if c["source"]["topic"]["code"] == "low-estradiol-with-bone-loss")
    types = [a["type"] for s in card.get("suggestions", []) for a in s["actions"]]
    assert "update" not in types and "delete" in types
    assert "not offered" in card["detail"] and "authoredOn" in card["detail"]
